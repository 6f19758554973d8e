"""Errors the client CLI reports: each knows its exit code and how to explain itself in a few lines."""

from __future__ import annotations

import json
from typing import Any

import httpx

from wanflow_tools.client.exit_codes import ExitCode


class ClientError(Exception):
    """Base class: `str(error)` is the first line shown to the user, `details()` the lines after it."""

    exit_code: ExitCode = ExitCode.USAGE

    def details(self) -> list[str]:
        return []


class UsageError(ClientError):
    """The command line names something that cannot work (a missing file, a malformed option)."""

    exit_code = ExitCode.USAGE


class UnavailableError(ClientError):
    """Nothing answered, or the connection broke: the same command may work later."""

    exit_code = ExitCode.UNAVAILABLE


class DeadlineError(ClientError):
    """A deadline passed; `job` is the last state seen, when there is one."""

    exit_code = ExitCode.TIMEOUT

    def __init__(self, message: str, job: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.job = job


class VerificationError(ClientError):
    exit_code = ExitCode.VERIFICATION_FAILED


class ApiError(ClientError):
    """A non-2xx reply from the wanflow API, in its documented error shape when it has one.

    API Gateway's own rejections (missing or bad SigV4 signature) are `{"message": "..."}` only; those get a
    code from the `x-amzn-errortype` header or from the status.
    """

    def __init__(
        self,
        *,
        status: int,
        code: str,
        message: str,
        errors: list[dict[str, str]] | None = None,
        request_id: str | None = None,
        provider_request_id: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or []
        self.request_id = request_id
        self.provider_request_id = provider_request_id
        self.retry_after = retry_after

    @property
    def exit_code(self) -> ExitCode:  # type: ignore[override]
        if self.status == 429 or self.status >= 500:
            return ExitCode.UNAVAILABLE
        return ExitCode.USAGE

    def __str__(self) -> str:
        return f"{self.code}: {self.message} (HTTP {self.status})"

    def details(self) -> list[str]:
        lines = [f"  {item.get('field', '?')}: {item.get('message', '')}" for item in self.errors]
        if self.retry_after:
            lines.append(f"  retry after {self.retry_after} s")
        if self.request_id:
            lines.append(f"  request id: {self.request_id}")
        if self.provider_request_id:
            lines.append(f"  DashScope request id: {self.provider_request_id}")
        return lines

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        body: Any = None
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            body = {}
        fallback_code = (
            response.headers.get("x-amzn-errortype", "").split(":")[0]
            or response.reason_phrase.replace(" ", "")
            or f"HTTP{response.status_code}"
        )
        message = body.get("message") or body.get("Message") or _text_excerpt(response) or "(no message)"
        errors = [item for item in body.get("errors") or [] if isinstance(item, dict)]
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        return cls(
            status=response.status_code,
            code=str(body.get("code") or fallback_code),
            message=str(message),
            errors=errors,
            request_id=body.get("request_id")
            or response.headers.get("x-amzn-requestid")
            or response.headers.get("apigw-requestid"),
            provider_request_id=body.get("provider_request_id") or error.get("provider_request_id"),
            retry_after=response.headers.get("retry-after"),
        )


def _text_excerpt(response: httpx.Response, limit: int = 200) -> str:
    try:
        text = response.text.strip()
    except UnicodeDecodeError:
        return ""
    return text if len(text) <= limit else text[:limit] + "..."


def error_from_transport(error: httpx.TransportError, what: str) -> ClientError:
    """Turn an httpx transport failure into the matching client error; `what` names the thing being reached."""
    if isinstance(error, httpx.TimeoutException):
        return DeadlineError(f"timed out talking to {what}: {error or type(error).__name__}")
    return UnavailableError(f"cannot reach {what}: {error or type(error).__name__}")
