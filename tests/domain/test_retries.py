"""Automatic retry of provider-side task failures: a new task per attempt, at most once each, the same job keeping
its running slot, and one notification when the job ends."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from wanflow.dashscope import TaskStatus
from wanflow.errors import JobErrorCode, OutcomeUnknownError
from wanflow.events import PollState
from wanflow.jobs import Job, JobStatus, Stage, model_of, utc_now
from wanflow.usecases import ending, retries, sweep
from wanflow.usecases.cancel import cancel_job
from wanflow.usecases.finalize import finalize_job
from wanflow.usecases.poll import check_status
from wanflow.usecases.submit import create_task_step, submit_api_job
from wanflow_tools.fakes import FakeWorld, caller, fake_settings, sample_job_body

VIDEO = b"\x00\x00\x00\x18ftypmp42 a small video"


def world_with(**settings: object) -> FakeWorld:
    return FakeWorld(settings=fake_settings(**settings))


def submit(world: FakeWorld) -> Job:
    job, created = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    assert created and world.workflow.started == [job.job_id]
    return job


def run_execution(world: FakeWorld, job_id: str, outcomes: list[str], *, max_steps: int = 100) -> list[PollState]:
    """The job's execution as Step Functions runs it (statemachine/job.asl.json), without the waits: each task the
    execution creates ends as the next of `outcomes` says ("InternalError", "DataInspectionFailed"... a FAILED
    task with that code, or "SUCCEEDED"). Returns every step's result."""
    remaining = list(outcomes)
    seen: set[str] = set()
    steps: list[PollState] = []
    state = PollState(next="submit")
    for _ in range(max_steps):
        if state.next == "submit":
            state = create_task_step(world.deps, job_id, state)
        elif state.next == "wait":
            job = world.jobs.get(job_id)
            assert job is not None
            task_id = job.provider.task_id
            if task_id is not None and task_id not in seen:
                seen.add(task_id)
                outcome = remaining.pop(0)
                if outcome == "SUCCEEDED":
                    world.dashscope.succeed(task_id, f"https://video/{task_id}")
                    world.objects.videos[f"https://video/{task_id}"] = VIDEO
                else:
                    world.dashscope.set_status(task_id, TaskStatus.FAILED, code=outcome, message=f"{outcome} text")
            state = check_status(world.deps, job_id, state)
        elif state.next == "finalize":
            finalize_job(world.deps, job_id, state.video)
            return steps
        else:
            ending.record_failure(world.deps, job_id, state.error)
            return steps
        steps.append(state)
    raise AssertionError("the execution did not end")


def test_a_provider_failure_is_retried_as_a_new_task_and_the_job_succeeds_with_one_notification() -> None:
    world = world_with()
    job = submit(world)
    steps = run_execution(world, job.job_id, ["InternalError", "SUCCEEDED"])

    ended = world.jobs.get(job.job_id)
    assert ended is not None and ended.status is JobStatus.SUCCEEDED
    assert world.dashscope.creates == 2 and ended.provider.task_id == "task-2"
    assert [(a.task_id, a.status, a.code) for a in ended.attempts] == [
        ("task-1", "FAILED", "InternalError"),
        ("task-2", "SUCCEEDED", None),
    ]
    assert all(a.ended is not None and a.ended >= a.started for a in ended.attempts)
    assert ended.attempts[0].message == "InternalError text"
    assert [event["type"] for event in world.notifier.for_job(job.job_id)] == ["job.succeeded"]
    event_attempts = world.notifier.for_job(job.job_id)[0]["job"]["attempts"]
    assert [a["task_id"] for a in event_attempts] == ["task-1", "task-2"]
    # The retry went back to the create step after the first backoff (30 s, give or take 20%).
    retry = next(step for step in steps if step.next == "submit")
    assert 24 <= retry.wait_seconds <= 36
    assert world.workflow.started == [job.job_id]  # one execution: the same job, never granted again


