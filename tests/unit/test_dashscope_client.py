"""The DashScope client against scripted answers (httpx.MockTransport): wire format, parsing, errors, retries."""

from __future__ import annotations

import email.utils
import json
import logging
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from wanflow.dashscope import (
    DashScopeClient,
    DashScopeError,
    OutcomeUnknownError,
    RejectedError,
    RetryLaterError,
    TaskStatus,
    ThrottledError,
    base_url_for_region,
    clear_shared_clients,
    parse_dashscope_time,
    redact_text,
    shared_client,
)

API_KEY = "sk-wanflow-SECRET-4f1d9c2e7a"
BASE_URL = "https://dashscope.test/api/v1"
TASK_ID = "c15d5b14-07c4-4af5-b862-xxxxxx"
DATA_URI = "data:image/png;base64," + "iVBORw0KGgoAAAANSUhEUgAA" * 200

CREATE_BODY = {
    "model": "wan2.6-i2v-flash",
    "input": {"prompt": "A boy made of spray paint raps", "img_url": "https://example.com/rap.png"},
    "parameters": {"resolution": "720P", "duration": 10, "prompt_extend": True, "watermark": False},
}

# Sample answers from the seed API reference (docs/dashscope.md "Reading these facts"). The Python samples print the
# SDK's response object, whose extra top-level keys (status_code, code, message) the HTTP body does not have; they
# must be harmless.
CREATE_ANSWER_SDK_SAMPLE = {
    "status_code": 200,
    "request_id": "6dc3bf6c-be18-9268-9c27-xxxxxx",
    "code": "",
    "message": "",
    "output": {"task_id": "686391d9-7ecf-4290-a8e9-xxxxxx", "task_status": "PENDING", "video_url": ""},
    "usage": None,
}
CREATE_ANSWER_HTTP_SAMPLE = {
    "request_id": "5dbf9dc5-4f4c-9605-85ea-xxxxxxxx",
    "output": {"task_id": "7277e20e-aa01-4709-xxxxxxxx", "task_status": "PENDING"},
}
QUERY_SUCCEEDED_SAMPLE = {
    "status_code": 200,
    "request_id": "2794c7a3-fe8c-4dd4-a1b7-xxxxxx",
    "code": None,
    "message": "",
    "output": {
        "task_id": TASK_ID,
        "task_status": "SUCCEEDED",
        "video_url": "https://dashscope-result-bj.oss-cn-beijing.aliyuncs.com/xxx.mp4?Expires=xxx",
        "submit_time": "2026-01-22 23:24:46.527",
        "scheduled_time": "2026-01-22 23:24:46.565",
        "end_time": "2026-01-22 23:25:59.978",
        "orig_prompt": "A scene of urban fantasy art.",
    },
    "usage": {
        "video_count": 1,
        "video_duration": 0,
        "video_ratio": "",
        "duration": 10,
        "input_video_duration": 0,
        "output_video_duration": 10,
        "audio": True,
        "SR": 720,
    },
}
QUERY_SUCCEEDED_JAVA_SAMPLE = {
    "request_id": "87c091bb-7a3c-4904-8501-xxxxxx",
    "output": {
        "task_id": "413ed6e4-5f3a-4f57-8d58-xxxxxx",
        "task_status": "SUCCEEDED",
        "video_url": "https://dashscope-result-bj.oss-cn-beijing.aliyuncs.com/xxx.mp4?Expires=xxx",
        "orig_prompt": "A scene of urban fantasy art.",
        "submit_time": "2026-01-22 23:25:45.729",
        "scheduled_time": "2026-01-22 23:25:45.771",
        "end_time": "2026-01-22 23:26:44.942",
    },
    "usage": {
        "video_count": 1,
        "duration": 10.0,
        "input_video_duration": 0.0,
        "output_video_duration": 10.0,
        "SR": "720",
    },
    "status_code": 200,
    "code": "",
    "message": "",
}
# The "failed task" and "expired task" tabs of the reference (shape per docs/dashscope.md "Responses").
QUERY_FAILED_SAMPLE = {
    "request_id": "e5d70b02-ebd3-98ce-9fe8-xxxxxx",
    "output": {
        "task_id": "86ecf553-d340-4e21-af6e-xxxxxx",
        "task_status": "FAILED",
        "submit_time": "2026-01-22 23:25:45.729",
        "scheduled_time": "2026-01-22 23:25:45.771",
        "end_time": "2026-01-22 23:25:46.001",
        "code": "InvalidParameter",
        "message": "The size of input image is too small or to large",
    },
}
QUERY_EXPIRED_SAMPLE = {
    "request_id": "a4de7c32-7057-9f82-8581-xxxxxx",
    "output": {"task_id": "502a00b1-19d9-4839-a82f-xxxxxx", "task_status": "UNKNOWN"},
}
LIST_ANSWER = {
    "request_id": "list-req-1",
    "data": [
        {
            "api_key_id": "1234",
            "caller_parent_id": "p",
            "caller_uid": "u",
            "gmt_create": 1769095486527,
            "start_time": 1769095486565,
            "end_time": 1769095559978,
            "model_name": "wan2.6-i2v-flash",
            "region": "ap-southeast-1",
            "request_id": "2794c7a3-fe8c-4dd4-a1b7-xxxxxx",
            "status": "SUCCEEDED",
            "task_id": TASK_ID,
            "user_api_unique_key": "apikey:v1:aigc:video-generation:video-synthesis:wan2.6-i2v-flash",
        }
    ],
    "total": 11,
    "total_page": 6,
    "page_no": 1,
    "page_size": 2,
}

