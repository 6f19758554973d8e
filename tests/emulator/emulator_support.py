"""Helpers for the DashScope emulator tests: a controllable clock, images and audio, request bodies, a loopback
file server, and `wait_until` (polling with a deadline instead of sleeping)."""

from __future__ import annotations

import io
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np

from wanflow_tools.testing import ManualClock as ManualClock
from wanflow_tools.testing import image_bytes as image_bytes
from wanflow_tools.testing import image_data_uri as image_data_uri
from wanflow_tools.testing import wait_until as wait_until

API_KEY = "sk-emulator-test"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ASYNC = {**AUTH, "X-DashScope-Async": "enable"}
CREATE = "/services/aigc/video-generation/video-synthesis"


SMALL_IMAGE = image_data_uri()


def wav_bytes(seconds: float = 3.0, rate: int = 16_000) -> bytes:
    samples = (0.3 * np.sin(2 * np.pi * 330 * np.arange(int(seconds * rate)) / rate) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return buffer.getvalue()


def body(model: str = "wan2.6-i2v-flash", **parameters: Any) -> dict[str, Any]:
    """A small valid create body (2 s of silent 720P by default, the cheapest video to render)."""
    defaults: dict[str, dict[str, Any]] = {
        "wan2.6-i2v-flash": {"resolution": "720P", "duration": 2, "audio": False},
        "wan2.2-i2v-flash": {"resolution": "480P"},
        "wan2.5-i2v-preview": {"resolution": "480P", "duration": 5},
        "wanx2.1-i2v-turbo": {"resolution": "480P", "duration": 3},
    }
    merged = {**defaults.get(model, {}), **parameters}
    return {
        "model": model,
        "input": {"prompt": "a lighthouse at dusk", "img_url": SMALL_IMAGE},
        "parameters": {key: value for key, value in merged.items() if value is not None},
    }


def create_task(http: httpx.Client, payload: dict[str, Any] | None = None) -> str:
    reply = http.post(CREATE, json=payload or body(), headers=ASYNC)
    assert reply.status_code == 200, reply.text
    return reply.json()["output"]["task_id"]


def query(http: httpx.Client, task_id: str) -> dict[str, Any]:
    reply = http.get(f"/tasks/{task_id}", headers=AUTH)
    assert reply.status_code == 200, reply.text
    return reply.json()


def status_of(http: httpx.Client, task_id: str) -> str:
    return query(http, task_id)["output"]["task_status"]


TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")


def wait_for_status(http: httpx.Client, task_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
    """Polls the task until it has one of `statuses`; fails at once if it ends in another terminal status."""

    def reached() -> dict[str, Any] | None:
        answer = query(http, task_id)
        status = answer["output"]["task_status"]
        if status not in statuses and status in TERMINAL:
            raise AssertionError(f"task {task_id} ended {status}, not {statuses}: {answer}")
        return answer if status in statuses else None

    return wait_until(reached, timeout=timeout, interval=0.05, what=f"task {task_id} to reach {statuses}")


class StaticFiles:
    """A loopback HTTP server for fixed files (audio for audio_url, images for img_url).

    A file added with a gate is only served once the gate is opened, which lets a test hold a render at its start.
    """

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str, threading.Event | None]] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                entry = files.get(self.path)
                if entry is None:
                    self.send_error(404)
                    return
                data, content_type, gate = entry
                if gate is not None:
                    gate.wait(30)
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, data: bytes, content_type: str, gate: threading.Event | None = None) -> str:
        self.files[path] = (data, content_type, gate)
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        for _, _, gate in self.files.values():
            if gate is not None:
                gate.set()
        self.server.shutdown()
        self.server.server_close()