def test_a_provider_failure_every_time_ends_failed_after_one_plus_provider_retries_attempts() -> None:
    world = world_with(provider_retries=2)
    job = submit(world)
    steps = run_execution(world, job.job_id, ["InternalError", "InternalError.Algo", "RequestTimeOut"])

    ended = world.jobs.get(job.job_id)
    assert ended is not None and ended.status is JobStatus.FAILED
    assert world.dashscope.creates == 3
    assert [a.code for a in ended.attempts] == ["InternalError", "InternalError.Algo", "RequestTimeOut"]
    assert ended.error is not None and ended.error.code == "RequestTimeOut"  # the last attempt's
    assert [event["type"] for event in world.notifier.for_job(job.job_id)] == ["job.failed"]
    waits = [step.wait_seconds for step in steps if step.next == "submit"]
    assert len(waits) == 2 and 24 <= waits[0] <= 36 and 96 <= waits[1] <= 144  # 30 s, then 4 times longer
    assert world.slots.holders(model_of(ended)) == set()  # the ending freed its slot


@pytest.mark.parametrize("code", ["DataInspectionFailed", "InvalidParameter", "Arrearage", "SomethingNew"])
def test_a_failure_that_is_not_dashscopes_own_is_not_retried(code: str) -> None:
    world = world_with()
    job = submit(world)
    run_execution(world, job.job_id, [code])
    ended = world.jobs.get(job.job_id)
    assert ended is not None and ended.status is JobStatus.FAILED and ended.error is not None
    assert ended.error.code == code and world.dashscope.creates == 1
    assert [(a.task_id, a.status, a.code) for a in ended.attempts] == [("task-1", "FAILED", code)]
    assert len(world.notifier.for_job(job.job_id)) == 1


def test_provider_retries_0_turns_retries_off() -> None:
    world = world_with(provider_retries=0)
    job = submit(world)
    run_execution(world, job.job_id, ["InternalError"])
    ended = world.jobs.get(job.job_id)
    assert ended is not None and ended.status is JobStatus.FAILED and world.dashscope.creates == 1
    assert ended.error is not None and ended.error.code == "InternalError" and len(ended.attempts) == 1


def fail_first_task(world: FakeWorld) -> tuple[Job, PollState]:
    """A job whose first task DashScope failed with InternalError, seen by the status step: it is retrying."""
    job = submit(world)
    world.run_create_step(job.job_id)
    world.dashscope.set_status("task-1", TaskStatus.FAILED, code="InternalError", message="boom")
    state = check_status(world.deps, job.job_id, PollState(next="wait", polls=3))
    retrying = world.jobs.get(job.job_id)
    assert retrying is not None
    return retrying, state


def test_a_retrying_job_is_pending_accepted_keeps_its_slot_and_shows_its_failed_attempt(world: FakeWorld) -> None:
    job, state = fail_first_task(world)
    assert (state.next, state.polls) == ("submit", 4)
    assert (job.status, job.stage) == (JobStatus.PENDING, Stage.ACCEPTED)
    assert job.provider.task_id is None and job.provider.task_status is None and job.create_attempted_at is None
    assert world.slots.holders(model_of(job)) == {job.job_id}
    # Every slot of the model is taken while it retries: a job submitted now waits in the queue.
    others = [
        submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())[0]
        for _ in range(world.settings.slots_for(model_of(job)))
    ]
    statuses = [stored.status for other in others if (stored := world.jobs.get(other.job_id)) is not None]
    assert statuses[-1] is JobStatus.QUEUED and statuses.count(JobStatus.QUEUED) == 1  # one slot is the retry's
    view = job.public_view()
    assert view["status"] == "PENDING" and len(view["attempts"]) == 1
    attempt = view["attempts"][0]
    assert (attempt["task_id"], attempt["status"], attempt["code"], attempt["message"]) == (
        "task-1",
        "FAILED",
        "InternalError",
        "boom",
    )
    assert attempt["started"].endswith("Z") and attempt["ended"].endswith("Z")
    assert world.notifier.events == []  # an attempt is not an ending


