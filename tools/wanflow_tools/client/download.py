"""Saving a job's video: stream the presigned `output.url` to disk and check it against the job's record.

The file appears at its final path only once its size and SHA-256 match `output.bytes` and `output.sha256`, so a
half-written or corrupted download never looks like a finished one.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import httpx

from wanflow_tools.client.api import ApiClient
from wanflow_tools.client.errors import ClientError, UnavailableError, VerificationError, error_from_transport

_CHUNK_BYTES = 1024 * 1024


class OutputUrlExpired(ClientError):
    """S3 refused the presigned URL (expired or otherwise invalid): fetch the job again for a fresh one."""


def target_path(job_id: str, output: str | None) -> Path:
    """`-o` as given; a directory (existing, or written with a trailing slash) gets `<job_id>.mp4` inside."""
    if output is None:
        return Path(f"{job_id}.mp4")
    path = Path(output).expanduser()
    if path.is_dir() or output.endswith(("/", os.sep)):
        return path / f"{job_id}.mp4"
    return path


def download_job_output(api: ApiClient, job: dict[str, Any], destination: Path) -> Path:
    """Download the video of a SUCCEEDED `job` to `destination`; refetches the job once if its URL expired."""
    try:
        return _download(api, job, destination)
    except OutputUrlExpired:
        fresh = api.get_job(str(job["job_id"]))
        return _download(api, fresh, destination)


def _download(api: ApiClient, job: dict[str, Any], destination: Path) -> Path:
    output = job.get("output") or {}
    url = output.get("url")
    if not isinstance(url, str) or not url:
        raise UnavailableError(f"job {job.get('job_id')} has no output.url to download from")
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    # A hidden sibling, so that the final rename is atomic; "x" mode refuses to reuse an existing name and,
    # unlike mkstemp, leaves the permissions to the umask like any other saved file.
    temp_path = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with temp_path.open("xb") as file:
            try:
                with api.plain.stream("GET", url) as response:
                    if response.status_code in (400, 403):
                        raise OutputUrlExpired(f"the video URL was refused (HTTP {response.status_code})")
                    if response.is_error:
                        raise UnavailableError(f"downloading the video failed: HTTP {response.status_code}")
                    for chunk in response.iter_bytes(_CHUNK_BYTES):
                        file.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            except httpx.TransportError as error:
                raise error_from_transport(error, "the video URL") from error
        _verify(output, size, digest.hexdigest())
        os.replace(temp_path, destination)
    finally:
        temp_path.unlink(missing_ok=True)
    return destination


def _verify(output: dict[str, Any], size: int, sha256: str) -> None:
    expected_size = output.get("bytes")
    if isinstance(expected_size, int) and expected_size != size:
        raise VerificationError(f"downloaded {size} bytes, but the job records {expected_size}; nothing saved")
    expected_sha = output.get("sha256")
    if not expected_sha:
        raise VerificationError("the job records no output.sha256 to verify the download against; nothing saved")
    if str(expected_sha).lower() != sha256:
        raise VerificationError(f"SHA-256 mismatch: got {sha256}, the job records {expected_sha}; nothing saved")
