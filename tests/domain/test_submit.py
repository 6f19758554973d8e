"""Submitting from the API: validation before anything is stored, a valid job queued at once whatever DashScope's
state, one task per job from its execution's create step, throttling waited out in the state machine."""

from __future__ import annotations

import pytest

from wanflow.callers import uploads_prefix
from wanflow.errors import (
    Conflict,
    InvalidRequest,
    OutcomeUnknownError,
    QueueUnavailable,
    RejectedError,
    ThrottledError,
)
from wanflow.events import PollState
from wanflow.jobs import JobStatus, Stage
from wanflow.usecases.submit import create_task_step, submit_api_job
from wanflow_tools.fakes import FakeWorld, caller
from wanflow_tools.fakes import sample_job_body as job_body


def test_a_valid_job_is_queued_at_once_and_its_execution_makes_one_task(world: FakeWorld) -> None:
    job, created = submit_api_job(world.deps, job_body(), idempotency_key=None, caller=caller())
    assert created and job.status is JobStatus.QUEUED
    assert world.workflow.started == [job.job_id] and world.dashscope.creates == 0
    created_job = world.run_create_step(job.job_id)
    assert (created_job.status, created_job.stage) == (JobStatus.PENDING, Stage.SUBMITTED)
    assert created_job.provider.task_id == "task-1" and world.dashscope.creates == 1


def test_a_data_uri_image_is_stored_and_the_task_gets_a_presigned_url(world: FakeWorld) -> None:
    job, _ = submit_api_job(world.deps, job_body(), idempotency_key=None, caller=caller())
    world.run_create_step(job.job_id)
    key = f"{uploads_prefix('alice')}{job.job_id}/image.png"  # under the owner's own prefix
    assert job.request["input"]["img_url"] == f"s3://intake/{key}"
    assert ("intake", key) in world.objects.objects
    assert world.dashscope.bodies[0]["input"]["img_url"].startswith(f"memory://intake/{key}")


def test_invalid_input_is_refused_before_anything_is_stored_or_paid(world: FakeWorld) -> None:
    with pytest.raises(InvalidRequest) as refused:
        submit_api_job(
            world.deps,
            job_body(parameters={"resolution": "4K", "duration": 99}),
            idempotency_key=None,
            caller=caller(),
        )
    assert {error.field for error in refused.value.errors} == {"parameters.resolution", "parameters.duration"}
    assert world.dashscope.creates == 0 and world.jobs.all() == []


def test_a_missing_s3_image_is_refused_naming_the_field(world: FakeWorld) -> None:
    body = job_body(input={"prompt": "p", "img_url": "s3://intake/uploads/missing.png"})
    with pytest.raises(InvalidRequest) as refused:
        submit_api_job(world.deps, body, idempotency_key=None, caller=caller())
    assert [error.field for error in refused.value.errors] == ["input.img_url"]
    assert world.dashscope.creates == 0


def test_the_same_idempotency_key_and_body_give_the_same_job_and_no_second_task(world: FakeWorld) -> None:
    first, created = submit_api_job(world.deps, job_body(), idempotency_key="k1", caller=caller())
    again, created_again = submit_api_job(world.deps, job_body(), idempotency_key="k1", caller=caller())
    assert created and not created_again
    world.run_started_create_steps()
    assert again.job_id == first.job_id and world.dashscope.creates == 1 and len(world.jobs.all()) == 1


def test_the_same_key_from_another_caller_is_another_job(world: FakeWorld) -> None:
    first, _ = submit_api_job(world.deps, job_body(), idempotency_key="k1", caller=caller())
    other, created = submit_api_job(world.deps, job_body(), idempotency_key="k1", caller=caller("bob"))
    assert created and other.job_id != first.job_id


def test_the_same_key_with_another_body_is_a_conflict(world: FakeWorld) -> None:
    submit_api_job(world.deps, job_body(), idempotency_key="k1", caller=caller())
    with pytest.raises(Conflict):
        submit_api_job(world.deps, job_body(metadata={"other": "body"}), idempotency_key="k1", caller=caller())
    assert len(world.jobs.all()) == 1


def test_dashscope_being_throttled_or_busy_never_refuses_a_job(world: FakeWorld) -> None:
    world.dashscope.create_errors = [ThrottledError("slow down", code="Throttling.RateQuota", retry_after_seconds=30)]
    job, created = submit_api_job(world.deps, job_body(), idempotency_key="k1", caller=caller())
    assert created and job.status is JobStatus.QUEUED
    state = create_task_step(world.deps, job.job_id, PollState(next="submit"))
    assert (state.next, state.wait_seconds) == ("submit", 30)  # DashScope's Retry-After, waited in the state machine
    assert create_task_step(world.deps, job.job_id, state).next == "wait" and world.dashscope.creates == 1


def test_a_rejected_create_ends_the_job_failed_with_dashscopes_code_and_one_notification(world: FakeWorld) -> None:
    world.dashscope.create_errors = [RejectedError("no money", code="Arrearage", http_status=402)]
    job, _ = submit_api_job(world.deps, job_body(), idempotency_key=None, caller=caller())
    assert create_task_step(world.deps, job.job_id, PollState(next="submit")).next == "fail"
    ended = world.jobs.get(job.job_id)
    assert ended is not None and ended.status is JobStatus.FAILED and ended.error is not None
    assert ended.error.code == "Arrearage" and len(world.notifier.for_job(job.job_id)) == 1


def test_an_unanswered_create_is_never_repeated(world: FakeWorld) -> None:
    world.dashscope.create_then_drop = OutcomeUnknownError("no answer", code="ReadTimeout")
    job, _ = submit_api_job(world.deps, job_body(), idempotency_key=None, caller=caller())
    state = create_task_step(world.deps, job.job_id, PollState(next="submit"))
    assert state.next == "wait"  # the loop waits; only the sweeper may decide what became of it
    stored = world.jobs.get(job.job_id)
    assert stored is not None and (stored.status, stored.stage) == (JobStatus.PENDING, Stage.CREATE_UNKNOWN)
    assert create_task_step(world.deps, job.job_id, state).next == "wait"
    assert world.dashscope.creates == 1 and world.sleeps == []


def test_a_job_whose_execution_cannot_start_is_still_accepted(world: FakeWorld) -> None:
    world.workflow.fail_starts = True
    job, created = submit_api_job(world.deps, job_body(), idempotency_key=None, caller=caller())
    assert created and job.status is JobStatus.QUEUED and world.workflow.executions == {}
    stored = world.jobs.get(job.job_id)
    assert stored is not None and stored.stage is Stage.ACCEPTED  # holds its slot: the sweeper starts it


def test_the_queue_being_unwritable_is_the_one_429(world: FakeWorld) -> None:
    def unavailable(job: object) -> bool:
        raise QueueUnavailable("the job queue is busy")

    world.jobs.create = unavailable  # type: ignore[method-assign]
    with pytest.raises(QueueUnavailable) as refused:
        submit_api_job(world.deps, job_body(), idempotency_key=None, caller=caller())
    assert refused.value.http_status == 429 and world.dashscope.creates == 0
