"""DashScope (Alibaba Model Studio) wire protocol for Wan image-to-video tasks, over httpx (sync).

Endpoints (docs/dashscope.md "Endpoints"; `base` ends in /api/v1):

    create  POST {base}/services/aigc/video-generation/video-synthesis   (X-DashScope-Async: enable)
    query   GET  {base}/tasks/{task_id}
    cancel  POST {base}/tasks/{task_id}/cancel                           (no body; PENDING tasks only)
    list    GET  {base}/tasks?page_no=&page_size=&start_time=&end_time=&model_name=&status=

Retry policy - why create is different:

* `get_task`, `cancel_task` and `list_tasks` are safe to repeat, so the client retries them itself on
  `RetryLaterError` (throttling, 5xx, no answer), up to `max_attempts` calls in all, sleeping with exponential
  backoff and full jitter between calls, or exactly `Retry-After` seconds when DashScope sends that header (if
  Retry-After is longer than `backoff_cap_seconds` it gives up at once and leaves the wait to the caller).
  The loop is `wanflow.retry.retrying`, wanflow's one retry helper.
* `create_task` makes exactly one attempt. DashScope has no idempotency key, so a create that may have
  reached DashScope (read timeout, connection dropped after sending, a gateway's bare 502/504, an unreadable
  200) raises `OutcomeUnknownError`: sending it again could start a second, paid task. When nothing was sent
  (connection refused, connect or pool timeout) or DashScope answered throttled/5xx, it raises
  `RetryLaterError` / `ThrottledError`, and the caller (the submit pipeline, through SQS or Step Functions)
  decides when to try again. Refusals raise `RejectedError`.

The error classes live in `wanflow.errors` (one place for the taxonomy) and are re-exported here.

Secrets and big payloads: the API key is only ever put in the Authorization header; it never appears in an
exception, a repr or a log line (messages coming back from DashScope are scrubbed of it too). Request bodies
are never logged, and data: URIs are cut out of any text that is logged or put into an exception.

Connection reuse: one pooled `httpx.Client` per `DashScopeClient`; `shared_client()` keeps one per base URL
for the life of the process (a warm Lambda container), so polls reuse TLS connections. Idle connections are
dropped after a few seconds, before a server would close them under us, so that a create is not sent on a
dead socket.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from wanflow.capabilities import REGIONS
from wanflow.errors import (
    CONNECTION_FAILED,
    INVALID_RESPONSE,
    NO_RESPONSE,
    DashScopeError,
    OutcomeUnknownError,
    RejectedError,
    Retry,
    RetryLaterError,
    ThrottledError,
    dashscope_error_rule,
    transport_failure_rule,
)
from wanflow.retry import Uniform, full_jitter, honour_retry_after, retry_after_seconds, retrying
from wanflow.tasks import (  # re-exported: the task model is part of this client's interface
    DASHSCOPE_CLOCK,
    TaskInfo,
    TaskPage,
    TaskStatus,
    TaskSummary,
    format_list_time,
    parse_dashscope_time,
    redact_text,
    task_info_from_payload,
    task_page_from_payload,
    text_or_none,
)

__all__ = [
    "DASHSCOPE_CLOCK",
    "DashScopeClient",
    "DashScopeError",
    "OutcomeUnknownError",
    "RejectedError",
    "RetryLaterError",
    "TaskInfo",
    "TaskPage",
    "TaskStatus",
    "TaskSummary",
    "ThrottledError",
    "base_url_for_region",
    "clear_shared_clients",
    "format_list_time",
    "parse_dashscope_time",
    "redact_text",
    "shared_client",
    "task_info_from_payload",
    "task_page_from_payload",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

CREATE_PATH = "/services/aigc/video-generation/video-synthesis"
TASKS_PATH = "/tasks"

# ------------------------------------------------------------------------------------------------
# Regions
# ------------------------------------------------------------------------------------------------

# A workspace id becomes a DNS label of the Frankfurt host name, so it must be one.
_WORKSPACE_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def base_url_for_region(region: str, workspace_id: str | None = None) -> str:
    """The DashScope base URL (ending in /api/v1) for a region id of `wanflow.capabilities.REGIONS`."""
    try:
        template = REGIONS[region].base_url
    except KeyError:
        known = ", ".join(sorted(REGIONS))
        raise ValueError(f"Unknown DashScope region {region!r}; known regions: {known}.") from None
    if "{workspace_id}" not in template:
        return template
    if not workspace_id:
        raise ValueError(
            f"DashScope region {region!r} needs a workspace id (WANFLOW_DASHSCOPE_WORKSPACE_ID): "
            f"its endpoint is {template}."
        )
    if not _WORKSPACE_ID.match(workspace_id):
        raise ValueError(f"Invalid DashScope workspace id {workspace_id!r}: expected letters, digits and '-'.")
    return template.format(workspace_id=workspace_id)


# ------------------------------------------------------------------------------------------------
# Client
# ------------------------------------------------------------------------------------------------

# Failures that happen before any byte of the request is written: nothing can have reached DashScope.
_NOT_SENT_ERRORS: tuple[type[httpx.RequestError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.LocalProtocolError,
    httpx.UnsupportedProtocol,
)


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class DashScopeClient:
    """A DashScope client for Wan video tasks. Thread-safe; close() it or use it as a context manager."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        max_attempts: int = 4,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff_base_seconds: float = 0.5,
        backoff_cap_seconds: float = 8.0,
        rng: Uniform | None = None,
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ValueError(f"DashScope base URL must be http(s)://...: {base_url!r}")
        if not api_key or not api_key.strip():
            raise ValueError("DashScope API key is empty")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._backoff_base = backoff_base_seconds
        self._backoff_cap = backoff_cap_seconds
        self._rng = rng or random.Random()  # jitter, not cryptography
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(connect=timeout, read=timeout, write=timeout, pool=timeout),
            # A few seconds of idle keep-alive: long enough for a burst of polls, short enough that the server
            # has not silently closed the socket when the next create goes out on it.
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=5.0),
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": "wanflow",
            },
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"DashScopeClient(base_url={self.base_url!r})"

    def __enter__(self) -> DashScopeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------------------------------------
    # Operations
    # ------------------------------------------------------------------------------------------------

    def create_task(self, body: Mapping[str, Any]) -> TaskInfo:
        """Submit a video-synthesis task; one attempt only (see the module docstring)."""
        model = body.get("model")
        payload = self._call(
            "create",
            "POST",
            self.base_url + CREATE_PATH,
            idempotent=False,
            json_body=body,
            headers={"X-DashScope-Async": "enable", "Content-Type": "application/json"},
        )
        try:
            task = task_info_from_payload(payload)
        except ValueError as exc:
            # DashScope said 200, so a task very likely exists, but we cannot tell which one.
            raise self._invalid_response("create", exc, idempotent=False, payload=payload) from None
        logger.info(
            "DashScope task %s created (model=%s, status=%s, request_id=%s)",
            task.task_id,
            model,
            task.status.value,
            task.request_id,
        )
        return task

    def get_task(self, task_id: str, *, attempts: int | None = None) -> TaskInfo:
        """Query a task; retried on RetryLaterError. An unknown or expired task id gives status UNKNOWN.

        `attempts` overrides the client's `max_attempts` for this call: the poll loop asks once (a refused query
        still counts against the account) and waits longer itself.
        """
        url = self._task_url(task_id)

        def attempt() -> TaskInfo:
            payload = self._call("query", "GET", url, idempotent=True)
            try:
                return task_info_from_payload(payload)
            except ValueError as exc:
                raise self._invalid_response("query", exc, idempotent=True, payload=payload) from None

        return self._with_retries("query", attempt, attempts=attempts)

    def cancel_task(self, task_id: str) -> None:
        """Cancel a PENDING task; retried on RetryLaterError.

        A task that is no longer PENDING gives RejectedError code "UnsupportedOperation" - except when it is
        CANCELED already (for instance because an earlier attempt whose answer was lost did cancel it): then
        cancelling has the requested effect and this returns normally.
        """
        url = self._task_url(task_id) + "/cancel"
        try:
            self._with_retries("cancel", lambda: self._call("cancel", "POST", url, idempotent=True))
        except RejectedError as err:
            if err.code != "UnsupportedOperation" or self.get_task(task_id).status is not TaskStatus.CANCELED:
                raise
        logger.info("DashScope task %s canceled", task_id)

    def list_tasks(
        self,
        *,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        model_name: str | None = None,
        status: str | None = None,
        page_no: int = 1,
        page_size: int = 10,
    ) -> TaskPage:
        """One page of the account's tasks, optionally filtered; retried on RetryLaterError."""
        params: dict[str, str | int] = {"page_no": page_no, "page_size": page_size}
        if start_time is not None:
            params["start_time"] = format_list_time(start_time)
        if end_time is not None:
            params["end_time"] = format_list_time(end_time)
        if model_name is not None:
            params["model_name"] = model_name
        if status is not None:
            params["status"] = str(status)
        url = self.base_url + TASKS_PATH

        def attempt() -> TaskPage:
            payload = self._call("list", "GET", url, idempotent=True, params=params)
            try:
                return task_page_from_payload(payload)
            except (ValueError, TypeError) as exc:
                raise self._invalid_response("list", exc, idempotent=True, payload=payload) from None

        return self._with_retries("list", attempt)

    # ------------------------------------------------------------------------------------------------
    # Plumbing
    # ------------------------------------------------------------------------------------------------

    def _task_url(self, task_id: str) -> str:
        if not task_id:
            raise ValueError("task_id is empty")
        # Quoted as one path segment, so a task id can never reach another endpoint.
        return f"{self.base_url}{TASKS_PATH}/{quote(task_id, safe='')}"

    def _redact(self, text: str) -> str:
        return redact_text(text, secrets=(self._api_key,))

    def _call(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        idempotent: bool,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One HTTP exchange; returns the JSON body of a 2xx answer or raises a DashScopeError."""
        try:
            response = self._http.request(method, url, json=json_body, params=params, headers=headers)
        except httpx.RequestError as exc:
            raise self._transport_error(operation, exc, idempotent=idempotent) from exc
        if not response.is_success:
            raise self._error_from_response(operation, response, idempotent=idempotent)
        try:
            payload = response.json()
        except ValueError as exc:
            raise self._invalid_response(operation, exc, idempotent=idempotent) from None
        if not isinstance(payload, dict):
            not_an_object = ValueError("body is not a JSON object")
            raise self._invalid_response(operation, not_an_object, idempotent=idempotent)
        return payload

    def _transport_error(self, operation: str, exc: httpx.RequestError, *, idempotent: bool) -> DashScopeError:
        sent = not isinstance(exc, _NOT_SENT_ERRORS)
        rule = transport_failure_rule(request_may_have_been_sent=sent, idempotent=idempotent)
        detail = self._redact(str(exc) or type(exc).__name__)
        if rule.retry is Retry.OUTCOME_UNKNOWN:
            error: DashScopeError = OutcomeUnknownError(
                f"No answer from DashScope to {operation} after sending it ({type(exc).__name__}: {detail}); "
                "a task may or may not have been created.",
                code=NO_RESPONSE,
                http_status=rule.api_status,
            )
        else:
            error = RetryLaterError(
                f"No answer from DashScope to {operation} ({type(exc).__name__}: {detail}).",
                code=NO_RESPONSE if sent else CONNECTION_FAILED,
                http_status=rule.api_status,
            )
        logger.warning("DashScope %s: %s", operation, error.message)
        return error

    def _error_from_response(self, operation: str, response: httpx.Response, *, idempotent: bool) -> DashScopeError:
        code: str | None = None
        message: str | None = None
        request_id: str | None = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            code = text_or_none(body.get("code"))
            message = text_or_none(body.get("message") or body.get("msg"))
            request_id = text_or_none(body.get("request_id"))
        if message is None:
            message = f"HTTP {response.status_code} {response.reason_phrase}".strip()
            if body is None and response.text:
                message += f": {response.text.strip()}"
        message = self._redact(message)
        rule = dashscope_error_rule(response.status_code, code, idempotent=idempotent)
        common: dict[str, Any] = {
            "code": code or f"HTTP{response.status_code}",
            "request_id": request_id,
            "provider_http_status": response.status_code,
            "http_status": rule.api_status,
        }
        error: DashScopeError
        if rule.retry is Retry.LATER:
            error_class = ThrottledError if rule.api_status == 429 else RetryLaterError
            error = error_class(message, retry_after_seconds=_retry_after_seconds(response), **common)
        elif rule.retry is Retry.OUTCOME_UNKNOWN:
            error = OutcomeUnknownError(
                f"{message} (a gateway answered instead of DashScope; a task may or may not have been created)",
                **common,
            )
        else:
            error = RejectedError(message, **common)
        logger.warning(
            "DashScope %s failed: HTTP %s %s: %s (request_id=%s)",
            operation,
            response.status_code,
            error.code,
            error.message,
            request_id,
        )
        return error

    def _invalid_response(
        self,
        operation: str,
        exc: Exception,
        *,
        idempotent: bool,
        payload: Mapping[str, Any] | None = None,
    ) -> DashScopeError:
        request_id = text_or_none(payload.get("request_id")) if payload else None
        detail = self._redact(str(exc))
        error: DashScopeError
        if idempotent:
            error = RetryLaterError(
                f"Unreadable answer from DashScope to {operation}: {detail}",
                code=INVALID_RESPONSE,
                request_id=request_id,
                provider_http_status=200,
            )
        else:
            error = OutcomeUnknownError(
                f"Unreadable answer from DashScope to {operation}: {detail}; a task may or may not have been created.",
                code=INVALID_RESPONSE,
                request_id=request_id,
                provider_http_status=200,
            )
        logger.warning("DashScope %s: %s", operation, error.message)
        return error

    def _with_retries(self, operation: str, attempt: Callable[[], T], *, attempts: int | None = None) -> T:
        """Call `attempt` until it succeeds, retrying RetryLaterError per the module docstring's policy."""
        max_attempts = attempts or self._max_attempts

        def log_retry(attempt_no: int, error: BaseException, delay: float) -> None:
            logger.warning(
                "DashScope %s: retrying in %.2fs (attempt %d of %d failed: %s)",
                operation,
                delay,
                attempt_no,
                max_attempts,
                getattr(error, "code", None),
            )

        def log_give_up(attempt_no: int, error: BaseException) -> None:
            if attempt_no < max_attempts:  # attempts left, so the wait asked for was too long
                logger.warning(
                    "DashScope %s: Retry-After %.0fs is longer than this client waits; giving up",
                    operation,
                    retry_after_seconds(error),
                )

        return retrying(
            RetryLaterError,
            max_attempts=max_attempts,
            # Exactly Retry-After when DashScope sends it (given up at once when longer than the cap), otherwise
            # full jitter (uniform in [0, exponential bound]), which spreads retries of many containers apart.
            backoff=honour_retry_after(
                full_jitter(self._backoff_base, self._backoff_cap, rng=self._rng),
                exactly=True,
            ),
            max_wait_seconds=self._backoff_cap,
            sleep=self._sleep,
            on_retry=log_retry,
            on_give_up=log_give_up,
        )(attempt)


# ------------------------------------------------------------------------------------------------
# One client per process
# ------------------------------------------------------------------------------------------------

_shared_lock = threading.Lock()
_shared_clients: dict[str, tuple[str, DashScopeClient]] = {}  # base URL -> (sha256 of the key, client)


def shared_client(base_url: str, api_key: str) -> DashScopeClient:
    """The process-wide client for this base URL and key (a warm Lambda container keeps its connections).

    Keyed by base URL and a hash of the key, so the key is not kept as a lookup key; a new key for the same
    base URL (a rotated secret) replaces the old client.
    """
    key_hash = hashlib.sha256(api_key.encode()).hexdigest()
    normalised = base_url.rstrip("/")
    with _shared_lock:
        existing = _shared_clients.get(normalised)
        if existing is not None and existing[0] == key_hash:
            return existing[1]
        client = DashScopeClient(normalised, api_key)
        # The replaced client is not closed: another thread may be mid-request on it; its pool goes with it.
        _shared_clients[normalised] = (key_hash, client)
    return client


def clear_shared_clients() -> None:
    """Close and forget every shared client (tests; shutdown)."""
    with _shared_lock:
        clients = [client for _, client in _shared_clients.values()]
        _shared_clients.clear()
    for client in clients:
        client.close()
