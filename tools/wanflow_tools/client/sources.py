"""Where the image and audio of a job come from: a URL or URI passed through, or a local file uploaded first.

A local file goes to the intake bucket through `POST /v1/uploads` (a presigned POST, size-limited by its
policy), and the job then names it by the returned `s3://` URI, exactly as a user could by hand.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

import httpx

from wanflow_tools.client.api import ApiClient
from wanflow_tools.client.errors import UnavailableError, UsageError, error_from_transport
from wanflow_tools.client.exit_codes import ExitCode

# Values that are already something DashScope or wanflow can read; everything else is a local path.
PASS_THROUGH_PREFIXES = ("https://", "http://", "s3://", "oss://", "data:")

# mimetypes on a minimal system may not know these; DashScope accepts exactly these kinds.
_CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".bmp": "image/bmp",
    ".webp": "image/webp",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
}


def is_local_path(value: str) -> bool:
    return not value.lower().startswith(PASS_THROUGH_PREFIXES)


def content_type_for(path: Path) -> str | None:
    return _CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]


def resolve_source(api: ApiClient, value: str, *, kind: str) -> str:
    """The URL/URI to put in the job for `value` (`kind` is "image" or "audio"), uploading a local file."""
    if not is_local_path(value):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise UsageError(f"{kind} {value!r} is neither an https/s3/data URL nor a readable file")
    content_type = content_type_for(path)
    if content_type is None or not content_type.startswith(f"{kind}/"):
        raise UsageError(f"{kind} {value!r}: cannot tell its {kind} type from the file name")
    return upload_file(api, path, content_type)


def upload_file(api: ApiClient, path: Path, content_type: str) -> str:
    """Upload `path` through a presigned POST from the API; returns its `s3://` URI."""
    upload = api.create_upload(content_type)
    url, fields = upload.get("url"), upload.get("fields")
    if not isinstance(url, str) or not isinstance(fields, dict):
        raise UnavailableError(f"unexpected reply to POST /v1/uploads: {sorted(upload)}")
    size = path.stat().st_size
    max_bytes = upload.get("max_bytes")
    if isinstance(max_bytes, int) and size > max_bytes:
        raise UsageError(f"{path} is {size} bytes; uploads are limited to {max_bytes} bytes")
    with path.open("rb") as file:
        try:
            # S3 requires the file to be the last form field; httpx sends `data` before `files`.
            response = api.plain.post(
                url, data={str(k): str(v) for k, v in fields.items()}, files={"file": (path.name, file, content_type)}
            )
        except httpx.TransportError as error:
            raise error_from_transport(error, f"the upload URL {url}") from error
    if response.is_error:
        # S3 answers in XML; its <Code> and <Message> are the useful part, shown as they are.
        raise UploadRejected(response)
    return s3_uri_of(upload)


def s3_uri_of(upload: dict[str, Any]) -> str:
    """The `s3://` URI of an upload: given by the API, or built from its bucket and key."""
    uri = upload.get("s3_uri")
    if isinstance(uri, str) and uri.startswith("s3://"):
        return uri
    fields = upload.get("fields") or {}
    bucket, key = upload.get("bucket"), upload.get("key") or fields.get("key")
    if isinstance(bucket, str) and isinstance(key, str):
        return f"s3://{bucket}/{key}"
    raise UnavailableError("the reply to POST /v1/uploads names no s3:// URI for the upload")


class UploadRejected(UsageError):
    """S3 refused the presigned POST: too large, expired policy (4xx), or S3 trouble (5xx, worth a retry)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"the upload was rejected (HTTP {response.status_code})")
        self.status = response.status_code
        self.body = response.text[:500]

    @property
    def exit_code(self) -> ExitCode:  # type: ignore[override]
        return ExitCode.UNAVAILABLE if self.status >= 500 else ExitCode.USAGE

    def details(self) -> list[str]:
        return [f"  {line}" for line in self.body.splitlines() if line.strip()]
