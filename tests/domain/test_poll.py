"""The status step: what each DashScope answer does to the job and to the state machine's next step."""

from __future__ import annotations

from datetime import timedelta

import pytest

from wanflow.dashscope import TaskStatus
from wanflow.errors import JobErrorCode, JobFailure, RetryLaterError, ThrottledError
from wanflow.events import PollState
from wanflow.jobs import Job, JobStatus, Stage, utc_now
from wanflow.usecases.poll import check_status
from wanflow_tools.fakes import FakeWorld


def test_a_pending_task_waits_the_base_interval(world: FakeWorld, submitted: Job) -> None:
    state = check_status(world.deps, submitted.job_id, PollState(next="wait", polls=0))
    assert (state.next, state.wait_seconds, state.polls) == ("wait", 15, 1)
    assert world.jobs.get(submitted.job_id).polls == 1  # type: ignore[union-attr]


def test_a_running_task_makes_the_job_running(world: FakeWorld, submitted: Job) -> None:
    world.dashscope.set_status("task-1", TaskStatus.RUNNING, scheduled_time="2026-01-01 00:00:01.000")
    assert check_status(world.deps, submitted.job_id, PollState(next="wait", polls=3)).next == "wait"
    job = world.jobs.get(submitted.job_id)
    assert job is not None and job.status is JobStatus.RUNNING and job.polls == 4
    assert job.provider.scheduled_time == "2026-01-01 00:00:01.000"


def test_a_succeeded_task_goes_to_finalize_with_its_usage(world: FakeWorld, submitted: Job) -> None:
    world.dashscope.succeed("task-1", "https://video/1")
    state = check_status(world.deps, submitted.job_id, PollState(next="wait", polls=0))
    assert state.next == "finalize" and state.error is None
    job = world.jobs.get(submitted.job_id)
    assert job is not None and (job.status, job.stage) == (JobStatus.RUNNING, Stage.FINALIZING)
    assert job.usage == {"duration": 5, "video_count": 1}


@pytest.mark.parametrize(
    ("status", "code", "outcome", "expected_code"),
    [
        (TaskStatus.FAILED, "DataInspectionFailed", "failed", "DataInspectionFailed"),
        (TaskStatus.FAILED, None, "failed", JobErrorCode.TASK_FAILED),
        (TaskStatus.UNKNOWN, None, "failed", JobErrorCode.TASK_EXPIRED),
        (TaskStatus.CANCELED, None, "canceled", JobErrorCode.TASK_FAILED),
    ],
)
def test_a_task_that_ended_badly_goes_to_the_failure_step(
    world: FakeWorld, submitted: Job, status: TaskStatus, code: str | None, outcome: str, expected_code: str
) -> None:
    world.dashscope.set_status("task-1", status, code=code, message="it broke", request_id="req-9")
    state = check_status(world.deps, submitted.job_id, PollState(next="wait", polls=0))
    assert state.next == "fail" and state.error is not None
    assert (state.error.code, state.error.outcome) == (expected_code, outcome)
    assert state.error.provider_request_id == "req-9"
    assert "error" in state.as_state() and state.as_state()["next"] == "fail"


def test_a_throttled_query_waits_longer_and_is_never_a_failure(world: FakeWorld, submitted: Job) -> None:
    state = PollState(next="wait", polls=0)
    waits = []
    for _ in range(12):  # a throttling storm: every query refused
        world.dashscope.get_errors = [ThrottledError("slow down", code="Throttling.RateQuota")]
        state = check_status(world.deps, submitted.job_id, state)
        assert state.next == "wait" and state.error is None
        waits.append(state.wait_seconds)
    assert waits[:5] == [15, 30, 60, 120, 240] and set(waits[5:]) == {world.settings.throttled_wait_cap_seconds} == {
        300
    }
    assert state.throttled == 12 and state.as_state()["throttled"] == 12
    assert world.dashscope.query_attempts == [1] * 12  # one query per poll: refused ones count against the account
    world.dashscope.succeed("task-1", "https://video/1")
    recovered = check_status(world.deps, submitted.job_id, state)
    assert recovered.next == "finalize" and recovered.throttled == 0 and "throttled" not in recovered.as_state()


def test_an_unanswered_query_honours_retry_after(world: FakeWorld, submitted: Job) -> None:
    world.dashscope.get_errors = [RetryLaterError("busy", code="ServiceUnavailable", retry_after_seconds=42.2)]
    assert check_status(world.deps, submitted.job_id, PollState(next="wait")).wait_seconds == 43


def test_a_job_throttled_past_its_deadline_fails_as_such(world: FakeWorld, submitted: Job) -> None:
    def expire(job: Job) -> None:
        job.deadline_at = utc_now() - timedelta(seconds=1)

    world.jobs.update(submitted.job_id, expire)
    world.dashscope.get_errors = [ThrottledError("slow down", code="Throttling.RateQuota")]
    state = check_status(world.deps, submitted.job_id, PollState(next="wait"))
    assert state.next == "fail" and state.error is not None and state.error.code == JobErrorCode.DEADLINE_EXCEEDED


def test_a_job_past_its_deadline_fails(world: FakeWorld, submitted: Job) -> None:
    def expire(job: Job) -> None:
        job.deadline_at = utc_now() - timedelta(seconds=1)

    world.jobs.update(submitted.job_id, expire)
    state = check_status(world.deps, submitted.job_id, PollState(next="wait", polls=0))
    assert state.next == "fail" and state.error is not None
    assert state.error.code == JobErrorCode.DEADLINE_EXCEEDED


def test_a_job_that_ended_meanwhile_goes_to_the_failure_step_without_a_query(world: FakeWorld, submitted: Job) -> None:
    world.jobs.update(submitted.job_id, lambda job: job.advance(JobStatus.CANCELED, Stage.DONE))
    assert check_status(world.deps, submitted.job_id, PollState(next="wait", polls=0)).next == "fail"
    assert world.dashscope.queries == 0


def test_a_job_without_a_task_cannot_be_polled(world: FakeWorld, submitted: Job) -> None:
    def forget(job: Job) -> None:
        job.provider.task_id = None

    world.jobs.update(submitted.job_id, forget)
    with pytest.raises(JobFailure):
        check_status(world.deps, submitted.job_id, PollState(next="wait", polls=0))
