"""The error taxonomy: retry classes, reply statuses, error bodies and job errors."""

from __future__ import annotations

import pytest

from wanflow.errors import (
    DASHSCOPE_ERROR_RULES,
    DASHSCOPE_TASK_FAILURES,
    JOB_ERROR_MESSAGES,
    Conflict,
    DashScopeError,
    FieldError,
    InvalidRequest,
    JobErrorCode,
    NotFound,
    OutcomeUnknownError,
    PayloadTooLarge,
    RejectedError,
    Retry,
    RetryLaterError,
    ThrottledError,
    WanflowError,
    classify_dashscope,
    classify_transport_failure,
    dashscope_error_rule,
    failure_reason_for_task,
    is_provider_side_failure,
)

# (DashScope HTTP status, DashScope code, retry class, status of wanflow's own reply)
DASHSCOPE_ANSWERS = [
    (429, "Throttling", Retry.LATER, 429),
    (429, "Throttling.RateQuota", Retry.LATER, 429),
    (429, "Throttling.AllocationQuota", Retry.LATER, 429),
    (429, None, Retry.LATER, 429),
    (500, "InternalError", Retry.LATER, 503),
    (500, "InternalError.Algo", Retry.LATER, 503),
    (500, None, Retry.LATER, 503),
    (502, None, Retry.LATER, 503),
    (503, None, Retry.LATER, 503),
    (504, None, Retry.LATER, 503),
    (400, "InvalidParameter", Retry.NEVER, 400),
    (400, "InvalidURL", Retry.NEVER, 400),
    (400, "DataInspectionFailed", Retry.NEVER, 400),
    (400, "IPInfringementSuspect", Retry.NEVER, 400),
    (400, "UnsupportedOperation", Retry.NEVER, 409),
    (400, "Arrearage", Retry.NEVER, 502),  # a 400, but the account's fault, not the caller's
    (400, None, Retry.NEVER, 400),
    (401, "InvalidApiKey", Retry.NEVER, 502),
    (403, "AccessDenied", Retry.NEVER, 502),
    (404, "ModelNotFound", Retry.NEVER, 400),
    (404, None, Retry.NEVER, 502),
    (400, "Throttling.SomethingNew", Retry.LATER, 429),  # an unlisted dotted code falls back to its prefix
]


@pytest.mark.parametrize(("http_status", "code", "retry", "api_status"), DASHSCOPE_ANSWERS)
def test_dashscope_answers_are_classified(http_status: int, code: str | None, retry: Retry, api_status: int):
    assert classify_dashscope(http_status, code) is retry
    assert dashscope_error_rule(http_status, code).api_status == api_status


@pytest.mark.parametrize(
    ("http_status", "code", "retry"),
    [
        (502, None, Retry.OUTCOME_UNKNOWN),  # a gateway broke off: the create may have gone through
        (504, None, Retry.OUTCOME_UNKNOWN),
        (504, "InternalError", Retry.LATER),  # DashScope itself answered: nothing was created
        (500, None, Retry.LATER),
        (503, None, Retry.LATER),
        (429, "Throttling.RateQuota", Retry.LATER),
        (400, "InvalidParameter", Retry.NEVER),
    ],
)
def test_create_treats_a_bare_gateway_timeout_as_outcome_unknown(http_status: int, code: str | None, retry: Retry):
    assert classify_dashscope(http_status, code, idempotent=False) is retry


def test_every_documented_error_code_has_a_rule():
    documented = {
        "Throttling.RateQuota",
        "Throttling.AllocationQuota",
        "InternalError",
        "InvalidParameter",
        "DataInspectionFailed",
        "IPInfringementSuspect",
        "Arrearage",
        "InvalidURL",
        "UnsupportedOperation",
        "InvalidApiKey",
        "AccessDenied",
        "ModelNotFound",
    }
    assert documented <= set(DASHSCOPE_ERROR_RULES)


@pytest.mark.parametrize(
    ("sent", "idempotent", "retry"),
    [
        (False, False, Retry.LATER),  # connection refused before a create: nothing reached DashScope
        (False, True, Retry.LATER),
        (True, True, Retry.LATER),  # a query that timed out can simply be asked again
        (True, False, Retry.OUTCOME_UNKNOWN),  # a create that timed out may have made a task
    ],
)
def test_transport_failures_are_classified(sent: bool, idempotent: bool, retry: Retry):
    assert classify_transport_failure(request_may_have_been_sent=sent, idempotent=idempotent) is retry


def test_invalid_request_lists_every_field():
    error = InvalidRequest(
        [FieldError("parameters.duration", "must be 5 or 10"), FieldError("input.prompt", "is too long")]
    )
    assert error.http_status == 400
    assert error.to_dict() == {
        "code": "InvalidParameter",
        "message": "Invalid request: parameters.duration, input.prompt.",
        "errors": [
            {"field": "parameters.duration", "message": "must be 5 or 10"},
            {"field": "input.prompt", "message": "is too long"},
        ],
    }


@pytest.mark.parametrize(
    ("error_class", "code", "http_status"),
    [(NotFound, "NotFound", 404), (Conflict, "Conflict", 409), (PayloadTooLarge, "PayloadTooLarge", 413)],
)
def test_api_errors_carry_code_and_status(error_class: type[WanflowError], code: str, http_status: int):
    error = error_class("nope")
    assert (error.code, error.http_status) == (code, http_status)
    assert error.to_dict() == {"code": code, "message": "nope", "errors": []}
    assert isinstance(error, WanflowError)


