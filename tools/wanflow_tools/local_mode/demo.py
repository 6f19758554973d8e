"""`wanflow demo`: one sample image through the whole pipeline, offline, checked end to end.

It starts the emulator and the local stack on free ports (poll interval 1 s), uploads the bundled image through
`POST /v1/uploads` like the client CLI does, submits the job, shows its progress while the real state machine
polls the emulator, downloads the MP4 from the output bucket through the job's presigned `output.url`
(verified against `output.sha256`), decodes it with PyAV, and prints the SNS notification and the file's path.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from wanflow_tools.client.api import ApiClient
from wanflow_tools.client.display import format_duration
from wanflow_tools.client.download import download_job_output
from wanflow_tools.client.errors import ClientError
from wanflow_tools.client.progress import ProgressDisplay, wait_for_job
from wanflow_tools.client.sources import resolve_source
from wanflow_tools.local_mode.banner import EXAMPLE_MODEL, EXAMPLE_RESOLUTION, SAMPLE_IMAGE, SAMPLE_PROMPT
from wanflow_tools.local_mode.runner import LocalMode, LocalModeOptions
from wanflow_tools.local_mode.serve import configure_logging

DEMO_POLL_INTERVAL_SECONDS = 1.0
DEMO_DURATION_SECONDS = 5
JOB_TIMEOUT_SECONDS = 120.0
Say = Callable[[str], None]
NOTIFICATION_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class VideoFacts:
    frames: int
    width: int
    height: int
    fps: float
    seconds: float


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out", help="directory for the MP4 (default %(default)s)")
    parser.add_argument("--image", default=str(SAMPLE_IMAGE), help="first frame (default: the bundled sample)")
    parser.add_argument("--prompt", default=SAMPLE_PROMPT, help="what should happen (default: %(default)r)")
    parser.add_argument("--model", default=EXAMPLE_MODEL, help="default %(default)s (the quickest to render)")
    parser.add_argument("--resolution", default=EXAMPLE_RESOLUTION, help="default %(default)s")
    parser.add_argument("--duration", type=int, default=DEMO_DURATION_SECONDS, help="seconds (default %(default)s)")
    parser.add_argument("--log-level", default="WARNING", help="log level on stderr (default %(default)s)")


def probe_video(path: Path) -> VideoFacts:
    """Decode every frame: a video that does not decode fully is not a video."""
    import av  # developer dependency; imported late so that `wanflow --help` stays quick

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        fps = float(stream.average_rate or 0)
        width, height = stream.codec_context.width, stream.codec_context.height
    return VideoFacts(frames=frames, width=width, height=height, fps=fps, seconds=frames / fps if fps else 0.0)


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt, so that the stack is stopped on the way out either way.

    Installed explicitly: a process started in the background by a shell inherits SIGINT ignored.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def quiet_handler_logs(level: str) -> None:
    """The handlers log each step at INFO (as in CloudWatch); the demo shows its own progress instead.

    Their Powertools logger is created when `wanflow.observability` is first imported, at the level the
    stack's environment gives (INFO); importing it now, after the stack set that environment, lets the demo's
    --log-level apply to it.
    """
    import wanflow.observability

    wanflow.observability.logger.setLevel(level.upper())


def run_demo(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    configure_logging(args.log_level)
    started = time.monotonic()

    def say(text: str) -> None:
        stdout.write(text + "\n")
        stdout.flush()

    def fail(text: str) -> None:
        sys.stderr.write(f"demo failed: {text}\n")

    # The demo is offline by definition: a DASHSCOPE_BASE_URL in the environment is not used.
    environ = {key: value for key, value in os.environ.items() if not key.startswith("DASHSCOPE_")}
    environ["WANFLOW_POLL_INTERVAL_SECONDS"] = str(DEMO_POLL_INTERVAL_SECONDS)
    options = LocalModeOptions.from_environment(
        environ, api_port=0, aws_port=0, state_dir=Path(args.out) / ".wanflow-demo"
    )
    say("wanflow demo: starting the DashScope emulator and the local stack...")
    with interrupt_on_signals():
        try:
            with LocalMode(options) as mode:
                quiet_handler_logs(args.log_level)
                mode.wait_until_ready(60.0)
                say(
                    f"  HTTP API {mode.api_url}, AWS endpoint {mode.stack.aws_endpoint if mode.stack else '?'}, "
                    f"DashScope emulator {mode.dashscope_base_url}  ({time.monotonic() - started:.1f} s)"
                )
                return _run_pipeline(args, mode, say, fail, stdout, started)
        except ClientError as error:
            fail(str(error))
            for line in error.details():
                sys.stderr.write(line + "\n")
            return int(error.exit_code)
        except (OSError, TimeoutError, RuntimeError) as error:
            fail(f"{type(error).__name__}: {error}")
            return 1
        except KeyboardInterrupt:
            # LocalMode's exit has already stopped the stack and the emulator.
            sys.stderr.write("interrupted\n")
            return 130


def _run_pipeline(
    args: argparse.Namespace, mode: LocalMode, say: Say, fail: Say, stdout: TextIO, started: float
) -> int:
    assert mode.stack is not None
    pipeline_started = time.monotonic()
    with ApiClient(mode.api_url) as api:
        say(f"uploading {args.image} through POST /v1/uploads ...")
        img_url = resolve_source(api, args.image, kind="image")
        body = {
            "model": args.model,
            "input": {"prompt": args.prompt, "img_url": img_url},
            "parameters": {"resolution": args.resolution, "duration": args.duration},
            "metadata": {"origin": "wanflow demo"},
        }
        job = api.create_job(body)
        job_id = str(job["job_id"])
        say(
            f"submitted job {job_id}: {args.model} {args.resolution} {args.duration} s, "
            f"estimated ${job.get('cost_estimate_usd')} at list price"
        )
        display = ProgressDisplay(stdout, tty=stdout.isatty())
        job = wait_for_job(api, job_id, display=display, interval=0.5, timeout=JOB_TIMEOUT_SECONDS)
        if job.get("status") != "SUCCEEDED":
            error = job.get("error") or {}
            fail(f"job {job_id} ended {job.get('status')}: {error.get('code')}: {error.get('message')}")
            return 1
        path = download_job_output(api, job, Path(args.out) / f"{job_id}.mp4")
    pipeline_seconds = time.monotonic() - pipeline_started

    facts = probe_video(path)
    expected_frames = args.duration * 30
    if facts.frames < expected_frames - 1:
        fail(f"{path} has {facts.frames} frames, expected about {expected_frames}")
        return 1
    notification = _notification_for(mode, job_id)
    if notification is None:
        fail(f"no notification for job {job_id} within {NOTIFICATION_TIMEOUT_SECONDS:g} s")
        return 1

    say("")
    say("notification (SNS message):")
    say(json.dumps(notification["message"], indent=2))
    say(f"message attributes: {json.dumps(notification.get('attributes') or {})}")
    say("")
    say(f"video: {path}")
    say(
        f"  {facts.width}x{facts.height}, {facts.frames} frames at {facts.fps:g} fps ({facts.seconds:.1f} s), "
        f"{path.stat().st_size} bytes, SHA-256 verified, decoded"
    )
    say(
        f"pipeline {format_duration(pipeline_seconds)} ({pipeline_seconds:.1f} s: upload, submit, poll, finalize, "
        f"download); total {time.monotonic() - started:.1f} s"
    )
    return 0


def _notification_for(mode: LocalMode, job_id: str) -> dict[str, Any] | None:
    """The job's notification; SUCCEEDED means it was published, but the sink may still be receiving it."""
    assert mode.stack is not None
    deadline = time.monotonic() + NOTIFICATION_TIMEOUT_SECONDS
    count = 1
    while True:
        for record in mode.stack.notifications():
            message = record.get("message")
            if isinstance(message, dict) and (message.get("job") or {}).get("job_id") == job_id:
                return record
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            # Wakes as soon as one more notification arrives.
            mode.stack.wait_for_notifications(count, remaining)
        except TimeoutError:
            return None
        count = len(mode.stack.notifications()) + 1
