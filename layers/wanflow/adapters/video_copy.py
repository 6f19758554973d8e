"""Copy a video from its (signed, expiring) URL into S3: streamed, verified, and never a partial object.

The download is read into part-sized buffers that are reused. A full buffer goes at the same time to an upload
thread (UploadPart) and to the one hashing thread (SHA-256 of the whole video, in order); both only read it, and
it comes back for the download to refill once both are done. So hashing overlaps the download and the uploads,
each byte is copied once on our side, and memory stays at PARTS_IN_FLIGHT + 1 buffers whatever the video's size.

httpx is imported when a copy starts, not with this module: only the finalizer copies videos.
"""

from __future__ import annotations

import functools
import hashlib
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from wanflow.errors import JobErrorCode, JobFailure, TransientError
from wanflow.ports import StoredObject

if TYPE_CHECKING:
    import httpx

PART_SIZE = 8 * 1024 * 1024  # S3 multipart part size (it shapes the object's ETag: keep it)
PARTS_IN_FLIGHT = 6  # parts uploading while the download fills the next buffer; memory is (this + 1) parts
# The video URL is a signed OSS URL: these statuses mean it expired or was purged, which no retry can fix.
_EXPIRED_URL_STATUSES = frozenset({401, 403, 404, 410})


def download_timeout() -> httpx.Timeout:
    import httpx

    return httpx.Timeout(connect=10.0, read=60.0, write=10.0, pool=10.0)


def copy_url_to_s3(
    s3: Any,
    url: str,
    bucket: str,
    key: str,
    *,
    content_type: str,
    metadata: dict[str, str],
    http: httpx.Client | None = None,
) -> StoredObject:
    """Stream `url` into s3://bucket/key with a multipart upload, verifying length and computing SHA-256.

    `s3` is a boto3 S3 client; at most as many parts upload at once as its connection pool holds. A failed or
    short download, or a failed part, aborts the upload, so no partial object ever appears. An expired URL
    raises JobFailure; a download that may work next time raises TransientError; S3 errors propagate.
    """
    import httpx

    owns_http = http is None
    http = http or httpx.Client(timeout=download_timeout(), follow_redirects=True)
    try:
        # CRC32 per part, as boto3's own transfers do: S3 verifies every part on arrival and keeps their combined
        # checksum, instead of reading the whole object back at completion to checksum it (moto does that too).
        upload = s3.create_multipart_upload(
            Bucket=bucket, Key=key, ContentType=content_type, Metadata=metadata, ChecksumAlgorithm="CRC32"
        )
        upload_id = upload["UploadId"]
        try:
            total, sha256, parts = _stream_parts(http, url, s3, bucket, key, upload_id)
            s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
    finally:
        if owns_http:
            http.close()
    return StoredObject(f"s3://{bucket}/{key}", total, sha256)


def _stream_parts(
    http: httpx.Client, url: str, s3: Any, bucket: str, key: str, upload_id: str
) -> tuple[int, str, list[dict[str, Any]]]:
    import httpx

    total = 0
    with _Pipeline(s3, bucket, key, upload_id) as pipeline:
        try:
            with http.stream("GET", url) as response:
                if response.status_code in _EXPIRED_URL_STATUSES:
                    raise JobFailure(
                        JobErrorCode.VIDEO_URL_EXPIRED,
                        f"the video URL answered HTTP {response.status_code}: it expired or was removed",
                    )
                if response.status_code != 200:
                    raise TransientError(f"video download answered HTTP {response.status_code}")
                expected = response.headers.get("content-length")
                buffer = pipeline.take_buffer()
                view = memoryview(buffer)
                filled = 0
                # Chunks as the connection delivers them (re-chunking them would copy every byte once more).
                for chunk in response.iter_raw():
                    size = len(chunk)
                    total += size
                    if filled + size < PART_SIZE:
                        view[filled : filled + size] = chunk
                        filled += size
                        continue
                    rest = memoryview(chunk)
                    while filled + len(rest) >= PART_SIZE:
                        room = PART_SIZE - filled
                        view[filled:] = rest[:room]
                        rest = rest[room:]
                        view.release()
                        pipeline.submit(buffer)
                        buffer = pipeline.take_buffer()
                        view = memoryview(buffer)
                        filled = 0
                    view[: len(rest)] = rest
                    filled += len(rest)
                view.release()
        except httpx.HTTPError as exc:  # timeouts, dropped connections, short bodies
            raise TransientError(f"video download failed after {total} bytes: {type(exc).__name__}") from None
        if expected is not None and int(expected) != total:
            raise TransientError(f"video download was truncated: {total} of {expected} bytes")
        if total == 0:
            raise TransientError("video download was empty")
        if filled:
            del buffer[filled:]  # the last part: shrunk in place, not copied
            pipeline.submit(buffer)
        parts, sha256 = pipeline.finish()
    return total, sha256, parts


class _Pipeline:
    """Part buffers, the threads that upload them, and the one thread that hashes them in order.

    At most `in_flight` + 1 buffers exist: `take_buffer` waits for one to come back when all are out, and
    raises the first failed part's error instead of letting the download go on for nothing.
    """

    def __init__(self, s3: Any, bucket: str, key: str, upload_id: str) -> None:
        # More threads than pooled connections would open (and discard) a connection per extra part.
        pool_size = getattr(getattr(getattr(s3, "meta", None), "config", None), "max_pool_connections", None)
        in_flight = min(PARTS_IN_FLIGHT, pool_size or PARTS_IN_FLIGHT)
        self._upload = functools.partial(
            s3.upload_part, Bucket=bucket, Key=key, UploadId=upload_id, ChecksumAlgorithm="CRC32"
        )
        self._uploads = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="s3-part")
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._digest = hashlib.sha256()
        self._buffers = threading.Semaphore(in_flight + 1)
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._hashed: Future[None] | None = None

    def take_buffer(self) -> bytearray:
        self._buffers.acquire()  # back-pressure: the download waits while every buffer is out
        if self._failure is not None:
            self._buffers.release()
            raise self._failure
        try:
            return self._free.get_nowait()
        except queue.Empty:
            return bytearray(PART_SIZE)

    def submit(self, buffer: bytearray) -> None:
        uploaded = self._uploads.submit(self._upload, PartNumber=len(self._parts) + 1, Body=buffer)
        hashed = self._hasher.submit(self._digest.update, buffer)
        self._parts.append(uploaded)
        self._hashed = hashed
        users = [uploaded, hashed]

        def done(future: Future[Any]) -> None:
            with self._lock:
                if self._failure is None and not future.cancelled() and future.exception() is not None:
                    self._failure = future.exception()
                users.remove(future)
                if users:
                    return
            if len(buffer) == PART_SIZE:
                self._free.put(buffer)
            self._buffers.release()

        uploaded.add_done_callback(done)
        hashed.add_done_callback(done)

    def finish(self) -> tuple[list[dict[str, Any]], str]:
        parts = [
            {"PartNumber": number, "ETag": part.result()["ETag"], "ChecksumCRC32": part.result()["ChecksumCRC32"]}
            for number, part in enumerate(self._parts, 1)
        ]
        if self._hashed is not None:
            self._hashed.result()
        return parts, self._digest.hexdigest()

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Nothing may still be uploading when the caller aborts or completes the upload.
        self._uploads.shutdown(wait=True, cancel_futures=True)
        self._hasher.shutdown(wait=True, cancel_futures=True)
