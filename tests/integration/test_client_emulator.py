"""The DashScope client against the DashScope emulator over real loopback HTTP.

The emulator runs on a manual clock, so task lifecycles, rate limits and expiry move only when a test says so;
the client's retry sleeps are recorded instead of slept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from wanflow.dashscope import (
    DashScopeClient,
    OutcomeUnknownError,
    RejectedError,
    RetryLaterError,
    TaskInfo,
    TaskStatus,
    ThrottledError,
)
from wanflow.errors import failure_reason_for_task
from wanflow_tools.emulator import Emulator
from wanflow_tools.testing import ManualClock, image_data_uri

API_KEY = "sk-emulator-SECRET-91c0d2b7"
START_EPOCH = 1_769_095_486.0  # 2026-01-22 15:24:46 UTC
PENDING_SECONDS = 2.0
RUNNING_SECONDS = 3.0
MODEL = "wanx2.1-i2v-turbo"  # the shortest, smallest videos: 3 s at 480P, silent


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


IMAGE = image_data_uri(320, 240)


def create_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "input": {"prompt": "a calm blue sky", "img_url": IMAGE},
        "parameters": {"resolution": "480P", "duration": 3, "prompt_extend": False},
    }
    body.update(overrides)
    return body


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START_EPOCH)


@pytest.fixture
def emulator_defaults(clock: ManualClock) -> dict[str, Any]:
    """Emulators on the manual clock, requiring this module's key, with its timings."""
    return {
        "api_key": API_KEY,
        "pending_seconds": PENDING_SECONDS,
        "running_seconds": RUNNING_SECONDS,
        "clock": clock,
        "render_workers": 1,
    }


@pytest.fixture
def emulator(start_emulator: Callable[..., Emulator]) -> Emulator:
    return start_emulator()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(emulator: Emulator, sleeps: Sleeps) -> Iterator[DashScopeClient]:
    with DashScopeClient(emulator.base_url, API_KEY, timeout=5.0, sleep=sleeps) as dashscope:
        yield dashscope


def emulator_task_count(emulator: Emulator) -> int:
    """Tasks the emulator holds, as its control endpoint reports them."""
    answer = httpx.get(f"{emulator.root_url}/_emulator/tasks", timeout=5.0)
    answer.raise_for_status()
    return len(answer.json()["tasks"])


def set_faults(emulator: Emulator, faults: list[dict[str, Any]]) -> None:
    httpx.post(f"{emulator.root_url}/_emulator/faults", json=faults, timeout=5.0).raise_for_status()


def poll_until_terminal(client: DashScopeClient, task_id: str, *, within_seconds: float = 60.0) -> TaskInfo:
    """Polls like a real caller does, until the task ends (the emulator renders the video in real time)."""
    waiter = threading.Event()
    deadline = time.monotonic() + within_seconds
    while True:
        task = client.get_task(task_id)
        if task.status.is_terminal or time.monotonic() > deadline:
            return task
        waiter.wait(0.05)


# ------------------------------------------------------------------------------------------------
# The lifecycle of a task
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_task_runs_to_success_and_its_video_downloads(client: DashScopeClient, clock: ManualClock):
    created = client.create_task(create_body())
    assert created.status is TaskStatus.PENDING
    assert created.request_id

    assert client.get_task(created.task_id).status is TaskStatus.PENDING
    clock.advance(PENDING_SECONDS)
    running = client.get_task(created.task_id)
    assert running.status is TaskStatus.RUNNING
    assert running.submitted_at == datetime(2026, 1, 22, 23, 24, 46)  # the emulator keeps DashScope's UTC+8 clock

    clock.advance(RUNNING_SECONDS)
    done = poll_until_terminal(client, created.task_id)
    assert done.status is TaskStatus.SUCCEEDED
    assert done.video_url is not None
    assert done.orig_prompt == "a calm blue sky"
    assert done.usage["video_count"] == 1
    assert done.ended_at is not None and done.ended_at >= done.scheduled_at >= done.submitted_at

    video = httpx.get(done.video_url, timeout=10.0)
    assert video.status_code == 200
    assert video.content[4:8] == b"ftyp"  # an MP4


