"""The constant-memory copy of a video from its (signed, short-lived) URL into S3, verified on the way."""

from __future__ import annotations

import functools
import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx

from wanflow.errors import JobErrorCode, JobFailure, TransientError
from wanflow.ports import StoredObject

PART_SIZE = 8 * 1024 * 1024  # S3 multipart part size
PARTS_IN_FLIGHT = 2  # parts uploading while the download goes on; memory is bounded by (this + 1) parts
DOWNLOAD_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=10.0, pool=10.0)
# The video URL is a signed OSS URL: these statuses mean it expired or was purged, which no retry can fix.
_EXPIRED_URL_STATUSES = frozenset({401, 403, 404, 410})


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

    Memory stays at one part whatever the size. A failed or short download aborts the upload, so no partial
    object ever appears; an expired URL raises JobFailure, anything that may pass raises TransientError.
    """
    owns_http = http is None
    http = http or httpx.Client(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type, Metadata=metadata)
    upload_id = upload["UploadId"]
    try:
        stored = _stream_parts(http, url, s3, bucket, key, upload_id)
    except BaseException:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    finally:
        if owns_http:
            http.close()
    return stored


def _stream_parts(http: httpx.Client, url: str, s3: Any, bucket: str, key: str, upload_id: str) -> StoredObject:
    digest = hashlib.sha256()
    buffer = bytearray()
    total = 0
    with _PartUploader(s3, bucket, key, upload_id) as uploader:
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
                for chunk in response.iter_raw(1024 * 1024):
                    digest.update(chunk)
                    buffer += chunk
                    total += len(chunk)
                    if len(buffer) >= PART_SIZE:
                        uploader.submit(bytes(buffer))
                        buffer.clear()
        except httpx.HTTPError as exc:  # timeouts, dropped connections, short bodies
            raise TransientError(f"video download failed after {total} bytes: {type(exc).__name__}") from None
        if expected is not None and int(expected) != total:
            raise TransientError(f"video download was truncated: {total} of {expected} bytes")
        if total == 0:
            raise TransientError("video download was empty")
        if buffer or not uploader.submitted:
            uploader.submit(bytes(buffer))
        parts = uploader.finish()
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    return StoredObject(f"s3://{bucket}/{key}", total, digest.hexdigest())


class _PartUploader:
    """Uploads parts in the background while the download goes on, at most PARTS_IN_FLIGHT at a time.

    Bounded so that memory stays at (PARTS_IN_FLIGHT + 1) parts whatever the video's size.
    """

    def __init__(self, s3: Any, bucket: str, key: str, upload_id: str) -> None:
        self._upload = functools.partial(s3.upload_part, Bucket=bucket, Key=key, UploadId=upload_id)
        self._pool = ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="s3-part")
        self._slots = threading.BoundedSemaphore(PARTS_IN_FLIGHT)
        self._futures: list[Future[dict[str, Any]]] = []

    @property
    def submitted(self) -> int:
        return len(self._futures)

    def submit(self, data: bytes) -> None:
        self._slots.acquire()  # back-pressure: the download waits while all slots are uploading
        number = len(self._futures) + 1
        future = self._pool.submit(self._upload, PartNumber=number, Body=data)
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def finish(self) -> list[dict[str, Any]]:
        return [
            {"PartNumber": number, "ETag": future.result()["ETag"]}
            for number, future in enumerate(self._futures, start=1)
        ]

    def __enter__(self) -> _PartUploader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
