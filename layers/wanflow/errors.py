"""wanflow's error classes and the DashScope error taxonomy, in one place.

Three kinds of knowledge live here, all as data plus small functions over it:

* The exception hierarchy. `WanflowError` carries what wanflow's HTTP API replies with (`code`, `message`,
  `http_status`, `to_dict()`); `DashScopeError` and its subclasses are what `wanflow.dashscope` raises, and
  they are `WanflowError`s too, so one handler in the API turns any of them into a reply.
* How a DashScope failure is handled: `classify_dashscope()` says whether to retry later, never, or whether
  the outcome is unknown (a create that may have reached DashScope), and `dashscope_error_rule()` also gives
  the HTTP status wanflow's own API replies with. Both read `DASHSCOPE_ERROR_RULES`.
* How a finished-but-unsuccessful DashScope task becomes a job error: `JobErrorCode` (wanflow's own codes),
  `DASHSCOPE_TASK_FAILURES` (hints for DashScope's task codes) and `failure_reason_for_task()`; and whether it
  failed for DashScope's own reason, so that wanflow submits it again: `is_provider_side_failure()`.

This module must not import the rest of wanflow: everything else imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

# ------------------------------------------------------------------------------------------------
# Exception hierarchy
# ------------------------------------------------------------------------------------------------


class FieldError(NamedTuple):
    """One invalid field of a request; `field` is a dotted path such as "parameters.duration"."""

    field: str
    message: str


class WanflowError(Exception):
    """Base of every error wanflow raises on purpose.

    `code` and `message` are what the user sees; `http_status` is the status wanflow's HTTP API replies with.
    Subclasses set class-level defaults; an instance may override them.
    """

    code: str = "InternalError"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status

    def to_dict(self) -> dict[str, Any]:
        """The body of the API's error reply, without `request_id` (the API layer adds its own)."""
        return {"code": self.code, "message": self.message, "errors": []}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidRequest(WanflowError):
    """The request breaks one or more rules; nothing was sent to DashScope."""

    code = "InvalidParameter"
    http_status = 400

    # Errors are stored on jobs and published in events: however hostile the input, they stay small.
    MAX_ERRORS = 50
    MAX_FIELD_CHARS = 200
    MAX_MESSAGE_CHARS = 500

    def __init__(self, errors: list[FieldError], message: str | None = None) -> None:
        self.errors = [
            FieldError(_clip(error.field, self.MAX_FIELD_CHARS), _clip(error.message, self.MAX_MESSAGE_CHARS))
            for error in errors[: self.MAX_ERRORS]
        ]
        if message is None:
            fields = ", ".join(error.field for error in self.errors) or "the request"
            message = f"Invalid request: {fields}."
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["errors"] = [{"field": error.field, "message": error.message} for error in self.errors]
        return body


class InvalidBatch(InvalidRequest):
    """A batch with invalid items: every item's errors, each field named with its item (`jobs[3].input.img_url`).

    A batch is answered, never stored with its errors, so it may list more errors than one job does."""

    MAX_ERRORS = 5000


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class NotFound(WanflowError):
    code = "NotFound"
    http_status = 404


class Conflict(WanflowError):
    code = "Conflict"
    http_status = 409


class QueueUnavailable(WanflowError):
    """The admission queue could not be written (the job table is throttling): the one case a job is refused
    for load. No job was stored and nothing was sent to DashScope; the same request may be repeated."""

    code = "QueueUnavailable"
    http_status = 429


class PayloadTooLarge(WanflowError):
    code = "PayloadTooLarge"
    http_status = 413


class Retry(StrEnum):
    """What a caller may do after a failed DashScope call."""

    LATER = "later"  # nothing took effect at DashScope, or the call is safe to repeat: repeat it later
    NEVER = "never"  # DashScope refused the request; repeating it gives the same answer
    OUTCOME_UNKNOWN = "outcome_unknown"  # a create may have reached DashScope: repeating may make a 2nd task


