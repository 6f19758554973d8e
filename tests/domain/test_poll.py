"""The status step: what each DashScope answer does to the job and to the state machine's next step."""

from __future__ import annotations

from datetime import timedelta

import pytest

from wanflow import sealing
from wanflow.dashscope import TaskStatus
from wanflow.errors import JobErrorCode, RetryLaterError, ThrottledError
from wanflow.events import PollState
from wanflow.jobs import Job, JobStatus, Stage, utc_now
from wanflow.usecases import pacing
from wanflow.usecases.poll import check_status
from wanflow.usecases.submit import submit_api_job
from wanflow_tools.fakes import FakeWorld, caller, sample_job_body


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
    _submitted_an_hour_ago(world, submitted)
    world.dashscope.set_status("task-1", status, code=code, message="it broke", request_id="req-9")
    state = check_status(world.deps, submitted.job_id, PollState(next="wait", polls=0))
    assert state.next == "fail" and state.error is not None
    assert (state.error.code, state.error.outcome) == (expected_code, outcome)
    assert state.error.provider_request_id == "req-9"
    assert "error" in state.as_state() and state.as_state()["next"] == "fail"


def _submitted_an_hour_ago(world: FakeWorld, job: Job) -> None:
    def earlier(current: Job) -> None:
        current.submitted_at = utc_now() - timedelta(hours=1)

    world.jobs.update(job.job_id, earlier)


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


def test_a_job_whose_create_outcome_is_unknown_waits_for_the_sweeper_without_querying(
    world: FakeWorld, submitted: Job
) -> None:
    def forget(job: Job) -> None:
        job.provider.task_id = None

    world.jobs.update(submitted.job_id, forget)
    state = check_status(world.deps, submitted.job_id, PollState(next="wait", polls=0))
    assert (state.next, state.wait_seconds) == ("wait", 15) and world.dashscope.queries == 0


def test_a_granted_job_not_created_yet_goes_back_to_the_create_step(world: FakeWorld) -> None:
    job, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    assert check_status(world.deps, job.job_id, PollState(next="wait")).next == "submit"
    assert world.dashscope.queries == 0


def test_unknown_right_after_the_create_is_not_yet_a_verdict(world: FakeWorld, submitted: Job) -> None:
    world.dashscope.set_status("task-1", TaskStatus.UNKNOWN)
    state = check_status(world.deps, submitted.job_id, PollState(next="wait"))
    assert state.next == "wait" and world.jobs.get(submitted.job_id).status is JobStatus.PENDING  # type: ignore[union-attr]


def test_when_the_query_budget_has_no_turn_the_poll_waits_without_asking(world: FakeWorld, submitted: Job) -> None:
    for _ in range(200):  # fill the next few seconds of the deployment's budget
        world.limiter.reserve(pacing.QUERY_KEY, world.settings.query_budget_rps * pacing.HEADROOM, max_wait_seconds=60)
    state = check_status(world.deps, submitted.job_id, PollState(next="wait", polls=4, throttled=2))
    assert state.next == "wait" and world.dashscope.queries == 0
    assert 7 <= state.wait_seconds <= 23  # about one interval (15 s), jittered so that waiting polls spread out
    assert state.throttled == 2  # the budget being in use is not DashScope throttling us


def test_a_query_waits_for_its_turn_under_the_budget(world: FakeWorld, submitted: Job) -> None:
    rate = world.settings.query_budget_rps * pacing.HEADROOM
    world.limiter.reserve(pacing.QUERY_KEY, rate, max_wait_seconds=60)
    world.limiter.reserve(pacing.QUERY_KEY, rate, max_wait_seconds=60)
    check_status(world.deps, submitted.job_id, PollState(next="wait"))
    assert world.dashscope.queries == 1 and world.sleeps and world.sleeps[-1] > 0


def test_a_succeeded_task_hands_its_video_url_sealed_to_the_finalizer(world: FakeWorld, submitted: Job) -> None:
    url = "https://dashscope-result.example/video.mp4?Signature=secret-signature"
    world.dashscope.succeed("task-1", url)
    state = check_status(world.deps, submitted.job_id, PollState(next="wait"))
    assert state.video is not None and "secret-signature" not in state.video and "dashscope" not in state.video
    assert sealing.unseal(world.deps.seal_key(), state.video, context=submitted.job_id) == url
    with pytest.raises(sealing.SealError):  # bound to its job
        sealing.unseal(world.deps.seal_key(), state.video, context="another-job")