def test_the_create_step_makes_exactly_one_new_task_for_the_retry_however_often_it_runs(world: FakeWorld) -> None:
    job, state = fail_first_task(world)
    first = create_task_step(world.deps, job.job_id, state)
    again = create_task_step(world.deps, job.job_id, state)  # a repeated step (a Lambda retry)
    assert first.next == again.next == "wait" and world.dashscope.creates == 2
    created = world.jobs.get(job.job_id)
    assert created is not None and created.stage is Stage.SUBMITTED and created.provider.task_id == "task-2"
    assert [a.task_id for a in created.attempts] == ["task-1", "task-2"]
    assert created.attempts[1].status == "PENDING" and created.attempts[1].ended is None


def test_a_repeated_status_step_after_the_retry_goes_to_the_create_step_again_without_a_second_retry(
    world: FakeWorld,
) -> None:
    job, _ = fail_first_task(world)
    again = check_status(world.deps, job.job_id, PollState(next="wait", polls=3))
    assert again.next == "submit"
    after = world.jobs.get(job.job_id)
    assert after is not None and len(after.attempts) == 1 and after.stage is Stage.ACCEPTED


def test_the_retry_keeps_the_jobs_deadline_from_its_first_task(world: FakeWorld) -> None:
    job, state = fail_first_task(world)
    deadline = job.deadline_at
    create_task_step(world.deps, job.job_id, state)
    created = world.jobs.get(job.job_id)
    assert created is not None and deadline is not None and created.deadline_at == deadline


def test_no_retry_too_close_to_the_deadline(world: FakeWorld) -> None:
    job = submit(world)
    world.run_create_step(job.job_id)

    def nearly_due(current: Job) -> None:
        current.deadline_at = utc_now() + timedelta(minutes=30)

    world.jobs.update(job.job_id, nearly_due)
    world.dashscope.set_status("task-1", TaskStatus.FAILED, code="InternalError")
    state = check_status(world.deps, job.job_id, PollState(next="wait"))
    assert state.next == "fail" and state.error is not None and state.error.code == "InternalError"


def test_a_retry_whose_create_comes_after_the_deadline_ends_the_job_without_a_task(world: FakeWorld) -> None:
    job, state = fail_first_task(world)

    def overdue(current: Job) -> None:
        current.deadline_at = utc_now() - timedelta(seconds=1)

    world.jobs.update(job.job_id, overdue)
    assert create_task_step(world.deps, job.job_id, state).next == "fail"
    ended = world.jobs.get(job.job_id)
    assert ended is not None and ended.status is JobStatus.FAILED and ended.error is not None
    assert ended.error.code == JobErrorCode.DEADLINE_EXCEEDED and world.dashscope.creates == 1
    assert len(world.notifier.for_job(job.job_id)) == 1


def test_a_job_canceled_while_it_waits_to_retry_ends_canceled_once_without_a_new_task(world: FakeWorld) -> None:
    job, state = fail_first_task(world)
    canceled = cancel_job(world.deps, job.job_id, caller())
    assert canceled.status is JobStatus.CANCELED and world.workflow.stopped == [job.job_id]
    assert create_task_step(world.deps, job.job_id, state).next == "fail"
    assert world.dashscope.creates == 1
    assert [event["type"] for event in world.notifier.for_job(job.job_id)] == ["job.canceled"]


def test_the_sweeper_leaves_a_retrying_job_to_its_execution(world: FakeWorld) -> None:
    job, _ = fail_first_task(world)
    assert sweep.sweep(world.deps) == {}
    after = world.jobs.get(job.job_id)
    assert after is not None and (after.status, after.stage) == (JobStatus.PENDING, Stage.ACCEPTED)
    assert world.dashscope.creates == 1 and world.slots.holders(model_of(after)) == {job.job_id}


