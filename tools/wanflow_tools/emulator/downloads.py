"""Video URLs and downloads, the way OSS serves DashScope's results.

A video URL is `http://<host>/results/<task_id>.mp4?Expires=<epoch>&OSSAccessKeyId=emulator&Signature=<hmac>`.
Like an OSS presigned URL it needs no API key, carries its own expiry (task end + url_ttl_seconds) and is
refused once expired. Refusals use OSS's XML error body:

- 403 AccessDenied "Request has expired." after the URL's Expires time;
- 403 SignatureDoesNotMatch when Expires or Signature were changed, 403 AccessDenied when they are missing;
- 404 NoSuchKey when the task does not exist (any more), has not succeeded, or its file is gone.

Single byte ranges (`Range: bytes=a-b`) are honoured, so a client can resume a truncated download.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from wanflow_tools.emulator.config import Clock
from wanflow_tools.emulator.faults import FaultPlan
from wanflow_tools.emulator.protocol import (
    RESULTS_PREFIX,
    FileResponse,
    Outcome,
    Request,
    Response,
    new_request_id,
)
from wanflow_tools.emulator.store import TaskStatus, TaskStore

_OSS_MESSAGES = {
    "AccessDenied": "You have no right to access this object because of bucket acl.",
    "NoSuchKey": "The specified key does not exist.",
    "SignatureDoesNotMatch": "The request signature we calculated does not match the signature you provided.",
}
_STATUS_CODES = {403: "AccessDenied", 404: "NoSuchKey"}


class VideoUrls:
    """Signs and checks video URLs with a secret that lives as long as the emulator."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def url(self, host: str, task_id: str, expires_at: float) -> str:
        expires = int(expires_at)
        return (
            f"http://{host}{RESULTS_PREFIX}/{task_id}.mp4"
            f"?Expires={expires}&OSSAccessKeyId=emulator&Signature={self._signature(task_id, expires)}"
        )

    def signature_matches(self, task_id: str, expires: str, signature: str) -> bool:
        if not expires.isdigit():
            return False
        return hmac.compare_digest(self._signature(task_id, int(expires)), signature)

    def _signature(self, task_id: str, expires: int) -> str:
        digest = hmac.new(self._secret, f"{task_id}\n{expires}".encode(), hashlib.sha256).hexdigest()
        return digest[:40]


class Downloads:
    def __init__(self, store: TaskStore, faults: FaultPlan, urls: VideoUrls, clock: Clock) -> None:
        self.store = store
        self.faults = faults
        self.urls = urls
        self.clock = clock

    def download(self, request: Request, task_id: str) -> Outcome:
        injected = self.faults.take("download", actions=frozenset({"status"}), task_id=task_id)
        if injected is not None:
            status = injected.status or 404
            code = injected.code or _STATUS_CODES.get(status, "InternalError")
            return oss_error(status, code, injected.message, request.host)

        now = self.clock()
        task = self.store.get(task_id, now)
        path = task.render.output_path if task is not None and task.render is not None else None
        if task is None or task.status is not TaskStatus.SUCCEEDED or path is None or not os.path.exists(path):
            return oss_error(404, "NoSuchKey", None, request.host)
        expires, signature = request.query.get("Expires"), request.query.get("Signature")
        if expires is None or signature is None:
            return oss_error(403, "AccessDenied", None, request.host)
        if not self.urls.signature_matches(task_id, expires, signature):
            return oss_error(403, "SignatureDoesNotMatch", None, request.host)
        if now > int(expires):
            return oss_error(403, "AccessDenied", "Request has expired.", request.host, expires=int(expires), now=now)

        shaping = self.faults.take("download", actions=frozenset({"truncate", "slow"}), task_id=task_id)
        return FileResponse(
            path,
            truncate_fraction=shaping.fraction if shaping is not None and shaping.action == "truncate" else None,
            bytes_per_second=shaping.bytes_per_second if shaping is not None and shaping.action == "slow" else None,
        )


def oss_error(
    status: int,
    code: str,
    message: str | None,
    host: str,
    *,
    expires: int | None = None,
    now: float | None = None,
) -> Response:
    fields = [
        ("Code", code),
        ("Message", message or _OSS_MESSAGES.get(code, "Injected failure.")),
        ("RequestId", new_request_id().replace("-", "").upper()[:24]),
        ("HostId", host),
    ]
    if expires is not None and now is not None:
        fields += [("Expires", _iso(expires)), ("ServerTime", _iso(now))]
    body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
    body += "".join(f"  <{name}>{escape(value)}</{name}>\n" for name, value in fields)
    body += "</Error>\n"
    return Response(status, body.encode(), "application/xml")


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