def test_failed_task_reports_dashscope_code(client: DashScopeClient, emulator: Emulator, clock: ManualClock):
    set_faults(emulator, [{"on": "task", "fail_code": "DataInspectionFailed"}])
    created = client.create_task(create_body())
    clock.advance(PENDING_SECONDS)
    client.get_task(created.task_id)  # starts it RUNNING
    clock.advance(RUNNING_SECONDS)

    failed = client.get_task(created.task_id)
    assert failed.status is TaskStatus.FAILED
    assert failed.code == "DataInspectionFailed"
    assert failed.message
    assert failure_reason_for_task(failed.status, failed.code, failed.message).code == "DataInspectionFailed"


def test_task_expires_to_unknown(client: DashScopeClient, clock: ManualClock):
    created = client.create_task(create_body())
    clock.advance(86_400)
    expired = client.get_task(created.task_id)
    assert expired.status is TaskStatus.UNKNOWN
    assert failure_reason_for_task(expired.status, expired.code, expired.message).code == "TaskExpired"


def test_cancel_a_pending_task(client: DashScopeClient):
    created = client.create_task(create_body())
    client.cancel_task(created.task_id)
    assert client.get_task(created.task_id).status is TaskStatus.CANCELED
    client.cancel_task(created.task_id)  # already canceled: the wanted state, not an error


def test_cancel_a_running_task_is_refused(client: DashScopeClient, emulator: Emulator, clock: ManualClock):
    set_faults(emulator, [{"on": "task", "fail_code": "InternalError"}])  # no video to render for this test
    created = client.create_task(create_body())
    clock.advance(PENDING_SECONDS)
    assert client.get_task(created.task_id).status is TaskStatus.RUNNING

    with pytest.raises(RejectedError) as caught:
        client.cancel_task(created.task_id)
    assert caught.value.code == "UnsupportedOperation"
    assert caught.value.http_status == 409


def test_list_pages_and_filters(client: DashScopeClient, clock: ManualClock):
    first = client.create_task(create_body())
    clock.advance(1.0)  # the model allows 2 creates per second
    second = client.create_task(create_body())
    clock.advance(1.0)
    third = client.create_task(create_body())
    client.cancel_task(second.task_id)

    window = {
        "start_time": datetime.fromtimestamp(START_EPOCH - 60, UTC),
        "end_time": datetime.fromtimestamp(START_EPOCH + 60, UTC),
    }
    page_one = client.list_tasks(**window, page_size=2)
    assert (page_one.total, page_one.total_page, page_one.page_no, page_one.page_size) == (3, 2, 1, 2)
    assert [task.task_id for task in page_one.tasks] == [third.task_id, second.task_id]  # newest first
    assert page_one.tasks[0].model_name == MODEL
    assert page_one.tasks[0].request_id == third.request_id
    assert page_one.tasks[0].created_at == datetime.fromtimestamp(START_EPOCH + 2, UTC)

    page_two = client.list_tasks(**window, page_size=2, page_no=2)
    assert [task.task_id for task in page_two.tasks] == [first.task_id]

    canceled = client.list_tasks(**window, status=TaskStatus.CANCELED)
    assert [task.task_id for task in canceled.tasks] == [second.task_id]
    assert client.list_tasks(**window, model_name="wan2.2-i2v-flash").total == 0

    later = client.list_tasks(
        start_time=datetime.fromtimestamp(START_EPOCH + 3600, UTC),
        end_time=datetime.fromtimestamp(START_EPOCH + 7200, UTC),
    )
    assert later.total == 0


# ------------------------------------------------------------------------------------------------
# Every error class
# ------------------------------------------------------------------------------------------------


