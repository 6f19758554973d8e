"""The DashScope key never reaches a log, even with `wanflow local --log-level DEBUG`, where botocore logs the
bodies of CreateSecret and GetSecretValue and every library logs its requests."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from wanflow_tools.testing import image_bytes

pytestmark = pytest.mark.slow

WANFLOW = shutil.which("wanflow", path=str(Path(sys.executable).parent)) or "wanflow"
API_KEY = "sk-secrecy0test0key0f00d0000000000"  # the shape of a real key, so patterns alone would catch it too
UNSHAPED_KEY = "horse-battery-staple-correct-9"  # no known shape: only registration can catch this one
DEADLINE_SECONDS = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("api_key", [API_KEY, UNSHAPED_KEY])
def test_the_key_is_in_no_log_line_at_debug(tmp_path: Path, api_key: str) -> None:
    api_port = free_port()
    environ = {name: value for name, value in os.environ.items() if not name.startswith(("DASHSCOPE_", "WANFLOW_"))}
    environ.update(DASHSCOPE_API_KEY=api_key, WANFLOW_POLL_INTERVAL_SECONDS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [
            WANFLOW,
            "local",
            "--log-level",
            "DEBUG",
            "--port",
            str(api_port),
            "--aws-port",
            str(free_port()),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
        cwd=tmp_path,
    )
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr or []), daemon=True)
    reader.start()
    stdout: list[str] = []
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        assert process.stdout is not None
        for line in process.stdout:
            stdout.append(line)
            if line.strip() == "ready":
                break
            assert time.monotonic() < deadline, "wanflow local did not get ready"
        image = "data:image/png;base64," + base64.b64encode(image_bytes(320, 256)).decode()
        body = {
            "model": "wan2.2-i2v-flash",
            "input": {"prompt": "p", "img_url": image},
            "parameters": {"resolution": "480P"},
        }
        created = httpx.post(f"http://127.0.0.1:{api_port}/v1/jobs", json=body, timeout=30)
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        for line in process.stdout:  # the job's notification: every handler and the key's reads have logged
            stdout.append(line)
            if line.startswith("{") and json.loads(line)["message"]["job"]["job_id"] == job_id:
                break
            assert time.monotonic() < deadline, "no notification"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        finally:
            process.kill()
        reader.join(timeout=30)
    log = "".join(stderr)
    assert "GetSecretValue" in log and "<redacted>" in log  # botocore did log the secret's calls, redacted
    assert api_key not in log
    assert api_key not in "".join(stdout)
