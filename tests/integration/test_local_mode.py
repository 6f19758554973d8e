"""`wanflow local` and `wanflow demo` as a user runs them: real subprocesses on free loopback ports.

The local stack runs the real handlers, the real state machine (poll interval 1 s) and the DashScope emulator.
Each test waits on lines of the process's stdout or on the API's answers, always with a deadline.
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import boto3
import httpx
import pytest
from PIL import Image

from wanflow.capabilities import output_size

pytestmark = pytest.mark.slow

BASH = shutil.which("bash") or "/bin/bash"  # the examples are printed for a POSIX shell
WANFLOW = shutil.which("wanflow", path=str(Path(sys.executable).parent)) or "wanflow"
MODEL, RESOLUTION = "wan2.2-i2v-flash", "480P"  # silent 5 s at 480P: the quickest render
STARTUP_SECONDS = 90
# Given with --webhook-secret, so that deliveries can be verified (a made-up secret: base64 of a fixed phrase).
WEBHOOK_SECRET = "whsec_" + "bG9jYWwtbW9kZS13ZWJob29rLXRlc3Qtc2VjcmV0"
JOB_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Process:
    """A subprocess whose stdout lines are collected by a thread, to be waited for with deadlines."""

    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _cursor: int = 0

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next_line(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        """The next stdout line (after those already returned) that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.lines):
                line = self.lines[self._cursor]
                self._cursor += 1
                if predicate(line):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} on stdout within {timeout} s; output so far:\n" + self.output())
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the process exited ({self.popen.wait()}) before {what}:\n{self.output()}")
            self.lines.append(line)

    def output(self) -> str:
        return "\n".join(self.lines[-80:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=30)


def notifications_in(lines: list[str]) -> list[dict[str, Any]]:
    """The notification records among stdout lines (JSON objects carrying a wanflow.job.v1 message)."""
    records = []
    for line in lines:
        if line.startswith("{"):
            record = json.loads(line)
            if (record.get("message") or {}).get("schema") == "wanflow.job.v1":
                records.append(record)
    return records


def is_notification_for(job_id: str) -> Callable[[str], bool]:
    def check(line: str) -> bool:
        return any(record["message"]["job"]["job_id"] == job_id for record in notifications_in([line]))

    return check


def wait_for_status(api: httpx.Client, job_id: str, status: str, timeout: float = 15.0) -> dict[str, Any]:
    """The job once `GET /v1/jobs/{id}` shows `status`.

    A job is SUCCEEDED only after its notification was published, so the notification may be seen first.
    """
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == status:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {job['status']}, not {status}, after {timeout} s")
        time.sleep(0.1)


def sample_png(width: int = 600, height: int = 800) -> bytes:
    image = Image.new("RGB", (width, height), (40, 90, 160))
    for x in range(0, width, 40):
        image.paste((230, 180, 60), (x, height // 3, x + 20, height // 2))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class RunningLocalMode:
    process: Process
    api_url: str
    aws_url: str
    state_dir: Path
    intake_bucket: str
    output_bucket: str
    banner: list[str]
    stderr_lines: list[str]
    stderr_reader: threading.Thread

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30)


def banner_value(lines: list[str], label: str) -> str:
    """The value of `  label   value` in the endpoint table that `wanflow local` prints."""
    pattern = re.compile(rf"^\s*{re.escape(label)}\s{{2,}}(\S+)")
    for line in lines:
        match = pattern.match(line)
        if match:
            return match.group(1)
    raise AssertionError(f"no {label!r} in the banner:\n" + "\n".join(lines))


def subprocess_environment(**extra: str) -> dict[str, str]:
    environ = {
        name: value for name, value in os.environ.items() if not name.startswith(("DASHSCOPE_", "WANFLOW_", "AWS_"))
    }
    environ.update(PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1", WANFLOW_POLL_INTERVAL_SECONDS="1", **extra)
    return environ


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLocalMode]:
    state_dir = tmp_path_factory.mktemp("local") / "state"
    api_port, aws_port = free_port(), free_port()
    popen = subprocess.Popen(
        [
            WANFLOW,
            "local",
            "--port",
            str(api_port),
            "--aws-port",
            str(aws_port),
            "--state-dir",
            str(state_dir),
            "--webhook-secret",
            WEBHOOK_SECRET,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_environment(),
        cwd=tmp_path_factory.mktemp("cwd"),
    )
    stderr_lines: list[str] = []
    assert popen.stderr is not None
    stderr_reader = threading.Thread(target=lambda: stderr_lines.extend(popen.stderr), daemon=True)  # type: ignore[arg-type]
    stderr_reader.start()
    process = Process(popen)
    try:
        process.next_line(lambda line: line.strip() == "ready", STARTUP_SECONDS, "'ready'")
        banner = process.lines[:-1]
        yield RunningLocalMode(
            process=process,
            api_url=banner_value(banner, "HTTP API"),
            aws_url=banner_value(banner, "AWS endpoint"),
            state_dir=state_dir,
            intake_bucket=banner_value(banner, "intake bucket"),
            output_bucket=banner_value(banner, "output bucket"),
            banner=banner,
            stderr_lines=stderr_lines,
            stderr_reader=stderr_reader,
        )
    finally:
        process.stop()
        stderr_reader.join(timeout=10)


def test_banner_shows_the_endpoints_and_examples_that_work(local_stack: RunningLocalMode) -> None:
    assert local_stack.api_url.startswith("http://127.0.0.1:")
    assert local_stack.aws_url.startswith("http://127.0.0.1:")
    text = "\n".join(local_stack.banner)
    assert f"s3://{local_stack.intake_bucket}/incoming/" in text
    assert f"--endpoint-url {local_stack.aws_url}" in text
    assert "curl" in text and "/v1/jobs" in text
    assert "wanflow submit" in text
    assert banner_value(local_stack.banner, "topic").startswith("arn:aws:sns:")


def test_a_job_through_the_http_api_succeeds_and_notifies(local_stack: RunningLocalMode) -> None:
    image = "data:image/png;base64," + base64.b64encode(sample_png()).decode()
    body = {
        "model": MODEL,
        "input": {"prompt": "the stripes drift to the right", "img_url": image},
        "parameters": {"resolution": RESOLUTION, "duration": 5},
        "metadata": {"test": "http"},
    }
    with local_stack.api() as api:
        created = api.post("/v1/jobs", json=body)
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        assert created.headers["location"] == f"/v1/jobs/{job_id}"

        line = local_stack.process.next_line(is_notification_for(job_id), JOB_SECONDS, f"notification of {job_id}")
        (record,) = notifications_in([line])
        assert record["message"]["type"] == "job.succeeded"
        assert record["attributes"]["status"] == "SUCCEEDED"
        assert record["message"]["job"]["metadata"] == {"test": "http"}

        job = wait_for_status(api, job_id, "SUCCEEDED")
        assert job["output"]["s3_uri"].startswith(f"s3://{local_stack.output_bucket}/videos/")
        video = httpx.get(job["output"]["url"], timeout=30)
        assert video.status_code == 200
        assert len(video.content) == job["output"]["bytes"]

    in_file = notifications_in((local_stack.state_dir / "notifications.jsonl").read_text().splitlines())
    assert [r["message"]["job"]["job_id"] for r in in_file].count(job_id) == 1


def test_an_image_uploaded_to_the_intake_bucket_becomes_a_job(local_stack: RunningLocalMode) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=local_stack.aws_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    key = f"incoming/test/{uuid.uuid4().hex}.png"
    s3.put_object(
        Bucket=local_stack.intake_bucket,
        Key=key,
        Body=sample_png(),
        ContentType="image/png",
        Metadata={"prompt": "the stripes wave gently", "model": MODEL, "resolution": RESOLUTION},
    )

    def is_this_upload(line: str) -> bool:
        return any(
            record["message"]["job"]["source"] == "s3" and key in json.dumps(record["message"]["job"]["request"])
            for record in notifications_in([line])
        )

    line = local_stack.process.next_line(is_this_upload, JOB_SECONDS, f"notification for s3 upload {key}")
    (record,) = notifications_in([line])
    job_id = record["message"]["job"]["job_id"]
    assert record["message"]["type"] == "job.succeeded", record
    with local_stack.api() as api:
        wait_for_status(api, job_id, "SUCCEEDED")
        listed = api.get("/v1/jobs", params={"status": "SUCCEEDED"}).json()
        assert job_id in [job["job_id"] for job in listed["jobs"]]


def example_command(banner: list[str], marker: str) -> str:
    """The example command line in the banner that contains `marker`."""
    (line,) = [line.strip() for line in banner if marker in line and not line.strip().startswith("#")]
    return line


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("base64")), reason="needs curl and base64")
def test_the_printed_curl_example_works_as_printed(local_stack: RunningLocalMode) -> None:
    command = example_command(local_stack.banner, "| curl ")
    result = subprocess.run([BASH, "-c", command], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    job_id = json.loads(result.stdout)["job_id"]
    line = local_stack.process.next_line(is_notification_for(job_id), JOB_SECONDS, f"notification of {job_id}")
    assert notifications_in([line])[0]["message"]["type"] == "job.succeeded"


@pytest.mark.skipif(not shutil.which("aws"), reason="needs the AWS CLI")
def test_the_printed_aws_cli_example_works_as_printed(local_stack: RunningLocalMode) -> None:
    command = example_command(local_stack.banner, " s3 cp ")
    # As a user without AWS configuration runs it: the command itself carries what it needs.
    environ = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    result = subprocess.run(
        [BASH, "-c", command], capture_output=True, text=True, timeout=120, check=False, env=environ
    )
    assert result.returncode == 0, result.stderr
    key = command.split(f"s3://{local_stack.intake_bucket}/")[1].split()[0]

    def is_this_upload(line: str) -> bool:
        return any(
            record["message"]["job"]["request"]["input"]["img_url"].endswith(key) for record in notifications_in([line])
        )

    line = local_stack.process.next_line(is_this_upload, JOB_SECONDS, "notification for the aws cli upload")
    job = notifications_in([line])[0]["message"]["job"]
    assert job["status"] == "SUCCEEDED"
    assert job["request"]["input"]["prompt"] == "a sailboat drifts slowly across the lake at sunset"


def test_a_webhook_to_wanflow_webhook_listen_is_delivered_and_verified(local_stack: RunningLocalMode) -> None:
    assert f"webhook signing secret: {WEBHOOK_SECRET}" in local_stack.banner
    port = free_port()
    listener = Process(
        subprocess.Popen(
            [WANFLOW, "webhook", "listen", "--port", str(port), "--secret", WEBHOOK_SECRET],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=subprocess_environment(),
        )
    )
    try:
        listener.next_line(lambda line: line.startswith("listening on"), 30, "'listening on'")
        # A request without a valid signature is refused, and not printed.
        assert httpx.post(f"http://127.0.0.1:{port}/", json={"type": "job.succeeded"}).status_code == 401
        image = "data:image/png;base64," + base64.b64encode(sample_png()).decode()
        body = {
            "model": MODEL,
            "input": {"prompt": "the stripes drift to the right", "img_url": image},
            "parameters": {"resolution": RESOLUTION, "duration": 5},
            "webhook": {"url": f"http://127.0.0.1:{port}/"},  # plain http to loopback: local mode only
        }
        with local_stack.api() as api:
            created = api.post("/v1/jobs", json=body)
            assert created.status_code == 202, created.text
            job_id = created.json()["job_id"]
        line = listener.next_line(lambda text: f"job={job_id}" in text, JOB_SECONDS, f"a delivery for {job_id}")
        assert line.startswith(f"msg_{job_id}_job_succeeded job.succeeded job={job_id} status=SUCCEEDED")
    finally:
        listener.popen.terminate()
        listener.popen.wait(timeout=30)


def test_sigint_stops_everything_cleanly(local_stack: RunningLocalMode) -> None:
    popen = local_stack.process.popen
    popen.send_signal(signal.SIGINT)
    try:
        assert popen.wait(timeout=30) == 0
    except subprocess.TimeoutExpired:
        popen.send_signal(signal.SIGABRT)  # faulthandler (enabled for the child) dumps every thread's stack
        popen.wait(timeout=10)
        local_stack.stderr_reader.join(timeout=10)
        pytest.fail("wanflow local did not stop within 30 s:\n" + "".join(local_stack.stderr_lines)[-20000:])
    local_stack.stderr_reader.join(timeout=10)
    stderr = "".join(local_stack.stderr_lines)
    assert "Traceback" not in stderr, stderr[-5000:]
    assert stderr.rstrip().endswith("stopped")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{local_stack.api_url}/v1/jobs", timeout=2)
    with pytest.raises(httpx.TransportError):
        httpx.get(local_stack.aws_url, timeout=2)


def test_demo_saves_a_decodable_video(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    started = time.monotonic()
    result = subprocess.run(
        [WANFLOW, "demo", "--out", str(out_dir)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=subprocess_environment(),
        cwd=tmp_path,
        timeout=240,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    (video_path,) = out_dir.glob("*.mp4")
    assert str(video_path) in result.stdout
    assert '"schema": "wanflow.job.v1"' in result.stdout  # the notification is printed
    with av.open(str(video_path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        size = (stream.codec_context.width, stream.codec_context.height)
    assert frames >= 5 * 30 - 1
    assert size == output_size(750, 1000, RESOLUTION)
    print(f"wanflow demo took {elapsed:.1f} s")