def test_the_sweeper_never_takes_a_retried_jobs_old_task_for_another_unanswered_create(world: FakeWorld) -> None:
    job, state = fail_first_task(world)
    assert world.jobs.holding_task("task-1") == job.job_id  # remembered, although the job moved on
    # The retry's own create gets no answer, and made no task: task-1 (failed, unclaimed by any current task, created
    # a moment before) is the only candidate in DashScope's list.
    world.dashscope.create_errors = [OutcomeUnknownError("no answer", code="ReadTimeout")]
    create_task_step(world.deps, job.job_id, state)
    unknown = world.jobs.get(job.job_id)
    assert unknown is not None and unknown.stage is Stage.CREATE_UNKNOWN

    def three_minutes_ago(current: Job) -> None:
        assert current.create_attempted_at is not None
        current.create_attempted_at -= timedelta(minutes=3)

    world.jobs.update(job.job_id, three_minutes_ago)
    world.dashscope.created["task-1"] -= timedelta(minutes=3)
    assert sweep.sweep(world.deps) == {"create_not_found": 1}
    ended = world.jobs.get(job.job_id)
    assert ended is not None and ended.status is JobStatus.FAILED and ended.error is not None
    assert ended.error.code == JobErrorCode.CREATE_OUTCOME_UNKNOWN and ended.provider.task_id is None
    assert world.dashscope.creates == 1 and len(world.notifier.for_job(job.job_id)) == 1


def test_the_sweeper_matches_a_retrys_unanswered_create_to_its_new_task(world: FakeWorld) -> None:
    job, state = fail_first_task(world)
    world.dashscope.create_then_drop = OutcomeUnknownError("no answer", code="ReadTimeout")
    create_task_step(world.deps, job.job_id, state)

    def three_minutes_ago(current: Job) -> None:
        assert current.create_attempted_at is not None
        current.create_attempted_at -= timedelta(minutes=3)

    world.jobs.update(job.job_id, three_minutes_ago)
    world.dashscope.created = {task: at - timedelta(minutes=3) for task, at in world.dashscope.created.items()}
    assert sweep.sweep(world.deps) == {"create_found": 1}
    found = world.jobs.get(job.job_id)
    assert found is not None and found.stage is Stage.SUBMITTED and found.provider.task_id == "task-2"
    assert [a.task_id for a in found.attempts] == ["task-1", "task-2"] and world.dashscope.creates == 2


def test_a_job_stored_before_attempts_loads_and_is_retried_with_its_task_as_the_first_attempt(
    world: FakeWorld,
) -> None:
    job = submit(world)
    world.run_create_step(job.job_id)
    stored = world.jobs.get(job.job_id)
    assert stored is not None
    document = json.loads(stored.model_dump_json())
    del document["attempts"]
    old = Job.model_validate(document)
    old.version = stored.version
    assert old.attempts == [] and old.public_view()["attempts"] == []
    world.jobs.put(old)

    world.dashscope.set_status("task-1", TaskStatus.FAILED, code="InternalError")
    assert check_status(world.deps, job.job_id, PollState(next="wait")).next == "submit"
    retrying = world.jobs.get(job.job_id)
    assert retrying is not None and [(a.task_id, a.code) for a in retrying.attempts] == [("task-1", "InternalError")]


def test_retry_waits_grow_four_fold_with_jitter_up_to_fifteen_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retries.random, "uniform", lambda low, high: 1.0)
    assert [retries.retry_wait(n, 30) for n in (1, 2, 3, 4, 5)] == [30, 120, 480, 900, 900]
    assert retries.retry_wait(1, 0) == 0
    monkeypatch.setattr(retries.random, "uniform", lambda low, high: high)
    assert retries.retry_wait(1, 30) == 36
