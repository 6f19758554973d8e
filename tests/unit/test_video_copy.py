"""wanflow.adapters.video_copy: a video streamed from its URL into S3, verified, and never a partial object.

S3 is moto in-process; the video comes from a loopback HTTP server that can also answer an error status, stop
short of its Content-Length, or send nothing.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from wanflow.adapters import video_copy
from wanflow.adapters.boto import reset_clients
from wanflow.adapters.objects import S3Objects
from wanflow.adapters.video_copy import PART_SIZE, StoredObject, copy_url_to_s3
from wanflow.errors import JobErrorCode, JobFailure, TransientError

pytestmark = pytest.mark.slow  # streams multi-megabyte videos over loopback HTTP into moto S3

BUCKET = "videos"
# Two full parts and a short last one; not a repeating pattern, so a part out of place changes the bytes.
VIDEO = hashlib.shake_256(b"wanflow").digest(2 * PART_SIZE + 123_457)


class _VideoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies: dict[str, bytes] = {}

    def do_GET(self) -> None:
        if self.path.startswith("/status/"):
            self.send_response(int(self.path.rsplit("/", 1)[1]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/short/"):  # announces the whole video, sends part of it, hangs up
            sent = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(len(VIDEO)))
            self.end_headers()
            self.wfile.write(VIDEO[:sent])
            self.wfile.flush()
            self.close_connection = True
            return
        body = self.bodies[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def video_server() -> Iterator[str]:
    _VideoHandler.bodies = {
        "/video.mp4": VIDEO,
        "/two-parts.mp4": VIDEO[: 2 * PART_SIZE],
        "/small.mp4": VIDEO[:1000],
        "/empty.mp4": b"",
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VideoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        reset_clients()
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    reset_clients()


def copy(s3: Any, url: str, key: str = "out/video.mp4", **kwargs: Any) -> StoredObject:
    return copy_url_to_s3(
        s3, url, BUCKET, key, content_type="video/mp4", metadata={"job-id": "job-1", "model": "m"}, **kwargs
    )


def assert_nothing_stored(s3: Any, key: str = "out/video.mp4") -> None:
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == [], "the upload must be aborted"
    with pytest.raises(ClientError) as error:
        s3.head_object(Bucket=BUCKET, Key=key)
    assert error.value.response["Error"]["Code"] == "404"


@pytest.mark.parametrize(
    ("path", "parts"),
    [("/video.mp4", 3), ("/two-parts.mp4", 2), ("/small.mp4", 1)],
    ids=["two-parts-and-a-bit", "exactly-two-parts", "smaller-than-a-part"],
)
def test_the_stored_object_is_the_video_byte_for_byte(s3: Any, video_server: str, path: str, parts: int) -> None:
    body = _VideoHandler.bodies[path]
    stored = copy(s3, video_server + path)
    assert stored == StoredObject(f"s3://{BUCKET}/out/video.mp4", len(body), hashlib.sha256(body).hexdigest())
    got = s3.get_object(Bucket=BUCKET, Key="out/video.mp4")
    assert got["Body"].read() == body
    assert got["ContentType"] == "video/mp4"
    assert got["Metadata"] == {"job-id": "job-1", "model": "m"}
    assert got["ETag"].endswith(f'-{parts}"')  # 8 MiB parts, as before: the multipart ETag depends on them
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_few_buffers_still_copy_every_part_in_order(s3: Any, video_server: str, monkeypatch) -> None:
    monkeypatch.setattr(video_copy, "PARTS_IN_FLIGHT", 1)  # the download waits for every part's upload
    stored = copy(s3, video_server + "/video.mp4")
    assert stored.sha256 == hashlib.sha256(VIDEO).hexdigest()
    assert s3.get_object(Bucket=BUCKET, Key="out/video.mp4")["Body"].read() == VIDEO


@pytest.mark.parametrize("sent", [0, PART_SIZE // 2, PART_SIZE + 10, 2 * PART_SIZE])
def test_a_short_download_aborts_the_upload_and_stores_nothing(s3: Any, video_server: str, sent: int) -> None:
    with pytest.raises(TransientError, match=f"after {sent} bytes"):
        copy(s3, f"{video_server}/short/{sent}")
    assert_nothing_stored(s3)


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_an_expired_url_fails_the_job(s3: Any, video_server: str, status: int) -> None:
    with pytest.raises(JobFailure) as failure:
        copy(s3, f"{video_server}/status/{status}")
    assert failure.value.code == JobErrorCode.VIDEO_URL_EXPIRED
    assert str(status) in failure.value.message
    assert_nothing_stored(s3)


@pytest.mark.parametrize("status", [500, 503, 429, 302])
def test_other_statuses_are_transient(s3: Any, video_server: str, status: int) -> None:
    with pytest.raises(TransientError, match=f"HTTP {status}"):
        copy(s3, f"{video_server}/status/{status}", http=httpx.Client(follow_redirects=False))
    assert_nothing_stored(s3)


def test_an_empty_video_is_transient(s3: Any, video_server: str) -> None:
    with pytest.raises(TransientError, match="empty"):
        copy(s3, video_server + "/empty.mp4")
    assert_nothing_stored(s3)


def test_an_unreachable_url_is_transient(s3: Any) -> None:
    with pytest.raises(TransientError, match="after 0 bytes: ConnectError"):
        copy(s3, "http://127.0.0.1:9/video.mp4")
    assert_nothing_stored(s3)


class _FailingPart:
    """The S3 client, except that one UploadPart fails as S3 would fail it (after botocore's retries)."""

    def __init__(self, s3: Any, failing_part: int) -> None:
        self._s3 = s3
        self._failing_part = failing_part
        self.parts_tried: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        self.parts_tried.append(kwargs["PartNumber"])
        if kwargs["PartNumber"] == self._failing_part:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "UploadPart")
        return self._s3.upload_part(**kwargs)


