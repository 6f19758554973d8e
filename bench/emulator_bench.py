"""DashScope emulator: time to render a 5 s 720P video, and query latency while four videos render at once.

    .venv/bin/python -m bench.emulator_bench

Rendering: `render_video` directly, on a 750x1000 first frame (816x1104 output, 150 frames), silent and with
audio; median of a few runs. Latency: an emulator renders four 5 s 720P videos concurrently (4 render workers)
while one client polls GET /tasks/{id} back to back; only the queries answered while at least one video was still
rendering count. Measured with thread and with process render workers.
"""

from __future__ import annotations

import base64
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

from wanflow.capabilities import output_size
from wanflow_tools.emulator import Emulator, EmulatorConfig
from wanflow_tools.emulator.video_render import RenderJob, render_video

RENDER_RUNS = 3
CONCURRENT_VIDEOS = 4
SAMPLE = Path(__file__).resolve().parent.parent / "tools" / "wanflow_tools" / "assets" / "sample.jpg"


def first_frame_uri() -> str:
    """The demo's sample image when present (a realistic picture to encode), else a drawn 750x1000 frame."""
    if SAMPLE.exists():
        return "data:image/jpeg;base64," + base64.b64encode(SAMPLE.read_bytes()).decode()
    image = Image.new("RGB", (750, 1000), (40, 60, 120))
    draw = ImageDraw.Draw(image)
    for step in range(10):
        draw.ellipse((50 + 40 * step, 80 * step, 250 + 40 * step, 80 * step + 160), fill=(200, 20 * step, 90))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def render_seconds(image_uri: str, *, with_audio: bool) -> dict[str, float]:
    samples = []
    with tempfile.TemporaryDirectory() as folder:
        for run in range(RENDER_RUNS):
            job = RenderJob(
                task_id=f"bench-{run}",
                img_url=image_uri,
                audio_url=None,
                resolution="720P",
                duration_seconds=5,
                with_audio=with_audio,
                watermark=False,
                output_path=os.path.join(folder, f"{run}.mp4"),
                size_rule=output_size,
            )
            started = time.perf_counter()
            result = render_video(job)
            samples.append(time.perf_counter() - started)
    return {
        "median_seconds": round(statistics.median(samples), 3),
        "min_seconds": round(min(samples), 3),
        "size": f"{result.width}x{result.height}",
        "frames": result.frame_count,
        "bytes": result.size_bytes,
    }


def query_latency(image_uri: str, *, render_in_processes: bool) -> dict[str, Any]:
    config = EmulatorConfig(
        pending_seconds=0,
        running_seconds=0,
        rate_limits=False,
        render_workers=CONCURRENT_VIDEOS,
        render_in_processes=render_in_processes,
    )
    body = {
        "model": "wan2.6-i2v-flash",
        "input": {"prompt": "benchmark", "img_url": image_uri},
        "parameters": {"resolution": "720P", "duration": 5, "audio": True},
    }
    headers = {"Authorization": "Bearer sk-bench", "X-DashScope-Async": "enable"}
    latencies: list[float] = []
    with Emulator(config) as emulator, httpx.Client(base_url=emulator.base_url, headers=headers) as client:
        if render_in_processes:  # start every worker process first, so that their start-up is not measured
            warm = [
                client.post("/services/aigc/video-generation/video-synthesis", json=body).json()["output"]["task_id"]
                for _ in range(CONCURRENT_VIDEOS)
            ]
            _wait_succeeded(client, warm)
        started = time.perf_counter()
        task_ids = [
            client.post("/services/aigc/video-generation/video-synthesis", json=body).json()["output"]["task_id"]
            for _ in range(CONCURRENT_VIDEOS)
        ]
        pending = set(task_ids)
        while pending:
            for task_id in list(pending):
                sent = time.perf_counter()
                status = client.get(f"/tasks/{task_id}").json()["output"]["task_status"]
                latencies.append(time.perf_counter() - sent)
                if status == "SUCCEEDED":
                    pending.discard(task_id)
        all_done = time.perf_counter() - started
    percentiles = statistics.quantiles(latencies, n=100)
    return {
        "render_workers": "processes" if render_in_processes else "threads",
        "queries": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p95_ms": round(percentiles[94] * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
        "four_videos_done_seconds": round(all_done, 2),
    }


def _wait_succeeded(client: httpx.Client, task_ids: list[str]) -> None:
    for task_id in task_ids:
        while client.get(f"/tasks/{task_id}").json()["output"]["task_status"] != "SUCCEEDED":
            time.sleep(0.05)


def run() -> dict[str, Any]:
    image_uri = first_frame_uri()
    return {
        "cpus": os.cpu_count(),
        "render_5s_720p_silent": render_seconds(image_uri, with_audio=False),
        "render_5s_720p_with_audio": render_seconds(image_uri, with_audio=True),
        "query_latency_while_4_render_threads": query_latency(image_uri, render_in_processes=False),
        "query_latency_while_4_render_processes": query_latency(image_uri, render_in_processes=True),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