Step = httpx.Response | Callable[[httpx.Request], httpx.Response]


class ScriptedDashScope:
    """Answers each request with the next scripted step (a response, or a function that may raise)."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self.steps, f"unexpected extra request {request.method} {request.url}"
        step = self.steps.pop(0)
        return step(request) if callable(step) else step


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def error_answer(status: int, code: str, message: str = "msg", headers: dict[str, str] | None = None):
    return answer(status, {"code": code, "message": message, "request_id": f"req-{code}"}, headers)


def raises(error_class: type[httpx.RequestError], text: str = "boom") -> Callable[[httpx.Request], Any]:
    def step(request: httpx.Request) -> httpx.Response:
        raise error_class(text, request=request)

    return step


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class UpperBoundRandom:
    """A jitter source that always picks the top of the range, to observe the backoff bound."""

    def uniform(self, low: float, high: float) -> float:
        return high


def make_client(dashscope: ScriptedDashScope, sleeps: Sleeps | None = None, **kwargs: Any) -> DashScopeClient:
    return DashScopeClient(
        BASE_URL,
        API_KEY,
        transport=httpx.MockTransport(dashscope),
        sleep=sleeps if sleeps is not None else Sleeps(),
        **kwargs,
    )


# ------------------------------------------------------------------------------------------------
# Regions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "base_url"),
    [
        ("ap-southeast-1", "https://dashscope-intl.aliyuncs.com/api/v1"),
        ("us-east-1", "https://dashscope-us.aliyuncs.com/api/v1"),
        ("cn-beijing", "https://dashscope.aliyuncs.com/api/v1"),
    ],
)
def test_region_base_urls(region: str, base_url: str):
    assert base_url_for_region(region) == base_url


def test_frankfurt_base_url_names_the_workspace():
    assert base_url_for_region("eu-central-1", "ws-8f2a") == "https://ws-8f2a.eu-central-1.maas.aliyuncs.com/api/v1"


@pytest.mark.parametrize("workspace_id", [None, ""])
def test_frankfurt_without_workspace_is_refused(workspace_id: str | None):
    with pytest.raises(ValueError, match="workspace id"):
        base_url_for_region("eu-central-1", workspace_id)


@pytest.mark.parametrize("workspace_id", ["evil.com/x", "a b", "-ws"])
def test_frankfurt_workspace_must_be_a_host_label(workspace_id: str):
    with pytest.raises(ValueError, match="Invalid DashScope workspace id"):
        base_url_for_region("eu-central-1", workspace_id)


def test_unknown_region_is_refused():
    with pytest.raises(ValueError, match="known regions: ap-southeast-1"):
        base_url_for_region("us-west-2")


# ------------------------------------------------------------------------------------------------
# Wire format and parsing
# ------------------------------------------------------------------------------------------------


def test_create_sends_the_documented_request():
    dashscope = ScriptedDashScope(answer(200, CREATE_ANSWER_HTTP_SAMPLE))
    task = make_client(dashscope).create_task(CREATE_BODY)

    (request,) = dashscope.requests
    assert request.method == "POST"
    assert str(request.url) == "https://dashscope.test/api/v1/services/aigc/video-generation/video-synthesis"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["X-DashScope-Async"] == "enable"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == CREATE_BODY
    assert task.task_id == "7277e20e-aa01-4709-xxxxxxxx"
    assert task.status is TaskStatus.PENDING
    assert task.request_id == "5dbf9dc5-4f4c-9605-85ea-xxxxxxxx"


def test_create_parses_the_sdk_sample_answer():
    task = make_client(ScriptedDashScope(answer(200, CREATE_ANSWER_SDK_SAMPLE))).create_task(CREATE_BODY)
    assert (task.task_id, task.status, task.video_url, task.usage) == (
        "686391d9-7ecf-4290-a8e9-xxxxxx",
        TaskStatus.PENDING,
        None,  # "" means absent
        {},
    )


def test_every_call_has_all_four_timeouts():
    dashscope = ScriptedDashScope(answer(200, QUERY_EXPIRED_SAMPLE))
    make_client(dashscope, timeout=7.5).get_task(TASK_ID)
    assert dashscope.requests[0].extensions["timeout"] == {"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}


def test_get_task_sends_the_documented_request_and_parses_success():
    dashscope = ScriptedDashScope(answer(200, QUERY_SUCCEEDED_SAMPLE))
    task = make_client(dashscope).get_task(TASK_ID)

    (request,) = dashscope.requests
    assert request.method == "GET"
    assert str(request.url) == f"https://dashscope.test/api/v1/tasks/{TASK_ID}"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert "X-DashScope-Async" not in request.headers
    assert task.status is TaskStatus.SUCCEEDED
    assert task.status.is_terminal
    assert task.request_id == "2794c7a3-fe8c-4dd4-a1b7-xxxxxx"
    assert task.video_url == "https://dashscope-result-bj.oss-cn-beijing.aliyuncs.com/xxx.mp4?Expires=xxx"
    assert task.submit_time == "2026-01-22 23:24:46.527"
    assert task.submitted_at == datetime(2026, 1, 22, 23, 24, 46, 527000)
    assert task.scheduled_at == datetime(2026, 1, 22, 23, 24, 46, 565000)
    assert task.ended_at == datetime(2026, 1, 22, 23, 25, 59, 978000)
    assert task.orig_prompt == "A scene of urban fantasy art."
    assert task.actual_prompt is None
    assert (task.code, task.message) == (None, None)
    assert task.usage["output_video_duration"] == 10
    assert task.usage["SR"] == 720


def test_get_task_parses_the_java_sample_answer():
    task = make_client(ScriptedDashScope(answer(200, QUERY_SUCCEEDED_JAVA_SAMPLE))).get_task("x")
    assert task.status is TaskStatus.SUCCEEDED
    assert task.usage == QUERY_SUCCEEDED_JAVA_SAMPLE["usage"]
    assert task.end_time == "2026-01-22 23:26:44.942"


def test_get_task_parses_a_failed_task():
    task = make_client(ScriptedDashScope(answer(200, QUERY_FAILED_SAMPLE))).get_task("x")
    assert task.status is TaskStatus.FAILED
    assert task.code == "InvalidParameter"
    assert task.message == "The size of input image is too small or to large"
    assert task.video_url is None


def test_get_task_parses_an_expired_task():
    task = make_client(ScriptedDashScope(answer(200, QUERY_EXPIRED_SAMPLE))).get_task("x")
    assert task.status is TaskStatus.UNKNOWN
    assert task.status.is_terminal
    assert task.task_id == "502a00b1-19d9-4839-a82f-xxxxxx"
    assert task.submit_time is None


def test_task_id_cannot_escape_its_path_segment():
    dashscope = ScriptedDashScope(answer(200, QUERY_EXPIRED_SAMPLE))
    make_client(dashscope).get_task("../services/x?y")
    assert dashscope.requests[0].url.raw_path == b"/api/v1/tasks/..%2Fservices%2Fx%3Fy"


def test_task_info_repr_and_dict():
    task = make_client(ScriptedDashScope(answer(200, QUERY_SUCCEEDED_SAMPLE))).get_task(TASK_ID)
    assert "Expires" not in repr(task)  # a signed video URL is a credential
    as_dict = task.to_dict()
    assert as_dict["status"] == "SUCCEEDED"
    assert as_dict["video_url"] == task.video_url
    json.dumps(as_dict)


def test_cancel_posts_without_body():
    dashscope = ScriptedDashScope(answer(200, {"request_id": "cancel-req"}))
    assert make_client(dashscope).cancel_task(TASK_ID) is None
    (request,) = dashscope.requests
    assert request.method == "POST"
    assert str(request.url) == f"https://dashscope.test/api/v1/tasks/{TASK_ID}/cancel"
    assert request.content == b""


def test_cancel_of_an_already_canceled_task_succeeds():
    canceled = {"request_id": "q", "output": {"task_id": TASK_ID, "task_status": "CANCELED"}}
    dashscope = ScriptedDashScope(error_answer(400, "UnsupportedOperation"), answer(200, canceled))
    make_client(dashscope).cancel_task(TASK_ID)
    assert [request.method for request in dashscope.requests] == ["POST", "GET"]


def test_cancel_of_a_running_task_is_rejected():
    running = {"request_id": "q", "output": {"task_id": TASK_ID, "task_status": "RUNNING"}}
    dashscope = ScriptedDashScope(error_answer(400, "UnsupportedOperation"), answer(200, running))
    with pytest.raises(RejectedError) as caught:
        make_client(dashscope).cancel_task(TASK_ID)
    assert caught.value.code == "UnsupportedOperation"
    assert caught.value.http_status == 409


def test_list_sends_the_documented_query_and_parses_the_page():
    dashscope = ScriptedDashScope(answer(200, LIST_ANSWER))
    page = make_client(dashscope).list_tasks(
        start_time=datetime(2026, 1, 22, 0, 0, 0),
        end_time=datetime(2026, 1, 22, 23, 59, 59),
        model_name="wan2.6-i2v-flash",
        status=TaskStatus.SUCCEEDED,
        page_no=1,
        page_size=2,
    )
    (request,) = dashscope.requests
    assert request.method == "GET"
    assert request.url.path == "/api/v1/tasks"
    assert dict(request.url.params) == {
        "page_no": "1",
        "page_size": "2",
        "start_time": "20260122000000",
        "end_time": "20260122235959",
        "model_name": "wan2.6-i2v-flash",
        "status": "SUCCEEDED",
    }
    assert (page.total, page.total_page, page.page_no, page.page_size, page.request_id) == (11, 6, 1, 2, "list-req-1")
    (summary,) = page.tasks
    assert summary.task_id == TASK_ID
    assert summary.status == "SUCCEEDED"
    assert summary.model_name == "wan2.6-i2v-flash"
    assert summary.request_id == "2794c7a3-fe8c-4dd4-a1b7-xxxxxx"
    assert summary.created_at == datetime(2026, 1, 22, 15, 24, 46, 527000, tzinfo=UTC)


def test_list_time_filters_are_on_dashscope_clock():
    dashscope = ScriptedDashScope(answer(200, {"request_id": "r", "data": []}))
    make_client(dashscope).list_tasks(
        start_time=datetime(2026, 1, 22, 0, 0, 0, tzinfo=UTC), end_time=datetime(2026, 1, 22, 16, 30, 5, tzinfo=UTC)
    )
    params = dashscope.requests[0].url.params
    assert (params["start_time"], params["end_time"]) == ("20260122080000", "20260123003005")


def test_list_without_filters_sends_only_paging():
    dashscope = ScriptedDashScope(answer(200, {"request_id": "r", "data": [], "total": 0}))
    page = make_client(dashscope).list_tasks()
    assert dict(dashscope.requests[0].url.params) == {"page_no": "1", "page_size": "10"}
    assert page.tasks == ()
    assert page.total == 0


def test_dashscope_time_parsing():
    assert parse_dashscope_time("2026-01-22 23:24:46.527") == datetime(2026, 1, 22, 23, 24, 46, 527000)
    assert parse_dashscope_time("2026-01-22 23:24:46") == datetime(2026, 1, 22, 23, 24, 46)
    assert parse_dashscope_time("") is None
    with pytest.raises(ValueError, match="Unrecognised"):
        parse_dashscope_time("22/01/2026")


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

# (DashScope status, DashScope code, class raised, status of wanflow's reply)
ERROR_ANSWERS = [
    (400, "InvalidParameter", RejectedError, 400),
    (400, "InvalidURL", RejectedError, 400),
    (400, "DataInspectionFailed", RejectedError, 400),
    (400, "IPInfringementSuspect", RejectedError, 400),
    (400, "UnsupportedOperation", RejectedError, 409),
    (400, "Arrearage", RejectedError, 502),
    (401, "InvalidApiKey", RejectedError, 502),
    (403, "AccessDenied", RejectedError, 502),
    (404, "ModelNotFound", RejectedError, 400),
    (429, "Throttling", ThrottledError, 429),
    (429, "Throttling.RateQuota", ThrottledError, 429),
    (429, "Throttling.AllocationQuota", ThrottledError, 429),
    (500, "InternalError", RetryLaterError, 503),
]


@pytest.mark.parametrize(("status", "code", "error_class", "api_status"), ERROR_ANSWERS)
def test_create_error_answers_raise_typed_errors(
    status: int, code: str, error_class: type[DashScopeError], api_status: int
):
    dashscope = ScriptedDashScope(error_answer(status, code, "DashScope says no"))
    with pytest.raises(DashScopeError) as caught:
        make_client(dashscope).create_task(CREATE_BODY)
    error = caught.value
    assert type(error) is error_class
    assert (error.code, error.message, error.request_id) == (code, "DashScope says no", f"req-{code}")
    assert (error.provider_http_status, error.http_status) == (status, api_status)
    assert len(dashscope.requests) == 1  # create is never retried


@pytest.mark.parametrize(("status", "code", "error_class", "api_status"), ERROR_ANSWERS)
def test_query_error_answers_raise_typed_errors(
    status: int, code: str, error_class: type[DashScopeError], api_status: int
):
    dashscope = ScriptedDashScope(*[error_answer(status, code)] * 4)
    with pytest.raises(DashScopeError) as caught:
        make_client(dashscope).get_task(TASK_ID)
    assert type(caught.value) is error_class
    assert caught.value.http_status == api_status
    expected_attempts = 4 if issubclass(error_class, RetryLaterError) else 1
    assert len(dashscope.requests) == expected_attempts


def test_bare_gateway_answers_without_dashscope_body():
    dashscope = ScriptedDashScope(httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(OutcomeUnknownError) as caught:
        make_client(dashscope).create_task(CREATE_BODY)
    assert caught.value.code == "HTTP502"
    assert "Bad Gateway" in caught.value.message

    dashscope = ScriptedDashScope(httpx.Response(503), httpx.Response(200, json=QUERY_EXPIRED_SAMPLE))
    assert make_client(dashscope).get_task("x").status is TaskStatus.UNKNOWN


def test_throttled_create_reports_retry_after():
    dashscope = ScriptedDashScope(error_answer(429, "Throttling.RateQuota", headers={"Retry-After": "3"}))
    with pytest.raises(ThrottledError) as caught:
        make_client(dashscope).create_task(CREATE_BODY)
    assert caught.value.retry_after_seconds == 3.0


def test_retry_after_as_http_date():
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    dashscope = ScriptedDashScope(error_answer(429, "Throttling", headers={"Retry-After": when}))
    with pytest.raises(ThrottledError) as caught:
        make_client(dashscope).create_task(CREATE_BODY)
    assert 20 < caught.value.retry_after_seconds <= 30


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError],
)
def test_create_without_answer_after_sending_is_outcome_unknown(failure: type[httpx.RequestError]):
    dashscope = ScriptedDashScope(raises(failure))
    with pytest.raises(OutcomeUnknownError) as caught:
        make_client(dashscope).create_task(CREATE_BODY)
    assert caught.value.code == "NoResponse"
    assert caught.value.http_status == 504
    assert len(dashscope.requests) == 1


@pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
def test_create_that_never_left_is_retry_later(failure: type[httpx.RequestError]):
    dashscope = ScriptedDashScope(raises(failure, "[Errno 111] Connection refused"))
    with pytest.raises(RetryLaterError) as caught:
        make_client(dashscope).create_task(CREATE_BODY)
    assert type(caught.value) is RetryLaterError
    assert caught.value.code == "ConnectionFailed"
    assert len(dashscope.requests) == 1


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", json.dumps({"request_id": "r", "output": {"task_status": "PENDING"}}).encode()],
)
def test_create_with_an_unreadable_success_is_outcome_unknown(body: bytes):
    dashscope = ScriptedDashScope(httpx.Response(200, content=body))
    with pytest.raises(OutcomeUnknownError) as caught:
        make_client(dashscope).create_task(CREATE_BODY)
    assert caught.value.code == "InvalidResponse"


def test_query_with_an_unrecognised_status_is_retried_then_retry_later():
    weird = {"request_id": "r", "output": {"task_id": TASK_ID, "task_status": "SUSPENDED"}}
    dashscope = ScriptedDashScope(*[answer(200, weird)] * 2)
    with pytest.raises(RetryLaterError) as caught:
        make_client(dashscope, max_attempts=2).get_task(TASK_ID)
    assert caught.value.code == "InvalidResponse"
    assert "SUSPENDED" in caught.value.message


# ------------------------------------------------------------------------------------------------
# Retries
# ------------------------------------------------------------------------------------------------


def test_get_task_retries_a_server_error_with_jittered_backoff():
    sleeps = Sleeps()
    dashscope = ScriptedDashScope(error_answer(500, "InternalError"), answer(200, QUERY_SUCCEEDED_SAMPLE))
    task = make_client(dashscope, sleeps, backoff_base_seconds=0.5).get_task(TASK_ID)
    assert task.status is TaskStatus.SUCCEEDED
    assert len(dashscope.requests) == 2
    (delay,) = sleeps
    assert 0 <= delay <= 0.5


def test_get_task_can_be_asked_once_without_retrying():
    sleeps = Sleeps()
    dashscope = ScriptedDashScope(
        error_answer(429, "Throttling.RateQuota", headers={"Retry-After": "2"}), answer(200, QUERY_SUCCEEDED_SAMPLE)
    )
    with pytest.raises(ThrottledError) as throttled:
        make_client(dashscope, sleeps).get_task(TASK_ID, attempts=1)
    assert len(dashscope.requests) == 1 and sleeps == [] and throttled.value.retry_after_seconds == 2.0


def test_get_task_honours_retry_after_when_throttled():
    sleeps = Sleeps()
    dashscope = ScriptedDashScope(
        error_answer(429, "Throttling.RateQuota", headers={"Retry-After": "2"}), answer(200, QUERY_SUCCEEDED_SAMPLE)
    )
    assert make_client(dashscope, sleeps).get_task(TASK_ID).status is TaskStatus.SUCCEEDED
    assert sleeps == [2.0]


def test_get_task_gives_up_after_max_attempts_with_growing_capped_delays():
    sleeps = Sleeps()
    dashscope = ScriptedDashScope(*[error_answer(503, "ServiceUnavailable")] * 5)
    client = make_client(
        dashscope, sleeps, max_attempts=5, backoff_base_seconds=0.5, backoff_cap_seconds=2.0, rng=UpperBoundRandom()
    )
    with pytest.raises(RetryLaterError):
        client.get_task(TASK_ID)
    assert len(dashscope.requests) == 5
    assert sleeps == [0.5, 1.0, 2.0, 2.0]


def test_retry_after_longer_than_the_cap_is_left_to_the_caller():
    sleeps = Sleeps()
    dashscope = ScriptedDashScope(error_answer(429, "Throttling", headers={"Retry-After": "60"}))
    with pytest.raises(ThrottledError) as caught:
        make_client(dashscope, sleeps, backoff_cap_seconds=8.0).get_task(TASK_ID)
    assert caught.value.retry_after_seconds == 60.0
    assert sleeps == []
    assert len(dashscope.requests) == 1


def test_get_task_retries_a_read_timeout():
    sleeps = Sleeps()
    dashscope = ScriptedDashScope(raises(httpx.ReadTimeout), answer(200, QUERY_EXPIRED_SAMPLE))
    assert make_client(dashscope, sleeps).get_task("x").status is TaskStatus.UNKNOWN
    assert len(sleeps) == 1


def test_rejections_are_not_retried():
    sleeps = Sleeps()
    dashscope = ScriptedDashScope(error_answer(401, "InvalidApiKey"))
    with pytest.raises(RejectedError):
        make_client(dashscope, sleeps).get_task(TASK_ID)
    assert sleeps == []


def test_cancel_and_list_are_retried():
    dashscope = ScriptedDashScope(
        error_answer(500, "InternalError"),
        answer(200, {"request_id": "c"}),
        raises(httpx.ConnectError),
        answer(200, LIST_ANSWER),
    )
    client = make_client(dashscope)
    client.cancel_task(TASK_ID)
    assert client.list_tasks().total == 11
    assert len(dashscope.requests) == 4


def test_create_is_never_retried():
    sleeps = Sleeps()
    dashscope = ScriptedDashScope(error_answer(500, "InternalError"))
    with pytest.raises(RetryLaterError):
        make_client(dashscope, sleeps, max_attempts=4).create_task(CREATE_BODY)
    assert len(dashscope.requests) == 1
    assert sleeps == []


# ------------------------------------------------------------------------------------------------
# Secrets and payloads stay out of errors and logs
# ------------------------------------------------------------------------------------------------

EVERY_FAILURE: list[tuple[str, Step]] = [
    ("create", raises(httpx.ConnectError, "[Errno 111] Connection refused")),
    ("create", raises(httpx.ConnectTimeout, "timed out")),
    ("create", raises(httpx.ReadTimeout, "timed out")),
    ("create", raises(httpx.RemoteProtocolError, "Server disconnected without sending a response.")),
    ("create", httpx.Response(200, content=b"garbage")),
    ("create", httpx.Response(502, text="Bad Gateway")),
    ("create", error_answer(401, "InvalidApiKey", f"Invalid API-key provided: {API_KEY}")),
    ("create", error_answer(400, "InvalidParameter", f"img_url {DATA_URI} is not a valid image")),
    ("create", error_answer(429, "Throttling.RateQuota", "Requests rate limit exceeded")),
    ("create", error_answer(500, "InternalError", f"key={API_KEY}")),
    ("query", raises(httpx.ReadTimeout, "timed out")),
    ("query", answer(200, {"output": {}})),
    ("query", error_answer(403, "AccessDenied", f"Bearer {API_KEY} denied")),
    ("cancel", error_answer(400, "UnsupportedOperation", "not pending")),
    ("list", error_answer(400, "InvalidParameter", "bad start_time")),
]


def _run(client: DashScopeClient, operation: str) -> None:
    if operation == "create":
        client.create_task({**CREATE_BODY, "input": {**CREATE_BODY["input"], "img_url": DATA_URI}})
    elif operation == "query":
        client.get_task(TASK_ID)
    elif operation == "cancel":
        client.cancel_task(TASK_ID)
    else:
        client.list_tasks()


@pytest.mark.parametrize(("operation", "failure"), EVERY_FAILURE)
def test_api_key_and_data_uri_never_leak(operation: str, failure: Step, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    running = answer(200, {"request_id": "q", "output": {"task_id": TASK_ID, "task_status": "RUNNING"}})
    client = make_client(ScriptedDashScope(failure, running), max_attempts=1)
    with pytest.raises(DashScopeError) as caught:
        _run(client, operation)
    error = caught.value
    exposed = [
        str(error),
        repr(error),
        error.message,
        json.dumps(error.to_dict()),
        "".join(traceback.format_exception(error)),
        caplog.text,
        repr(client),
    ]
    base64_payload = DATA_URI.split(",", 1)[1]
    for text in exposed:
        assert API_KEY not in text
        assert base64_payload[:100] not in text
    assert caplog.records, "the failure should have been logged"


def test_successful_create_logs_no_body(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    client = make_client(ScriptedDashScope(answer(200, CREATE_ANSWER_HTTP_SAMPLE)))
    client.create_task({**CREATE_BODY, "input": {**CREATE_BODY["input"], "img_url": DATA_URI}})
    assert "7277e20e-aa01-4709-xxxxxxxx" in caplog.text
    assert API_KEY not in caplog.text
    assert "base64" not in caplog.text
    assert CREATE_BODY["input"]["prompt"] not in caplog.text


def test_redact_text():
    redacted = redact_text(f"bad {DATA_URI} with {API_KEY}", secrets=(API_KEY,))
    payload_chars = len(DATA_URI) - len("data:image/png;base64,")
    assert redacted == f"bad data:image/png;base64,<{payload_chars} chars> with <redacted>"
    assert len(redact_text("x" * 5000)) < 600


def test_client_refuses_bad_configuration():
    with pytest.raises(ValueError, match="http"):
        DashScopeClient("dashscope.aliyuncs.com", API_KEY)
    with pytest.raises(ValueError, match="API key is empty") as caught:
        DashScopeClient(BASE_URL, " ")
    assert API_KEY not in str(caught.value)


# ------------------------------------------------------------------------------------------------
# One client per process
# ------------------------------------------------------------------------------------------------


def test_shared_client_is_reused_per_base_url_and_key():
    clear_shared_clients()
    try:
        first = shared_client(BASE_URL, API_KEY)
        assert shared_client(BASE_URL + "/", API_KEY) is first
        rotated = shared_client(BASE_URL, API_KEY + "-rotated")
        assert rotated is not first
        assert shared_client(BASE_URL, API_KEY + "-rotated") is rotated
        other_region = shared_client("https://dashscope-us.aliyuncs.com/api/v1", API_KEY)
        assert other_region is not rotated
        assert API_KEY not in repr(rotated)
    finally:
        clear_shared_clients()


def test_client_is_a_context_manager():
    dashscope = ScriptedDashScope(answer(200, QUERY_EXPIRED_SAMPLE))
    with make_client(dashscope) as client:
        client.get_task("x")
    with pytest.raises(RuntimeError):
        client.get_task("x")