class DashScopeError(WanflowError):
    """A DashScope call failed.

    `code` and `message` are DashScope's own (or a wanflow transport code such as "ConnectionFailed" when no
    answer came back); `request_id` is DashScope's request id when it sent one; `provider_http_status` is the
    status DashScope (or whatever answered on its address) replied with, None when nothing answered;
    `http_status` is the status wanflow's API replies with (see `DASHSCOPE_ERROR_RULES`).
    Never contains the API key: messages are scrubbed by `wanflow.dashscope` before they get here.
    """

    retry: Retry = Retry.NEVER
    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        code: str,
        request_id: str | None = None,
        provider_http_status: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.request_id = request_id
        self.provider_http_status = provider_http_status

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        if self.request_id:
            body["provider_request_id"] = self.request_id
        return body

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"request_id={self.request_id!r}, provider_http_status={self.provider_http_status!r})"
        )


class RetryLaterError(DashScopeError):
    """Nothing took effect at DashScope (or the call is safe to repeat): try the same call again later."""

    retry = Retry.LATER
    http_status = 503

    def __init__(self, message: str, *, retry_after_seconds: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_seconds = retry_after_seconds


class ThrottledError(RetryLaterError):
    """DashScope throttled the call (429 Throttling*); `retry_after_seconds` is set when it said how long."""

    http_status = 429


class RejectedError(DashScopeError):
    """DashScope refused the request for good (bad input, moderation, key, account, model): never retry it."""

    retry = Retry.NEVER


class OutcomeUnknownError(DashScopeError):
    """A create request may have reached DashScope but no answer came back: a task may or may not exist.

    Sending the create again could start a second, paid task, so the caller has to reconcile instead.
    """

    retry = Retry.OUTCOME_UNKNOWN
    http_status = 504


# ------------------------------------------------------------------------------------------------
# DashScope error taxonomy
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRule:
    """How wanflow treats one DashScope error: whether to retry, and the status of wanflow's own reply."""

    retry: Retry
    api_status: int


_THROTTLED = ErrorRule(Retry.LATER, 429)
_UNAVAILABLE = ErrorRule(Retry.LATER, 503)
_BAD_INPUT = ErrorRule(Retry.NEVER, 400)  # the caller's request is at fault: they can fix it
_OPERATOR_FAULT = ErrorRule(Retry.NEVER, 502)  # the stack's key, account or configuration is at fault
_OUTCOME_UNKNOWN = ErrorRule(Retry.OUTCOME_UNKNOWN, 504)

# DashScope error codes (docs/dashscope.md "Errors"). A code wins over the HTTP status: Arrearage comes as a 400
# but is the account's fault, not the caller's. An unlisted dotted code ("Throttling.Foo") falls back to its prefix.
DASHSCOPE_ERROR_RULES: Mapping[str, ErrorRule] = {
    "Throttling": _THROTTLED,
    "Throttling.RateQuota": _THROTTLED,  # "Requests rate limit exceeded" or "...increased too quickly"
    "Throttling.AllocationQuota": _THROTTLED,  # "Allocated quota exceeded"
    "InternalError": _UNAVAILABLE,
    "InvalidParameter": _BAD_INPUT,  # includes "url error, please check url!"
    "InvalidURL": _BAD_INPUT,
    "DataInspectionFailed": _BAD_INPUT,  # content moderation of prompt or image
    "IPInfringementSuspect": _BAD_INPUT,
    "ModelNotFound": _BAD_INPUT,  # the model does not exist in this stack's region: pick another
    "UnsupportedOperation": ErrorRule(Retry.NEVER, 409),  # e.g. cancel of a task that is no longer PENDING
    "InvalidApiKey": _OPERATOR_FAULT,
    "AccessDenied": _OPERATOR_FAULT,  # also: create sent without X-DashScope-Async
    "Arrearage": _OPERATOR_FAULT,  # the Alibaba Cloud account is overdue (a 400!)
}

# Statuses a gateway in front of DashScope answers with when the service behind it broke off (502) or was too
# slow (504): the request may well have been processed there, so a create is not known to have failed.
AMBIGUOUS_GATEWAY_STATUSES = frozenset({502, 504})

# wanflow's own codes for failures where DashScope never answered.
CONNECTION_FAILED = "ConnectionFailed"  # nothing was sent: refused, connect timeout, pool timeout
NO_RESPONSE = "NoResponse"  # the request was (or may have been) sent but no complete answer came back
INVALID_RESPONSE = "InvalidResponse"  # DashScope answered 200 with a body wanflow cannot read


def _rule_for_code(code: str | None) -> ErrorRule | None:
    if not code:
        return None
    return DASHSCOPE_ERROR_RULES.get(code) or DASHSCOPE_ERROR_RULES.get(code.split(".", 1)[0])


def dashscope_error_rule(http_status: int, code: str | None, *, idempotent: bool = True) -> ErrorRule:
    """The rule for an error answer from DashScope: retry class and the status of wanflow's own reply.

    `idempotent=False` is for create: a bare 502/504 (no DashScope error code, so a gateway answered, not
    DashScope) leaves the create's outcome unknown.
    """
    rule = _rule_for_code(code)
    if rule is not None:
        return rule
    if not idempotent and not code and http_status in AMBIGUOUS_GATEWAY_STATUSES:
        return _OUTCOME_UNKNOWN
    if http_status == 429:
        return _THROTTLED
    if http_status >= 500 or http_status == 408:
        return _UNAVAILABLE
    if http_status == 400:
        return _BAD_INPUT
    # 401/403/404 and anything else unexpected: the stack's key, account or base URL is wrong.
    return _OPERATOR_FAULT


def classify_dashscope(http_status: int, code: str | None, *, idempotent: bool = True) -> Retry:
    """Whether a DashScope error answer may be retried (see `dashscope_error_rule`)."""
    return dashscope_error_rule(http_status, code, idempotent=idempotent).retry


def classify_transport_failure(*, request_may_have_been_sent: bool, idempotent: bool) -> Retry:
    """Whether a call that got no answer may be retried.

    Connection refused, connect and pool timeouts send nothing: retry later. A read timeout or a dropped
    connection after sending may have taken effect: fine to repeat for a query, outcome unknown for a create.
    """
    if not request_may_have_been_sent or idempotent:
        return Retry.LATER
    return Retry.OUTCOME_UNKNOWN


def transport_failure_rule(*, request_may_have_been_sent: bool, idempotent: bool) -> ErrorRule:
    retry = classify_transport_failure(request_may_have_been_sent=request_may_have_been_sent, idempotent=idempotent)
    return _OUTCOME_UNKNOWN if retry is Retry.OUTCOME_UNKNOWN else _UNAVAILABLE


# ------------------------------------------------------------------------------------------------
# Job errors: how a task that ended without a video becomes the job's `error`
# ------------------------------------------------------------------------------------------------


class JobErrorCode(StrEnum):
    """wanflow's own job error codes, for failures that are not a DashScope task code."""

    TASK_EXPIRED = "TaskExpired"  # DashScope answers UNKNOWN: the task id is older than 24 h or never existed
    TASK_FAILED = "TaskFailed"  # DashScope said FAILED but gave no code
    VIDEO_URL_EXPIRED = "VideoUrlExpired"  # the task succeeded but its video URL (valid 24 h) has expired
    DEADLINE_EXCEEDED = "DeadlineExceeded"  # the job ran past wanflow's own deadline without finishing
    CREATE_OUTCOME_UNKNOWN = "CreateOutcomeUnknown"  # the create got no answer and no task could be found
    DOWNLOAD_FAILED = "DownloadFailed"  # the video could not be fetched, verified or stored
    INTERNAL_ERROR = "InternalError"  # a bug or an unexpected failure in wanflow


JOB_ERROR_MESSAGES: Mapping[JobErrorCode, str] = {
    JobErrorCode.TASK_EXPIRED: (
        "DashScope no longer knows this task (task ids are kept for 24 hours); its result cannot be fetched."
    ),
    JobErrorCode.TASK_FAILED: "DashScope reported the task as FAILED without giving a reason.",
    JobErrorCode.VIDEO_URL_EXPIRED: (
        "The task succeeded but its video URL (valid for 24 hours) expired before the video was saved."
    ),
    JobErrorCode.DEADLINE_EXCEEDED: "The job did not finish within wanflow's deadline.",
    JobErrorCode.CREATE_OUTCOME_UNKNOWN: (
        "The request to create the DashScope task got no answer and no matching task was found."
    ),
    JobErrorCode.DOWNLOAD_FAILED: "The generated video could not be downloaded and stored.",
    JobErrorCode.INTERNAL_ERROR: "wanflow failed unexpectedly.",
}


@dataclass(frozen=True)
class TaskFailureRule:
    """What a DashScope task failure code means to a user; `resubmittable` says the failure is DashScope's own
    (internal error, timeout), so the same request as a new task might succeed: wanflow retries it by itself
    (`is_provider_side_failure`)."""

    hint: str
    resubmittable: bool = False


# Codes DashScope puts in output.code of a FAILED task. The job keeps DashScope's code and message
# (docs/product.md); the hint is appended because DashScope's messages are often terse.
DASHSCOPE_TASK_FAILURES: Mapping[str, TaskFailureRule] = {
    "DataInspectionFailed": TaskFailureRule(
        "Content moderation flagged the prompt, the image or the generated video; change the input."
    ),
    "IPInfringementSuspect": TaskFailureRule(
        "The input is suspected of infringing intellectual property; change the input."
    ),
    "InvalidParameter": TaskFailureRule(
        "DashScope accepted the task but rejected a parameter or the image while processing it."
    ),
    "InvalidURL": TaskFailureRule("DashScope could not download the image or audio from its URL."),
    "InternalError": TaskFailureRule("DashScope failed internally; submitting again may succeed.", True),
    # "Request timed out, please try again later." (docs/dashscope.md "Errors").
    "RequestTimeOut": TaskFailureRule("DashScope timed out; submitting again may succeed.", True),
}


class FailureReason(NamedTuple):
    """Why a task ended without a video: the code and message that become the job's `error`."""

    code: str
    message: str


def _task_failure_rule(code: str) -> TaskFailureRule | None:
    return DASHSCOPE_TASK_FAILURES.get(code) or DASHSCOPE_TASK_FAILURES.get(code.split(".", 1)[0])


def is_provider_side_failure(task_status: str, code: str | None) -> bool:
    """Whether a task that ended `task_status` with `code` failed for DashScope's own reason (internal error,
    timeout), so that a new task for the same request is worth trying (wanflow.usecases.retries).

    Only FAILED tasks with a code listed as `resubmittable` (or a dotted variant of one: "InternalError.Algo") are.
    Never moderation, bad parameters or URLs, the account's arrears or quota, a cancel, or an UNKNOWN task (the
    task may still exist: a new one could be a second, paid video). A code wanflow does not know, or none at all,
    is not retried either: it may be one that depends on the input, so a new task would fail the same way and only
    delay the verdict by the backoffs; a provider-side code that should be retried is added to
    `DASHSCOPE_TASK_FAILURES` once it is documented.
    """
    if task_status != "FAILED" or not code:
        return False
    rule = _task_failure_rule(code)
    return rule is not None and rule.resubmittable


def failure_reason_for_task(task_status: str, code: str | None, message: str | None) -> FailureReason:
    """Why a task that ended FAILED or UNKNOWN failed (`task_status` is a `TaskStatus` value)."""
    if task_status == "UNKNOWN":
        return FailureReason(JobErrorCode.TASK_EXPIRED, JOB_ERROR_MESSAGES[JobErrorCode.TASK_EXPIRED])
    if not code:
        return FailureReason(JobErrorCode.TASK_FAILED, message or JOB_ERROR_MESSAGES[JobErrorCode.TASK_FAILED])
    rule = _task_failure_rule(code)
    text = message or code
    if rule is not None:
        text = f"{text} ({rule.hint})"
    return FailureReason(code, text)


# ------------------------------------------------------------------------------------------------
# Errors that steer the state machine
# ------------------------------------------------------------------------------------------------


class TransientError(Exception):
    """A step failed for a reason that may pass (throttling, a 5xx, a truncated download): retry the step.

    The class name is the Lambda error type that `statemachine/job.asl.json` retries with backoff; any other
    exception goes to the failure path.
    """


class JobFailure(Exception):
    """The job cannot succeed (expired video URL, moderation...): end it FAILED with this code and message."""

    def __init__(self, code: str, message: str, provider_request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.provider_request_id = provider_request_id
