"""`wanflow console`'s loopback server: the page, SigV4-signed forwarding, and what it refuses to forward."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import botocore.auth
import botocore.credentials
import httpx
import pytest
from botocore.awsrequest import AWSRequest

from wanflow_tools.client.sigv4 import SigV4Auth
from wanflow_tools.console.proxy import ConsoleProxy
from wanflow_tools.console.site import CONTENT_SECURITY_POLICY

CREDENTIALS = botocore.credentials.Credentials("AKIDCONSOLETEST", "console-test-secret", "session-token")
REGION = "eu-central-1"
API_URL = "https://abc123.execute-api.eu-central-1.amazonaws.com"
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=AKIDCONSOLETEST/(?P<date>\d{8})/eu-central-1/execute-api/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)


class RecordingApi:
    """Stands in for the deployed API: keeps each request it gets and answers 202 with a job."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(
            202,
            json={"job_id": "f" * 32, "status": "QUEUED"},
            headers={"Location": f"/v1/jobs/{'f' * 32}", "Set-Cookie": "tracking=1", "X-Internal": "secret"},
        )


@pytest.fixture
def upstream() -> RecordingApi:
    return RecordingApi()


@pytest.fixture
def proxy(upstream: RecordingApi) -> Iterator[ConsoleProxy]:
    with ConsoleProxy(
        API_URL, auth=SigV4Auth(REGION, CREDENTIALS), port=0, transport=httpx.MockTransport(upstream)
    ) as running:
        yield running


def console_headers(**extra: str) -> dict[str, str]:
    return {"X-Wanflow-Console": "1", **extra}


def expected_signature(request: httpx.Request, signed_headers: str) -> str:
    """The SigV4 signature of `request` as botocore computes it, at the request's own X-Amz-Date."""
    headers = {name: request.headers[name] for name in signed_headers.split(";")}
    aws_request = AWSRequest(method=request.method, url=str(request.url), data=request.content, headers=headers)
    aws_request.context["timestamp"] = request.headers["x-amz-date"]
    signer = botocore.auth.SigV4Auth(CREDENTIALS.get_frozen_credentials(), "execute-api", REGION)
    return signer.signature(signer.string_to_sign(aws_request, signer.canonical_request(aws_request)), aws_request)


def test_the_page_and_its_files_are_served_with_a_strict_content_security_policy(proxy: ConsoleProxy) -> None:
    with httpx.Client(base_url=proxy.url) as client:
        index = client.get("/")
        script = client.get("/console.js")
        style = client.head("/console.css")
        missing = client.get("/secrets.txt")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert '<script src="/console.js" defer></script>' in index.text
    assert index.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert index.headers["x-frame-options"] == "DENY"
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "/v1/jobs" in script.text
    assert style.status_code == 200 and style.content == b""
    assert missing.status_code == 404 and missing.json()["code"] == "NotFound"


def test_api_calls_are_forwarded_signed_with_sigv4(proxy: ConsoleProxy, upstream: RecordingApi) -> None:
    body = {"model": "wan2.6-i2v-flash", "input": {"img_url": "s3://bucket/uploads/u-1/a.png"}}
    with httpx.Client(base_url=proxy.url) as client:
        response = client.post(
            "/v1/jobs?dry=1",
            content=json.dumps(body),
            headers=console_headers(
                **{"Content-Type": "application/json", "Idempotency-Key": "form-1", "Cookie": "session=abc"}
            ),
        )
    assert response.status_code == 202
    assert response.json()["job_id"] == "f" * 32
    assert response.headers["location"] == f"/v1/jobs/{'f' * 32}"
    assert "set-cookie" not in response.headers and "x-internal" not in response.headers

    (forwarded,) = upstream.requests
    assert str(forwarded.url) == f"{API_URL}/v1/jobs?dry=1"
    assert json.loads(forwarded.content) == body
    assert forwarded.headers["idempotency-key"] == "form-1"
    # Only what the API reads leaves the machine: no cookie, no console marker.
    assert "cookie" not in forwarded.headers and "x-wanflow-console" not in forwarded.headers
    assert forwarded.headers["x-amz-security-token"] == "session-token"
    signed = AUTHORIZATION.fullmatch(forwarded.headers["authorization"])
    assert signed is not None, forwarded.headers["authorization"]
    assert set(signed["signed"].split(";")) >= {"host", "content-type", "idempotency-key", "x-amz-date"}
    assert signed["signature"] == expected_signature(forwarded, signed["signed"])


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "X-Wanflow-Console"),
        (console_headers(Origin="https://attacker.example"), "other web pages"),
        (console_headers(Host="attacker.example:8001"), "Host header"),
    ],
    ids=["no console header", "another origin", "a rebound host name"],
)
def test_requests_that_are_not_the_console_pages_own_are_refused_unforwarded(
    proxy: ConsoleProxy, upstream: RecordingApi, headers: dict[str, str], reason: str
) -> None:
    with httpx.Client(base_url=proxy.url) as client:
        response = client.post("/v1/jobs", json={"model": "x"}, headers=headers)
    assert response.status_code == 403
    assert reason in response.json()["message"]
    assert upstream.requests == []


def test_an_unreachable_api_is_a_502_that_names_it() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        ConsoleProxy(API_URL, auth=None, port=0, transport=httpx.MockTransport(refuse)) as proxy,
        httpx.Client(base_url=proxy.url) as client,
    ):
        response = client.get("/v1/jobs", headers=console_headers())
    assert response.status_code == 502
    assert response.json()["code"] == "ApiUnreachable"
    assert API_URL in response.json()["message"]


def test_the_wanflow_console_command_serves_until_ctrl_c() -> None:
    wanflow = Path(sys.executable).with_name("wanflow")
    process = subprocess.Popen(
        [str(wanflow), "console", "--api", "http://127.0.0.1:9", "--auth", "none", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        found = re.match(r"wanflow console: (http://127\.0\.0\.1:\d+)/  \(API http://127\.0\.0\.1:9, unsigned;", banner)
        assert found, banner
        page = httpx.get(found.group(1) + "/", timeout=10)
        assert page.status_code == 200 and "wanflow console" in page.text
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


def test_the_wanflow_console_command_refuses_an_api_that_is_not_http() -> None:
    wanflow = Path(sys.executable).with_name("wanflow")
    finished = subprocess.run(
        [str(wanflow), "console", "--api", "ftp://example.com"], capture_output=True, text=True, timeout=30
    )
    assert finished.returncode == 2
    assert "not an http(s) URL: 'ftp://example.com'" in finished.stderr