def test_dashscope_errors_keep_dashscope_code_and_request_id():
    error = RejectedError(
        "Input data may contain inappropriate content.",
        code="DataInspectionFailed",
        request_id="req-1",
        provider_http_status=400,
        http_status=400,
    )
    assert error.to_dict() == {
        "code": "DataInspectionFailed",
        "message": "Input data may contain inappropriate content.",
        "errors": [],
        "provider_request_id": "req-1",
    }
    assert error.provider_http_status == 400
    assert "req-1" in repr(error)


@pytest.mark.parametrize(
    ("error_class", "retry", "http_status"),
    [
        (RetryLaterError, Retry.LATER, 503),
        (ThrottledError, Retry.LATER, 429),
        (RejectedError, Retry.NEVER, 502),
        (OutcomeUnknownError, Retry.OUTCOME_UNKNOWN, 504),
    ],
)
def test_dashscope_error_classes_know_their_retry_class(
    error_class: type[DashScopeError], retry: Retry, http_status: int
):
    error = error_class("m", code="X")
    assert error.retry is retry
    assert error.http_status == http_status
    assert isinstance(error, DashScopeError)
    assert isinstance(error, WanflowError)


def test_throttled_error_is_a_retry_later_error_with_retry_after():
    error = ThrottledError("slow down", code="Throttling.RateQuota", retry_after_seconds=3.0)
    assert isinstance(error, RetryLaterError)
    assert error.retry_after_seconds == 3.0


def test_wanflow_job_error_codes():
    assert {code.value for code in JobErrorCode} == {
        "TaskExpired",
        "TaskFailed",
        "VideoUrlExpired",
        "DeadlineExceeded",
        "CreateOutcomeUnknown",
        "DownloadFailed",
        "InternalError",
    }
    assert set(JOB_ERROR_MESSAGES) == set(JobErrorCode)


def test_unknown_task_becomes_task_expired():
    code, message = failure_reason_for_task("UNKNOWN", None, None)
    assert code == "TaskExpired"
    assert "24 hours" in message


def test_failed_task_keeps_dashscope_code_and_message_and_adds_a_hint():
    code, message = failure_reason_for_task("FAILED", "DataInspectionFailed", "Output data may contain bad content.")
    assert code == "DataInspectionFailed"
    assert message.startswith("Output data may contain bad content.")
    assert DASHSCOPE_TASK_FAILURES["DataInspectionFailed"].hint in message


def test_failed_task_with_a_dotted_code_gets_its_prefix_hint():
    code, message = failure_reason_for_task("FAILED", "InternalError.Algo", "algo error")
    assert code == "InternalError.Algo"
    assert DASHSCOPE_TASK_FAILURES["InternalError"].hint in message


def test_failed_task_with_an_unknown_code_is_passed_through():
    assert failure_reason_for_task("FAILED", "SomethingNew", "it broke") == ("SomethingNew", "it broke")


def test_failed_task_without_a_code_gets_wanflow_code():
    assert failure_reason_for_task("FAILED", None, None) == (
        "TaskFailed",
        JOB_ERROR_MESSAGES[JobErrorCode.TASK_FAILED],
    )
    assert failure_reason_for_task("FAILED", "", "reason given") == ("TaskFailed", "reason given")


# (task status, DashScope's code in output.code, whether wanflow submits the request again as a new task)
TASK_ENDINGS = [
    ("FAILED", "InternalError", True),  # DashScope failed internally
    ("FAILED", "InternalError.Algo", True),  # a dotted variant falls back to its prefix
    ("FAILED", "InternalError.Timeout", True),
    ("FAILED", "RequestTimeOut", True),  # DashScope timed out
    ("FAILED", "DataInspectionFailed", False),  # moderation: the same input fails the same way
    ("FAILED", "IPInfringementSuspect", False),
    ("FAILED", "InvalidParameter", False),
    ("FAILED", "InvalidParameter.DataInspection", False),
    ("FAILED", "InvalidURL", False),
    ("FAILED", "Arrearage", False),  # the account's fault
    ("FAILED", "AccessDenied", False),
    ("FAILED", "Throttling.AllocationQuota", False),  # quota: not a failure of the task's own
    ("FAILED", "SomethingNew", False),  # unknown codes are not retried (see is_provider_side_failure)
    ("FAILED", None, False),  # no code: TaskFailed, not known to be DashScope's fault
    ("FAILED", "", False),
    ("UNKNOWN", "InternalError", False),  # the task may still exist: a new one could be a second video
    ("CANCELED", "InternalError", False),
    ("SUCCEEDED", None, False),
    ("RUNNING", None, False),
]


@pytest.mark.parametrize(("status", "code", "retried"), TASK_ENDINGS)
def test_only_failures_that_are_dashscopes_own_are_submitted_again(status: str, code: str | None, retried: bool):
    assert is_provider_side_failure(status, code) is retried


def test_every_resubmittable_task_failure_is_one_dashscope_answers_with_a_5xx_or_a_timeout():
    # A code is only marked resubmittable when DashScope documents it as its own failure (docs/dashscope.md).
    resubmittable = {code for code, rule in DASHSCOPE_TASK_FAILURES.items() if rule.resubmittable}
    assert resubmittable == {"InternalError", "RequestTimeOut"}
