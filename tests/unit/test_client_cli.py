"""The client CLI (`wanflow submit/status/wait/list/cancel/download`, `wanflow batch ...`) against a fake wanflow API.

The fake API is an `httpx.MockTransport`; time is a fake clock that advances when the waiter sleeps, so waiting
tests run instantly and deterministically.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from wanflow_tools.client import ClientContext, register
from wanflow_tools.client.progress import Clock

API = "http://127.0.0.1:8000"
UPLOAD_URL = "http://127.0.0.1:5000/intake-bucket"
VIDEO_URL = "http://127.0.0.1:5000/output-bucket/videos/job-1.mp4?X-Amz-Signature=abc"
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
CREATED = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def job(status: str = "PENDING", job_id: str = "job-1", **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "job_id": job_id,
        "status": status,
        "source": "api",
        "model": "wan2.2-i2v-flash",
        "request": {"input": {"prompt": "a cat"}, "parameters": {"resolution": "480P", "duration": 5}},
        "provider": {"region": "ap-southeast-1", "task_id": "task-1", "task_status": status},
        "metadata": {},
        "created_at": CREATED.isoformat().replace("+00:00", "Z"),
        "updated_at": CREATED.isoformat().replace("+00:00", "Z"),
    }
    if status == "SUCCEEDED":
        record["output"] = {
            "s3_uri": "s3://output-bucket/videos/job-1.mp4",
            "url": VIDEO_URL,
            "bytes": len(VIDEO),
            "sha256": hashlib.sha256(VIDEO).hexdigest(),
            "content_type": "video/mp4",
        }
    if status in ("SUCCEEDED", "FAILED", "CANCELED"):
        record["completed_at"] = (CREATED + timedelta(seconds=42)).isoformat().replace("+00:00", "Z")
    record.update(extra)
    return record


def queued(position: int, eta_seconds: int, **extra: Any) -> dict[str, Any]:
    """A QUEUED job: no DashScope task yet, its place in the queue in `queue`."""
    return job(
        "QUEUED",
        provider={},
        queue={"position": position, "ahead": position - 1, "eta_seconds": eta_seconds},
        queued_at=CREATED.isoformat().replace("+00:00", "Z"),
        **extra,
    )


def error_reply(status: int, code: str, message: str, **extra: Any) -> httpx.Response:
    body = {"code": code, "message": message, "errors": extra.pop("errors", []), "request_id": "req-1"}
    return httpx.Response(status, json=body, headers=extra.pop("headers", {}))


@dataclass
class FakeApi:
    """Routes requests to per-route replies and records every request it saw."""

    routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def on(self, method: str, path: str, reply: Callable[[httpx.Request], httpx.Response]) -> None:
        self.routes[(method, path)] = reply

    def reply_json(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.on(method, path, lambda _request: httpx.Response(status, json=body))

    def sequence(self, method: str, path: str, replies: list[httpx.Response]) -> None:
        """Replies in order; the last one repeats."""
        remaining = list(replies)
        self.on(method, path, lambda _request: remaining.pop(0) if len(remaining) > 1 else remaining[0])

    def handler(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return error_reply(404, "NotFound", f"no route {request.method} {request.url.path}")
        return route(request)

    def seen(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def summary(self, label: str) -> list[str]:
        """The values of `label` in a job summary on stdout ("status    SUCCEEDED" -> ["SUCCEEDED"])."""
        return [line.split(None, 1)[1] for line in self.stdout.splitlines() if line.split(None, 1)[0] == label]


class FakeTime:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.seconds += seconds

    def clock(self) -> Clock:
        return Clock(
            monotonic=lambda: self.seconds, sleep=self.sleep, now=lambda: CREATED + timedelta(seconds=self.seconds)
        )


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def cli(api: FakeApi, fake_time: FakeTime) -> Callable[..., Result]:
    def run(
        *argv: str,
        tty: bool = False,
        environ: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> Result:
        stdout, stderr = io.StringIO(), io.StringIO()
        context = ClientContext(
            stdout=stdout,
            stderr=stderr,
            transport=transport or httpx.MockTransport(api.handler),
            clock=fake_time.clock(),
            tty=tty,
            environ=environ or {},
        )
        parser = argparse.ArgumentParser(prog="wanflow")
        register(parser.add_subparsers(dest="command", required=True), lambda: context)
        args = parser.parse_args(list(argv))
        code = args.func(args)
        return Result(code, stdout.getvalue(), stderr.getvalue())

    return run


# ------------------------------------------------------------------------------------------------ submit


def test_submit_sends_exactly_the_given_options(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json("POST", "/v1/jobs", job(), status=202)
    result = cli(
        "submit",
        "https://example.com/cat.png",
        "--prompt",
        "a cat jumps",
        "--negative-prompt",
        "blur",
        "--model",
        "wan2.6-i2v-flash",
        "--resolution",
        "720p",
        "--duration",
        "5",
        "--seed",
        "42",
        "--no-audio",
        "--shot-type",
        "multi",
        "--watermark",
        "--no-prompt-extend",
        "--metadata",
        "team=video",
        "--metadata",
        "expr=a=b",
        "--idempotency-key",
        "key-1",
    )
    assert result.code == 0, result.stderr
    (request,) = api.seen("POST", "/v1/jobs")
    assert request.headers["idempotency-key"] == "key-1"
    assert json.loads(request.content) == {
        "model": "wan2.6-i2v-flash",
        "input": {"img_url": "https://example.com/cat.png", "prompt": "a cat jumps", "negative_prompt": "blur"},
        "parameters": {
            "resolution": "720P",
            "duration": 5,
            "seed": 42,
            "shot_type": "multi",
            "audio": False,
            "watermark": True,
            "prompt_extend": False,
        },
        "metadata": {"team": "video", "expr": "a=b"},
    }
    assert "job-1" in result.stdout
    assert "wanflow wait job-1" in result.stderr


def test_submit_sends_only_the_image_when_nothing_else_is_given(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json("POST", "/v1/jobs", job(), status=202)
    assert cli("submit", "s3://intake/incoming/cat.png").code == 0
    (request,) = api.seen("POST", "/v1/jobs")
    assert json.loads(request.content) == {"input": {"img_url": "s3://intake/incoming/cat.png"}}
    assert "idempotency-key" not in request.headers


def test_submit_sends_the_priority_when_given(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json("POST", "/v1/jobs", queued(1, 0, priority="high"), status=202)
    assert cli("submit", "s3://intake/incoming/cat.png", "--priority", "high").code == 0
    (request,) = api.seen("POST", "/v1/jobs")
    assert json.loads(request.content) == {"input": {"img_url": "s3://intake/incoming/cat.png"}, "priority": "high"}


def test_submit_uploads_a_local_file_and_uses_its_s3_uri(
    cli: Callable[..., Result], api: FakeApi, tmp_path: Path
) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(b"\x89PNG fake image bytes")
    api.reply_json(
        "POST",
        "/v1/uploads",
        {
            "url": UPLOAD_URL,
            "fields": {"key": "uploads/abc.png", "policy": "p", "x-amz-signature": "s"},
            "s3_uri": "s3://intake-bucket/uploads/abc.png",
            "expires_in": 900,
            "max_bytes": 1000,
        },
    )
    api.on("POST", "/intake-bucket", lambda _request: httpx.Response(204))
    api.reply_json("POST", "/v1/jobs", job(), status=202)
    result = cli("submit", str(image), "--prompt", "a cat", "--json")
    assert result.code == 0, result.stderr
    (upload_request,) = api.seen("POST", "/v1/uploads")
    assert json.loads(upload_request.content) == {"content_type": "image/png"}
    (form,) = api.seen("POST", "/intake-bucket")
    assert "authorization" not in form.headers
    body = form.content
    assert b'name="key"\r\n\r\nuploads/abc.png' in body
    # S3 ignores any form field after the file, so the file must come last.
    assert body.index(b'name="policy"') < body.index(b'name="file"')
    assert b"\x89PNG fake image bytes" in body
    (create,) = api.seen("POST", "/v1/jobs")
    assert json.loads(create.content)["input"]["img_url"] == "s3://intake-bucket/uploads/abc.png"
    assert json.loads(result.stdout)["job_id"] == "job-1"


def test_submit_refuses_a_file_larger_than_the_upload_limit(
    cli: Callable[..., Result], api: FakeApi, tmp_path: Path
) -> None:
    image = tmp_path / "big.jpg"
    image.write_bytes(b"x" * 2000)
    api.reply_json(
        "POST",
        "/v1/uploads",
        {
            "url": UPLOAD_URL,
            "fields": {"key": "uploads/a.jpg"},
            "s3_uri": "s3://intake-bucket/uploads/a.jpg",
            "max_bytes": 1000,
        },
    )
    result = cli("submit", str(image))
    assert result.code == 2
    assert "limited to 1000 bytes" in result.stderr
    assert not api.seen("POST", "/v1/jobs")


def test_submit_with_an_idempotency_key_sends_a_local_image_inline(
    cli: Callable[..., Result], api: FakeApi, tmp_path: Path
) -> None:
    image = tmp_path / "cat.jpg"
    image.write_bytes(b"\xff\xd8 jpeg bytes")
    api.reply_json("POST", "/v1/jobs", job(), status=202)
    assert cli("submit", str(image), "--idempotency-key", "k").code == 0
    assert not api.seen("POST", "/v1/uploads")
    (create,) = api.seen("POST", "/v1/jobs")
    expected = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8 jpeg bytes").decode()
    assert json.loads(create.content)["input"]["img_url"] == expected


def test_submit_uploads_local_audio(cli: Callable[..., Result], api: FakeApi, tmp_path: Path) -> None:
    audio = tmp_path / "song.mp3"
    audio.write_bytes(b"ID3 mp3 bytes")
    api.reply_json(
        "POST",
        "/v1/uploads",
        {
            "url": UPLOAD_URL,
            "fields": {"key": "uploads/s.mp3"},
            "s3_uri": "s3://intake-bucket/uploads/s.mp3",
            "max_bytes": 10_000,
        },
    )
    api.on("POST", "/intake-bucket", lambda _request: httpx.Response(204))
    api.reply_json("POST", "/v1/jobs", job(), status=202)
    assert cli("submit", "https://example.com/cat.png", "--audio", str(audio)).code == 0
    assert json.loads(api.seen("POST", "/v1/uploads")[0].content) == {"content_type": "audio/mpeg"}
    create = json.loads(api.seen("POST", "/v1/jobs")[0].content)
    assert create["input"]["audio_url"] == "s3://intake-bucket/uploads/s.mp3"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("submit", "/no/such/cat.png"), "neither an https/s3/data URL nor a readable file"),
        (("submit", "https://example.com/cat.png", "--metadata", "novalue"), "expected KEY=VALUE"),
        (("submit", "https://example.com/cat.png", "--api", "ftp://example.com"), "not an http(s) URL"),
    ],
)
def test_submit_usage_errors_exit_2_before_any_request(
    cli: Callable[..., Result], api: FakeApi, argv: tuple[str, ...], message: str
) -> None:
    result = cli(*argv)
    assert result.code == 2
    assert message in result.stderr
    assert not api.requests


@pytest.mark.parametrize(
    "argv",
    [
        ("submit",),
        ("submit", "cat.png", "--duration", "five"),
        ("submit", "cat.png", "--shot-type", "triple"),
        ("submit", "cat.png", "--priority", "urgent"),
        ("list", "--status", "DONE"),
        ("wait", "job-1", "--timeout", "-1"),
        ("status",),
    ],
)
def test_bad_arguments_exit_2(cli: Callable[..., Result], argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(*argv)
    assert exit_info.value.code == 2


# ------------------------------------------------------------------------------------------ errors and codes


def test_validation_errors_show_code_message_and_each_field(cli: Callable[..., Result], api: FakeApi) -> None:
    api.on(
        "POST",
        "/v1/jobs",
        lambda _request: error_reply(
            400,
            "InvalidParameter",
            "Invalid request: parameters.duration, input.prompt.",
            errors=[
                {"field": "parameters.duration", "message": "must be one of 5"},
                {"field": "input.prompt", "message": "at most 800 characters"},
            ],
        ),
    )
    result = cli("submit", "https://example.com/cat.png", "--duration", "7")
    assert result.code == 2
    assert "InvalidParameter: Invalid request: parameters.duration, input.prompt. (HTTP 400)" in result.stderr
    assert "parameters.duration: must be one of 5" in result.stderr
    assert "input.prompt: at most 800 characters" in result.stderr
    assert "req-1" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [
        (400, "InvalidParameter", 2),
        (404, "NotFound", 2),
        (409, "Conflict", 2),
        (413, "PayloadTooLarge", 2),
        (429, "Throttling.RateQuota", 3),
        (500, "InternalError", 3),
        (503, "ServiceUnavailable", 3),
    ],
)
def test_http_errors_map_to_exit_codes(
    cli: Callable[..., Result], api: FakeApi, status: int, code: str, exit_code: int
) -> None:
    api.on("GET", "/v1/jobs/job-1", lambda _request: error_reply(status, code, "nope"))
    result = cli("status", "job-1")
    assert result.code == exit_code
    assert f"error: {code}: nope (HTTP {status})" in result.stderr


def test_throttling_shows_retry_after_and_dashscope_request(cli: Callable[..., Result], api: FakeApi) -> None:
    api.on(
        "POST",
        "/v1/jobs",
        lambda _request: httpx.Response(
            429,
            headers={"retry-after": "7"},
            json={
                "code": "Throttling.RateQuota",
                "message": "Requests rate limit exceeded",
                "errors": [],
                "request_id": "req-9",
                "provider_request_id": "ds-123",
            },
        ),
    )
    result = cli("submit", "https://example.com/cat.png")
    assert result.code == 3
    assert "retry after 7 s" in result.stderr
    assert "ds-123" in result.stderr


def test_api_gateway_rejections_without_the_wanflow_error_shape(cli: Callable[..., Result], api: FakeApi) -> None:
    api.on(
        "GET",
        "/v1/jobs/job-1",
        lambda _request: httpx.Response(
            403, json={"message": "Forbidden"}, headers={"x-amzn-errortype": "ForbiddenException"}
        ),
    )
    result = cli("status", "job-1")
    assert result.code == 2
    assert "ForbiddenException: Forbidden (HTTP 403)" in result.stderr


def test_connection_refused_exits_3(cli: Callable[..., Result]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    result = cli("status", "job-1", transport=httpx.MockTransport(refuse))
    assert result.code == 3
    assert "cannot reach the wanflow API at http://127.0.0.1:8000" in result.stderr
    assert "Traceback" not in result.stderr


def test_request_timeout_exits_4(cli: Callable[..., Result]) -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    result = cli("list", transport=httpx.MockTransport(stall))
    assert result.code == 4
    assert "timed out" in result.stderr


def test_api_url_comes_from_the_environment(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json("GET", "/v1/jobs/job-1", job())
    result = cli("status", "job-1", environ={"WANFLOW_API_URL": "http://127.0.0.2:9999/"})
    assert result.code == 0
    assert str(api.requests[0].url) == "http://127.0.0.2:9999/v1/jobs/job-1"


def test_job_ids_cannot_escape_their_path_segment(cli: Callable[..., Result], api: FakeApi) -> None:
    cli("status", "../uploads")
    assert api.requests[0].url.raw_path == b"/v1/jobs/..%2Fuploads"


# ------------------------------------------------------------------------------------------------ SigV4


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Only these credentials: no profile files, and never the instance metadata service (no network).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.mark.usefixtures("aws_credentials")
def test_https_api_requests_are_sigv4_signed_for_execute_api(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json("POST", "/v1/jobs", job(), status=202)
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com"
    result = cli("submit", "https://example.com/cat.png", "--api", url, "--idempotency-key", "k1")
    assert result.code == 0, result.stderr
    (request,) = api.requests
    authorization = request.headers["authorization"]
    date = request.headers["x-amz-date"]
    assert authorization.startswith(
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{date[:8]}/eu-west-1/execute-api/aws4_request"
    )
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "content-type", "idempotency-key", "x-amz-date", "x-amz-security-token"} <= set(signed)
    assert request.headers["x-amz-security-token"] == "token-1"


@pytest.mark.usefixtures("aws_credentials")
def test_sigv4_region_comes_from_aws_region_for_a_custom_domain(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json("GET", "/v1/jobs", {"jobs": [], "next_cursor": None})
    result = cli("list", "--api", "https://video.example.com", environ={"AWS_REGION": "ap-southeast-1"})
    assert result.code == 0, result.stderr
    assert "/ap-southeast-1/execute-api/aws4_request" in api.requests[0].headers["authorization"]


def test_local_http_api_is_not_signed(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json("GET", "/v1/jobs/job-1", job())
    assert cli("status", "job-1").code == 0
    assert "authorization" not in api.requests[0].headers


def test_https_api_without_credentials_is_a_usage_error(
    cli: Callable[..., Result], api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = cli("status", "job-1", "--api", "https://abc.execute-api.us-east-1.amazonaws.com")
    assert result.code == 2
    assert "no AWS credentials found" in result.stderr
    assert not api.requests


# ------------------------------------------------------------------------------------------------ waiting


def test_wait_prints_plain_lines_per_change_and_exits_0(
    cli: Callable[..., Result], api: FakeApi, fake_time: FakeTime
) -> None:
    api.sequence(
        "GET",
        "/v1/jobs/job-1",
        [
            httpx.Response(200, json=job("PENDING")),
            httpx.Response(200, json=job("PENDING")),
            httpx.Response(200, json=job("RUNNING")),
            httpx.Response(200, json=job("SUCCEEDED")),
        ],
    )
    result = cli("wait", "job-1", "--interval", "3")
    assert result.code == 0
    lines = result.stderr.splitlines()
    assert lines == [
        "[00:00] job job-1 PENDING (DashScope task PENDING)",
        "[00:06] job job-1 RUNNING (DashScope task RUNNING)",
        "[00:42] job job-1 SUCCEEDED (DashScope task SUCCEEDED)",
    ]
    assert "\r" not in result.stderr
    assert fake_time.sleeps == [3.0, 3.0, 3.0]
    assert result.summary("status") == ["SUCCEEDED"]


def test_wait_shows_a_queued_jobs_place_and_a_line_each_time_it_moves_up(
    cli: Callable[..., Result], api: FakeApi
) -> None:
    api.sequence(
        "GET",
        "/v1/jobs/job-1",
        [
            httpx.Response(200, json=queued(3, 240)),
            httpx.Response(200, json=queued(3, 200)),  # re-estimated, same place: no new line
            httpx.Response(200, json=queued(2, 190)),
            httpx.Response(200, json=queued(1, 0)),
            httpx.Response(200, json=job("PENDING")),
            httpx.Response(200, json=job("SUCCEEDED")),
        ],
    )
    result = cli("wait", "job-1", "--interval", "3")
    assert result.code == 0, result.stderr
    assert result.stderr.splitlines() == [
        "[00:00] job job-1 QUEUED (position 3 in queue, 2 ahead, ETA ~04:00)",
        "[00:06] job job-1 QUEUED (position 2 in queue, 1 ahead, ETA ~03:10)",
        "[00:09] job job-1 QUEUED (position 1 in queue, 0 ahead, starting)",
        "[00:12] job job-1 PENDING (DashScope task PENDING)",
        "[00:42] job job-1 SUCCEEDED (DashScope task SUCCEEDED)",
    ]


def test_wait_on_a_terminal_shows_the_queue_in_the_redrawn_line(cli: Callable[..., Result], api: FakeApi) -> None:
    api.sequence(
        "GET", "/v1/jobs/job-1", [httpx.Response(200, json=queued(3, 240)), httpx.Response(200, json=job("SUCCEEDED"))]
    )
    result = cli("wait", "job-1", "--interval", "2", tty=True)
    assert result.code == 0
    redraws = [part for part in result.stderr.split("\r\x1b[2K") if part.startswith(("|", "/", "-", "\\"))]
    assert redraws[0] == "| [00:00] job job-1 QUEUED (position 3 in queue, 2 ahead, ETA ~04:00)"


def test_wait_on_a_terminal_redraws_one_line_with_elapsed_time(cli: Callable[..., Result], api: FakeApi) -> None:
    api.sequence(
        "GET",
        "/v1/jobs/job-1",
        [
            httpx.Response(200, json=job("RUNNING")),
            httpx.Response(200, json=job("SUCCEEDED")),
        ],
    )
    result = cli("wait", "job-1", "--interval", "3", tty=True)
    assert result.code == 0
    redraws = [part for part in result.stderr.split("\r\x1b[2K") if part.startswith(("|", "/", "-", "\\"))]
    # Redrawn every second between the two polls three seconds apart.
    assert [part.split("]")[0][-5:] for part in redraws] == ["00:00", "00:01", "00:02"]
    assert "RUNNING (DashScope task RUNNING)" in redraws[0]
    # The last redrawn line is cleared and replaced by a permanent line with the outcome.
    assert result.stderr.endswith("\r\x1b[2K[00:42] job job-1 SUCCEEDED (DashScope task SUCCEEDED)\n")


@pytest.mark.parametrize("final", ["FAILED", "CANCELED"])
def test_wait_exits_1_when_the_job_does_not_succeed(cli: Callable[..., Result], api: FakeApi, final: str) -> None:
    failed = job(
        final, error={"code": "DataInspectionFailed", "message": "inappropriate content", "provider_request_id": "ds-7"}
    )
    api.reply_json("GET", "/v1/jobs/job-1", failed)
    result = cli("wait", "job-1")
    assert result.code == 1
    assert "DataInspectionFailed: inappropriate content (DashScope request ds-7)" in result.stdout


def test_wait_timeout_exits_4(cli: Callable[..., Result], api: FakeApi, fake_time: FakeTime) -> None:
    api.reply_json("GET", "/v1/jobs/job-1", job("RUNNING"))
    result = cli("wait", "job-1", "--timeout", "10", "--interval", "3")
    assert result.code == 4
    assert "job job-1 is still RUNNING after 10 s" in result.stderr
    assert fake_time.seconds == pytest.approx(10)


def test_wait_rides_out_transient_errors(cli: Callable[..., Result], api: FakeApi, fake_time: FakeTime) -> None:
    api.sequence(
        "GET",
        "/v1/jobs/job-1",
        [
            error_reply(503, "ServiceUnavailable", "busy"),
            error_reply(429, "Throttled", "slow down", headers={"retry-after": "5"}),
            httpx.Response(200, json=job("SUCCEEDED")),
        ],
    )
    result = cli("wait", "job-1", "--interval", "2")
    assert result.code == 0, result.stderr
    assert "ServiceUnavailable: busy (HTTP 503); retrying in 2 s" in result.stderr
    assert fake_time.sleeps == [2.0, 5.0]


def test_wait_gives_up_after_repeated_transient_errors(cli: Callable[..., Result], api: FakeApi) -> None:
    api.on("GET", "/v1/jobs/job-1", lambda _request: error_reply(502, "BadGateway", "down"))
    result = cli("wait", "job-1", "--interval", "1")
    assert result.code == 3
    assert len(api.requests) == 6


def test_wait_on_an_unknown_job_exits_2_at_once(cli: Callable[..., Result], api: FakeApi) -> None:
    api.on("GET", "/v1/jobs/nope", lambda _request: error_reply(404, "NotFound", "job nope does not exist"))
    result = cli("wait", "nope")
    assert result.code == 2
    assert len(api.requests) == 1


@pytest.mark.parametrize(("final", "exit_code"), [("SUCCEEDED", 0), ("FAILED", 1)])
def test_submit_wait_returns_the_outcome(cli: Callable[..., Result], api: FakeApi, final: str, exit_code: int) -> None:
    api.reply_json("POST", "/v1/jobs", job("PENDING"), status=202)
    api.sequence(
        "GET", "/v1/jobs/job-1", [httpx.Response(200, json=job("RUNNING")), httpx.Response(200, json=job(final))]
    )
    result = cli("submit", "https://example.com/cat.png", "--wait", "--json")
    assert result.code == exit_code
    assert json.loads(result.stdout)["status"] == final  # one JSON document: the final job


# --------------------------------------------------------------------------------------- list, cancel, status


def test_list_passes_filters_and_prints_a_table(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json(
        "GET", "/v1/jobs", {"jobs": [job("RUNNING"), job("SUCCEEDED", job_id="job-0")], "next_cursor": "cur-2"}
    )
    result = cli("list", "--status", "RUNNING", "--limit", "2", "--cursor", "cur-1")
    assert result.code == 0
    assert dict(api.requests[0].url.params) == {"status": "RUNNING", "limit": "2", "cursor": "cur-1"}
    header, first, second, more = result.stdout.splitlines()
    assert header.split() == ["JOB", "STATUS", "MODEL", "SOURCE", "CREATED"]
    assert first.split()[:2] == ["job-1", "RUNNING"]
    assert second.split()[:2] == ["job-0", "SUCCEEDED"]
    assert more == "more: wanflow list --cursor cur-2"


def test_list_accepts_the_queued_status(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json("GET", "/v1/jobs", {"jobs": [queued(1, 0)], "next_cursor": None})
    result = cli("list", "--status", "QUEUED")
    assert result.code == 0, result.stderr
    assert dict(api.requests[0].url.params) == {"status": "QUEUED"}
    assert result.stdout.splitlines()[1].split()[:2] == ["job-1", "QUEUED"]


def test_cancel_posts_to_the_job_and_shows_it(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json("POST", "/v1/jobs/job-1/cancel", job("CANCELED"))
    result = cli("cancel", "job-1")
    assert result.code == 0
    assert result.summary("status") == ["CANCELED"]


def test_cancel_too_late_is_a_409(cli: Callable[..., Result], api: FakeApi) -> None:
    api.on(
        "POST",
        "/v1/jobs/job-1/cancel",
        lambda _request: error_reply(
            409, "Conflict", "the DashScope task is RUNNING; only PENDING tasks can be canceled"
        ),
    )
    result = cli("cancel", "job-1")
    assert result.code == 2
    assert "Conflict: the DashScope task is RUNNING" in result.stderr


def test_status_summary_shows_the_important_parts(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json("GET", "/v1/jobs/job-1", job("SUCCEEDED", cost_estimate_usd=0.075, metadata={"team": "a"}))
    result = cli("status", "job-1")
    assert result.code == 0
    assert result.summary("job") == ["job-1"]
    assert result.summary("model") == ["wan2.2-i2v-flash  480P  5 s"]
    assert result.summary("provider") == ["task-1  SUCCEEDED  (ap-southeast-1)"]
    assert result.summary("cost") == ["$0.075 (list-price estimate)"]
    assert result.summary("elapsed") == ["00:42"]
    assert result.summary("output") == [f"s3://output-bucket/videos/job-1.mp4  {len(VIDEO) / 1024:.1f} KB"]
    assert result.summary("metadata") == ["team=a"]


def test_status_of_a_queued_job_shows_its_priority_and_place(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json("GET", "/v1/jobs/job-1", queued(2, 180, priority="high"))
    result = cli("status", "job-1")
    assert result.code == 0
    assert result.summary("status") == ["QUEUED"]
    assert result.summary("priority") == ["high"]
    assert result.summary("queue") == ["position 2 in queue, 1 ahead, ETA ~03:00"]
    assert result.summary("queued") == ["2025-01-01T12:00:00Z"]
    assert result.summary("provider") == []


def test_status_shows_the_queue_times_but_not_a_normal_priority(cli: Callable[..., Result], api: FakeApi) -> None:
    done = job(
        "SUCCEEDED",
        priority="normal",
        queue=None,
        queued_at="2025-01-01T12:00:00Z",
        submitted_at="2025-01-01T12:00:05Z",
        finished_at="2025-01-01T12:00:42Z",
    )
    api.reply_json("GET", "/v1/jobs/job-1", done)
    result = cli("status", "job-1")
    assert result.code == 0
    assert result.summary("priority") == []
    assert result.summary("queue") == []
    assert result.summary("queued") == ["2025-01-01T12:00:00Z"]
    assert result.summary("submitted") == ["2025-01-01T12:00:05Z"]
    assert result.summary("completed") == ["2025-01-01T12:00:42Z"]
    assert result.summary("finished") == []  # the same moment as completed_at: not shown twice


# ------------------------------------------------------------------------------------------------ download


def serve_video(api: FakeApi, content: bytes = VIDEO) -> None:
    api.on("GET", "/output-bucket/videos/job-1.mp4", lambda _request: httpx.Response(200, content=content))


def test_download_saves_the_verified_video(
    cli: Callable[..., Result], api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.reply_json("GET", "/v1/jobs/job-1", job("SUCCEEDED"))
    serve_video(api)
    target = tmp_path / "clip.mp4"
    result = cli("download", "job-1", "-o", str(target))
    assert result.code == 0, result.stderr
    assert target.read_bytes() == VIDEO
    assert result.stdout.strip() == str(target)
    assert "SHA-256 verified" in result.stderr
    video_request = api.seen("GET", "/output-bucket/videos/job-1.mp4")[0]
    assert "authorization" not in video_request.headers  # presigned: the URL is the credential


def test_download_into_a_directory_names_the_file_after_the_job(
    cli: Callable[..., Result], api: FakeApi, tmp_path: Path
) -> None:
    api.reply_json("GET", "/v1/jobs/job-1", job("SUCCEEDED"))
    serve_video(api)
    assert cli("download", "job-1", "-o", f"{tmp_path}/videos/").code == 0
    assert (tmp_path / "videos" / "job-1.mp4").read_bytes() == VIDEO


def test_download_refuses_a_corrupted_video(cli: Callable[..., Result], api: FakeApi, tmp_path: Path) -> None:
    api.reply_json("GET", "/v1/jobs/job-1", job("SUCCEEDED"))
    serve_video(api, content=VIDEO[:-1] + b"!")
    result = cli("download", "job-1", "-o", str(tmp_path / "clip.mp4"))
    assert result.code == 5
    assert "SHA-256 mismatch" in result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial one


def test_download_refetches_the_job_when_the_url_expired(
    cli: Callable[..., Result], api: FakeApi, tmp_path: Path
) -> None:
    fresh_url = VIDEO_URL.replace("abc", "fresh")
    api.sequence(
        "GET",
        "/v1/jobs/job-1",
        [
            httpx.Response(200, json=job("SUCCEEDED")),
            httpx.Response(200, json=job("SUCCEEDED") | {"output": job("SUCCEEDED")["output"] | {"url": fresh_url}}),
        ],
    )
    api.on(
        "GET",
        "/output-bucket/videos/job-1.mp4",
        lambda request: (
            httpx.Response(200, content=VIDEO)
            if "fresh" in str(request.url)
            else httpx.Response(403, text="<Error>Expired</Error>")
        ),
    )
    assert cli("download", "job-1", "-o", str(tmp_path / "clip.mp4")).code == 0
    assert (tmp_path / "clip.mp4").read_bytes() == VIDEO


@pytest.mark.parametrize(("state", "exit_code"), [("RUNNING", 2), ("FAILED", 1)])
def test_download_without_a_video(
    cli: Callable[..., Result], api: FakeApi, tmp_path: Path, state: str, exit_code: int
) -> None:
    api.reply_json("GET", "/v1/jobs/job-1", job(state))
    result = cli("download", "job-1", "-o", str(tmp_path / "clip.mp4"))
    assert result.code == exit_code
    assert state in result.stderr
    assert not (tmp_path / "clip.mp4").exists()


# ------------------------------------------------------------------------------------------------ batches

BATCH_ID = "b" * 32
JOB_IDS = [f"{index:032x}" for index in range(3)]


def batch(status: str = "open", **counts: int) -> dict[str, Any]:
    every = {name: counts.get(name, 0) for name in ("QUEUED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED")}
    return {
        "batch_id": BATCH_ID,
        "status": status,
        "source": "api",
        "created_at": "2025-01-01T12:00:00.000Z",
        "completed_at": None if status == "open" else "2025-01-01T12:01:00.000Z",
        "metadata": {},
        "total": 3,
        "counts": every,
        "cost_estimate_usd": 0.75,
        "rejected": [],
        "jobs": JOB_IDS,
        "next_cursor": None,
    }


@pytest.fixture
def jobs_file(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.jsonl"
    lines = [{"input": {"prompt": f"shot {n}", "img_url": f"https://example.com/{n}.png"}} for n in range(3)]
    path.write_text("\n".join(json.dumps(line) for line in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n")
    return path


def test_batch_submit_sends_one_body_a_line_with_its_options(
    cli: Callable[..., Result], api: FakeApi, jobs_file: Path
) -> None:
    api.reply_json("POST", "/v1/batches", batch(QUEUED=3), status=202)
    result = cli("batch", "submit", str(jobs_file), "--partial", "--idempotency-key", "k-1")
    assert result.code == 0, result.stderr
    (request,) = api.seen("POST", "/v1/batches")
    body = json.loads(request.content)
    assert [item["input"]["prompt"] for item in body["jobs"]] == ["shot 0", "shot 1", "shot 2"]
    assert body["partial"] is True and request.headers["idempotency-key"] == "k-1"
    assert result.summary("batch") == [BATCH_ID] and result.summary("jobs") == ["3 jobs, 3 QUEUED"]
    assert f"wanflow batch status {BATCH_ID}" in result.stderr


def test_batch_submit_without_partial_sends_no_partial(
    cli: Callable[..., Result], api: FakeApi, jobs_file: Path
) -> None:
    api.reply_json("POST", "/v1/batches", batch(QUEUED=3), status=202)
    assert cli("batch", "submit", str(jobs_file)).code == 0
    assert "partial" not in json.loads(api.seen("POST", "/v1/batches")[0].content)


def test_batch_submit_refuses_a_line_that_is_not_json_before_any_request(
    cli: Callable[..., Result], api: FakeApi, tmp_path: Path
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": {}}\n{not json\n')
    result = cli("batch", "submit", str(path))
    assert result.code == 2 and "line 2 is not JSON" in result.stderr and api.requests == []
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert cli("batch", "submit", str(empty)).code == 2
    assert cli("batch", "submit", str(tmp_path / "missing.jsonl")).code == 2


def test_a_refused_batch_shows_each_items_field_errors_and_exits_2(
    cli: Callable[..., Result], api: FakeApi, jobs_file: Path
) -> None:
    errors = [
        {"field": "jobs[1].parameters.duration", "message": "wan2.2-i2v-flash supports durations 5"},
        {"field": "jobs[2].input.img_url", "message": "is required"},
    ]
    api.on(
        "POST", "/v1/batches", lambda _: error_reply(400, "InvalidParameter", "2 of 3 jobs are invalid", errors=errors)
    )
    result = cli("batch", "submit", str(jobs_file), "--wait")
    assert result.code == 2
    assert "jobs[1].parameters.duration" in result.stderr and "jobs[2].input.img_url" in result.stderr


def test_batch_submit_wait_prints_one_plain_line_per_change_and_exits_0_when_all_succeed(
    cli: Callable[..., Result], api: FakeApi, fake_time: FakeTime, jobs_file: Path
) -> None:
    api.reply_json("POST", "/v1/batches", batch(QUEUED=1, PENDING=2), status=202)
    api.sequence(
        "GET",
        f"/v1/batches/{BATCH_ID}",
        [
            httpx.Response(200, json=batch(QUEUED=1, PENDING=2)),
            httpx.Response(200, json=batch(QUEUED=1, PENDING=2)),  # no change: no line
            httpx.Response(200, json=batch(QUEUED=1, RUNNING=1, SUCCEEDED=1)),
            httpx.Response(200, json=batch("completed", SUCCEEDED=3)),
        ],
    )
    result = cli("batch", "submit", str(jobs_file), "--wait", "--interval", "3")
    assert result.code == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"[00:00] batch {BATCH_ID} open: 3 jobs, 2 PENDING, 1 QUEUED",
        f"[00:06] batch {BATCH_ID} open: 3 jobs, 1 SUCCEEDED, 1 RUNNING, 1 QUEUED",
        f"[00:09] batch {BATCH_ID} completed: 3 jobs, 3 SUCCEEDED",
    ]
    assert fake_time.sleeps == [3.0, 3.0, 3.0]
    assert result.summary("status") == ["completed"] and result.summary("job") == JOB_IDS


def test_batch_submit_wait_on_a_terminal_redraws_one_line_in_place(
    cli: Callable[..., Result], api: FakeApi, jobs_file: Path
) -> None:
    api.reply_json("POST", "/v1/batches", batch(QUEUED=3), status=202)
    api.sequence(
        "GET",
        f"/v1/batches/{BATCH_ID}",
        [
            httpx.Response(200, json=batch(QUEUED=1, PENDING=2)),
            httpx.Response(200, json=batch(SUCCEEDED=1, RUNNING=2)),
            httpx.Response(200, json=batch("completed", SUCCEEDED=2, FAILED=1)),
        ],
    )
    result = cli("batch", "submit", str(jobs_file), "--wait", "--interval", "2", tty=True)
    assert result.code == 1  # a job failed
    # One line, redrawn: nothing but the final outcome ends with a newline.
    assert result.stderr.count("\n") == 1
    assert result.stderr.endswith(f"\r\x1b[2K[00:04] batch {BATCH_ID} completed: 3 jobs, 2 SUCCEEDED, 1 FAILED\n")
    redraws = [part for part in result.stderr.split("\r\x1b[2K") if part.startswith(("|", "/", "-", "\\"))]
    assert redraws[0] == f"| [00:00] batch {BATCH_ID} open: 3 jobs, 2 PENDING, 1 QUEUED"
    assert any("1 SUCCEEDED, 2 RUNNING" in part for part in redraws)


def test_batch_submit_wait_timeout_exits_4(cli: Callable[..., Result], api: FakeApi, jobs_file: Path) -> None:
    api.reply_json("POST", "/v1/batches", batch(QUEUED=3), status=202)
    api.reply_json("GET", f"/v1/batches/{BATCH_ID}", batch(QUEUED=3))
    result = cli("batch", "submit", str(jobs_file), "--wait", "--interval", "2", "--timeout", "5")
    assert result.code == 4 and f"batch {BATCH_ID} is still open after 5 s" in result.stderr


def test_batch_status_and_cancel(cli: Callable[..., Result], api: FakeApi) -> None:
    api.reply_json("GET", f"/v1/batches/{BATCH_ID}", batch(SUCCEEDED=1, RUNNING=1, QUEUED=1))
    api.reply_json("POST", f"/v1/batches/{BATCH_ID}/cancel", batch(SUCCEEDED=1, RUNNING=1, CANCELED=1))
    status = cli("batch", "status", BATCH_ID)
    assert status.code == 0 and status.summary("jobs") == ["3 jobs, 1 SUCCEEDED, 1 RUNNING, 1 QUEUED"]
    canceled = cli("batch", "cancel", BATCH_ID, "--json")
    assert canceled.code == 0 and json.loads(canceled.stdout)["counts"]["CANCELED"] == 1
    assert len(api.seen("POST", f"/v1/batches/{BATCH_ID}/cancel")) == 1


def test_batch_status_of_an_unknown_batch_exits_2(cli: Callable[..., Result], api: FakeApi) -> None:
    result = cli("batch", "status", "c" * 32)
    assert result.code == 2 and "NotFound" in result.stderr