def test_wrong_api_key_is_rejected_and_never_leaks(emulator: Emulator, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    wrong_key = "sk-wrong-SECRET-5a5a5a5a"
    with DashScopeClient(emulator.base_url, wrong_key) as client, pytest.raises(RejectedError) as caught:
        client.create_task(create_body())
    error = caught.value
    assert (error.code, error.provider_http_status, error.http_status) == ("InvalidApiKey", 401, 502)
    assert error.request_id
    for text in (str(error), repr(error), str(error.to_dict()), caplog.text):
        assert wrong_key not in text
        assert API_KEY not in text
    assert emulator_task_count(emulator) == 0


def test_invalid_parameter_is_rejected(client: DashScopeClient, emulator: Emulator):
    with pytest.raises(RejectedError) as caught:
        client.create_task(create_body(parameters={"resolution": "480P", "duration": 15}))
    assert (caught.value.code, caught.value.provider_http_status, caught.value.http_status) == (
        "InvalidParameter",
        400,
        400,
    )
    assert "duration" in caught.value.message
    assert emulator_task_count(emulator) == 0


def test_unknown_model_is_rejected(client: DashScopeClient):
    with pytest.raises(RejectedError) as caught:
        client.create_task(create_body(model="wan9.9-i2v-imaginary"))
    assert (caught.value.code, caught.value.provider_http_status) == ("ModelNotFound", 404)


def test_throttled_create_is_one_attempt(client: DashScopeClient, emulator: Emulator, sleeps: Sleeps):
    set_faults(emulator, [{"on": "create", "status": 429}])
    with pytest.raises(ThrottledError) as caught:
        client.create_task(create_body())
    assert caught.value.code == "Throttling.RateQuota"
    assert caught.value.http_status == 429
    assert sleeps == []
    assert emulator_task_count(emulator) == 0
    assert client.create_task(create_body()).status is TaskStatus.PENDING  # the fault fired once


def test_submit_rate_limit_throttles_the_third_create_in_a_second(client: DashScopeClient, emulator: Emulator):
    client.create_task(create_body())
    client.create_task(create_body())
    with pytest.raises(ThrottledError):
        client.create_task(create_body())  # wanx2.1 allows 2 submits per second; the clock stands still
    assert emulator_task_count(emulator) == 2


def test_query_server_errors_are_retried(
    client: DashScopeClient, emulator: Emulator, clock: ManualClock, sleeps: Sleeps
):
    created = client.create_task(create_body())
    set_faults(emulator, [{"on": "query", "status": 500, "times": 2}])
    assert client.get_task(created.task_id).status is TaskStatus.PENDING
    assert len(sleeps) == 2
    assert all(0 <= delay <= 8.0 for delay in sleeps)


def test_query_gives_up_after_max_attempts(emulator: Emulator, sleeps: Sleeps):
    with DashScopeClient(emulator.base_url, API_KEY, max_attempts=3, sleep=sleeps) as client:
        created = client.create_task(create_body())
        set_faults(emulator, [{"on": "query", "status": 500, "times": -1}])
        with pytest.raises(RetryLaterError) as caught:
            client.get_task(created.task_id)
    assert caught.value.code == "InternalError"
    assert len(sleeps) == 2


# ------------------------------------------------------------------------------------------------
# Create's outcome
# ------------------------------------------------------------------------------------------------


def test_create_dropped_after_accept_is_outcome_unknown_and_one_task_exists(
    client: DashScopeClient, emulator: Emulator, clock: ManualClock
):
    set_faults(emulator, [{"on": "create", "action": "drop_after_accept"}])
    with pytest.raises(OutcomeUnknownError) as caught:
        client.create_task(create_body())
    assert caught.value.code == "NoResponse"
    assert emulator_task_count(emulator) == 1
    assert emulator.store.count() == 1

    # The way out: find the task through the list API instead of creating a second one.
    found = client.list_tasks(
        start_time=datetime.fromtimestamp(clock() - 60, UTC),
        end_time=datetime.fromtimestamp(clock() + 60, UTC),
        model_name=MODEL,
    )
    assert found.total == 1
    assert client.get_task(found.tasks[0].task_id).status is TaskStatus.PENDING


def test_create_read_timeout_is_outcome_unknown(emulator: Emulator):
    set_faults(emulator, [{"on": "create", "action": "hang", "seconds": 30, "then": "close"}])
    with DashScopeClient(emulator.base_url, API_KEY, timeout=0.3) as client, pytest.raises(OutcomeUnknownError):
        client.create_task(create_body())


def test_create_with_connection_refused_is_retry_later(start_emulator: Callable[..., Emulator]):
    stopped = start_emulator()
    base_url = stopped.base_url
    stopped.stop()  # nothing listens on its port any more
    with DashScopeClient(base_url, API_KEY, timeout=2.0) as client, pytest.raises(RetryLaterError) as caught:
        client.create_task(create_body())
    assert type(caught.value) is RetryLaterError
    assert caught.value.code == "ConnectionFailed"
