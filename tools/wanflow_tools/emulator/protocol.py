"""DashScope wire details the emulator reproduces: paths, error codes and messages, time formats.

Messages follow what DashScope answers (docs/dashscope.md, the API reference and the SDK sources). Where the real
text is not documented (the cancel refusal, the FAILED-task messages) the text here is a close, plainly worded
stand-in.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

API_PREFIX = "/api/v1"
CREATE_PATH = f"{API_PREFIX}/services/aigc/video-generation/video-synthesis"
TASKS_PATH = f"{API_PREFIX}/tasks"
RESULTS_PREFIX = "/results"
CONTROL_PREFIX = "/_emulator"

# DashScope's task times carry no zone; they follow the service's clock (China Standard Time, UTC+8).
DEFAULT_UTC_OFFSET_HOURS = 8.0


@dataclass(frozen=True)
class ErrorKind:
    http_status: int
    code: str
    message: str


INVALID_API_KEY = ErrorKind(401, "InvalidApiKey", "Invalid API-key provided.")
MISSING_API_KEY = ErrorKind(401, "InvalidApiKey", "No API-key provided.")
SYNC_NOT_SUPPORTED = ErrorKind(403, "AccessDenied", "current user api does not support synchronous calls")
MODEL_NOT_FOUND = ErrorKind(404, "ModelNotFound", "Model not exist.")
RATE_LIMITED = ErrorKind(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
INTERNAL_ERROR = ErrorKind(
    500, "InternalError", "An internal error has occurred, please try again later or contact service support."
)
URL_ERROR = ErrorKind(400, "InvalidParameter", "url error, please check url!")
CANCEL_REFUSED = ErrorKind(
    400, "UnsupportedOperation", "Failed to cancel the task, please confirm if the task is in PENDING status."
)

# What a FAILED task says for each failure code a fault can choose (any other code gets a generic message).
TASK_FAILURE_MESSAGES: dict[str, str] = {
    "DataInspectionFailed": "Input data may contain inappropriate content.",
    "IPInfringementSuspect": "Input data is suspected of being involved in IP infringement.",
    "InternalError": INTERNAL_ERROR.message,
    "InvalidParameter": "The request parameter is invalid, please check the request.",
    "InvalidURL": "Download the media resource timed out during the data inspection process.",
    "RequestTimeOut": "Request timed out, please try again later.",
}

# Messages for injected HTTP failures, by status.
STATUS_ERRORS: dict[int, ErrorKind] = {
    400: ErrorKind(400, "InvalidParameter", "The request parameter is invalid, please check the request."),
    401: INVALID_API_KEY,
    403: ErrorKind(403, "AccessDenied", "Access denied."),
    404: ErrorKind(404, "NotFound", "The requested resource does not exist."),
    429: RATE_LIMITED,
    500: INTERNAL_ERROR,
    502: ErrorKind(502, "BadGateway", "Bad gateway."),
    503: ErrorKind(503, "ServiceUnavailable", "The service is temporarily unavailable, please try again later."),
    504: ErrorKind(504, "GatewayTimeout", "Gateway timeout."),
}


def task_failure_message(code: str) -> str:
    return TASK_FAILURE_MESSAGES.get(code, f"The task failed ({code}).")


def status_error(status: int) -> ErrorKind:
    return STATUS_ERRORS.get(status, ErrorKind(status, "InternalError", "Injected failure."))


class ApiError(Exception):
    """An error answer: `{"code", "message", "request_id"}` with its HTTP status."""

    def __init__(self, kind: ErrorKind, message: str | None = None) -> None:
        self.http_status = kind.http_status
        self.code = kind.code
        self.message = message if message is not None else kind.message
        super().__init__(f"{self.http_status} {self.code}: {self.message}")


def new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Response:
    """A complete HTTP answer built by an endpoint."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Response(status, body, "application/json", dict(headers or {}))


def error_response(error: ApiError, request_id: str) -> Response:
    return json_response(error.http_status, {"code": error.code, "message": error.message, "request_id": request_id})


class WallClock:
    """Turns epoch seconds into DashScope's time strings and back, in the service's zone."""

    def __init__(self, utc_offset_hours: float = DEFAULT_UTC_OFFSET_HOURS) -> None:
        self.zone = timezone(timedelta(hours=utc_offset_hours))

    def format(self, epoch_seconds: float | None) -> str | None:
        """ "2026-01-22 23:24:46.527" """
        if epoch_seconds is None:
            return None
        moment = datetime.fromtimestamp(epoch_seconds, tz=UTC).astimezone(self.zone)
        return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"

    def parse_list_filter(self, value: str) -> float:
        """The list API's YYYYMMDDhhmmss filter as epoch seconds; raises ValueError when malformed."""
        if len(value) != 14 or not value.isdigit():
            raise ValueError(value)
        return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=self.zone).timestamp()


def epoch_millis(epoch_seconds: float | None) -> int | None:
    return None if epoch_seconds is None else round(epoch_seconds * 1000)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    host: str  # host:port the client addressed, for URLs in answers

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class FileResponse:
    """A video download; `truncate_fraction` and `bytes_per_second` come from download faults."""

    path: str
    content_type: str = "video/mp4"
    truncate_fraction: float | None = None
    bytes_per_second: int | None = None


@dataclass(frozen=True)
class CloseConnection:
    """Close the socket without answering (the client sees the server disconnect)."""


Outcome = Response | FileResponse | CloseConnection