def test_a_failed_part_aborts_the_upload_and_raises_the_s3_error(s3: Any, video_server: str) -> None:
    failing = _FailingPart(s3, failing_part=2)
    with pytest.raises(ClientError, match="boom"):
        copy(failing, video_server + "/video.mp4")
    assert 2 in failing.parts_tried
    assert_nothing_stored(s3)


def test_the_s3_adapter_copies_with_its_client(s3: Any, video_server: str) -> None:
    stored = S3Objects(s3).copy_url_to_s3(
        video_server + "/small.mp4", BUCKET, "out/small.mp4", content_type="video/mp4", metadata={"job-id": "j"}
    )
    assert stored == StoredObject(f"s3://{BUCKET}/out/small.mp4", 1000, hashlib.sha256(VIDEO[:1000]).hexdigest())
    assert s3.head_object(Bucket=BUCKET, Key="out/small.mp4")["Metadata"] == {"job-id": "j"}


def _chunked(chunks: list[int], error: Exception | None = None) -> httpx.Client:
    """An httpx client whose video arrives in exactly these chunk sizes (then, optionally, fails)."""

    def body() -> Iterator[bytes]:
        offset = 0
        for size in chunks:
            yield VIDEO[offset : offset + size]
            offset += size
        if error is not None:
            raise error

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(sum(chunks))}, content=body())

    return httpx.Client(transport=httpx.MockTransport(answer))


@pytest.mark.parametrize(
    "chunks",
    [
        [1, PART_SIZE - 1, PART_SIZE, 5],  # boundaries hit exactly
        [PART_SIZE * 2 + 7, 11],  # one chunk holding two parts and more
        [PART_SIZE - 3, 6, PART_SIZE - 6, 3, 1],  # parts completed across chunks
    ],
    ids=["exact", "huge-chunk", "straddling"],
)
def test_parts_are_cut_at_8_mib_whatever_the_chunks(s3: Any, chunks: list[int]) -> None:
    body = VIDEO[: sum(chunks)]
    stored = copy(s3, "http://video.test/v.mp4", http=_chunked(chunks))
    assert stored.bytes == len(body)
    assert stored.sha256 == hashlib.sha256(body).hexdigest()
    assert s3.get_object(Bucket=BUCKET, Key="out/video.mp4")["Body"].read() == body
    sizes = [
        s3.head_object(Bucket=BUCKET, Key="out/video.mp4", PartNumber=number)["ContentLength"]
        for number in range(1, -(-len(body) // PART_SIZE) + 1)
    ]
    assert sizes[:-1] == [PART_SIZE] * (len(sizes) - 1)
    assert 0 < sizes[-1] <= PART_SIZE


def test_a_download_that_times_out_midway_aborts_the_upload(s3: Any) -> None:
    client = _chunked([PART_SIZE, PART_SIZE, 100], error=httpx.ReadTimeout("stalled"))
    with pytest.raises(TransientError, match=f"after {2 * PART_SIZE + 100} bytes: ReadTimeout"):
        copy(s3, "http://video.test/v.mp4", http=client)
    assert_nothing_stored(s3)
