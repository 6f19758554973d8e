"""The sweeper: every repair it makes, and that none of them ever makes a second DashScope task."""

from __future__ import annotations

from datetime import timedelta

import pytest

from wanflow.dashscope import TaskStatus
from wanflow.errors import JobErrorCode, OutcomeUnknownError
from wanflow.jobs import Job, JobStatus, Notification, Stage
from wanflow.usecases import ending, sweep
from wanflow.usecases.intake import CreatedObject, submit_uploaded_object
from wanflow.usecases.submit import submit_api_job
from wanflow_tools.fakes import FakeWorld, caller, sample_job_body
from wanflow_tools.testing import image_bytes


def age(world: FakeWorld, job_id: str, by: timedelta) -> None:
    """Move the job's clock marks into the past, as if `by` had passed since."""

    def older(job: Job) -> None:
        job.created_at -= by
        if job.create_attempted_at is not None:
            job.create_attempted_at -= by
        if job.deadline_at is not None:
            job.deadline_at -= by

    world.jobs.update(job_id, older)
    stored = world.jobs.get(job_id)
    assert stored is not None
    stored.updated_at -= by
    world.jobs.put(stored)
    # DashScope's clock moved on too: its tasks were created that much earlier.
    world.dashscope.created = {task_id: created - by for task_id, created in world.dashscope.created.items()}


def unanswered_create(world: FakeWorld) -> Job:
    world.dashscope.create_then_drop = OutcomeUnknownError("no answer", code="ReadTimeout")
    job, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    job = world.run_create_step(job.job_id)
    assert job.stage is Stage.CREATE_UNKNOWN
    return job


def test_nothing_to_repair_counts_nothing(world: FakeWorld, submitted: Job) -> None:
    assert sweep.sweep(world.deps) == {}


def test_an_unanswered_create_is_matched_to_its_task_never_created_again(world: FakeWorld) -> None:
    job = unanswered_create(world)
    age(world, job.job_id, timedelta(minutes=3))
    assert sweep.sweep(world.deps) == {"create_found": 1}
    found = world.jobs.get(job.job_id)
    assert found is not None and found.stage is Stage.SUBMITTED and found.provider.task_id == "task-1"
    assert world.dashscope.creates == 1 and world.workflow.started == [job.job_id]


def test_a_recent_unanswered_create_waits_for_the_task_list_to_catch_up(world: FakeWorld) -> None:
    job = unanswered_create(world)
    assert sweep.sweep(world.deps) == {"waiting": 1}
    assert world.jobs.get(job.job_id).stage is Stage.CREATE_UNKNOWN  # type: ignore[union-attr]


def test_an_unanswered_create_with_no_task_fails_the_job(world: FakeWorld) -> None:
    world.dashscope.create_errors = [OutcomeUnknownError("no answer", code="ReadTimeout")]  # made no task
    job, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    world.run_create_step(job.job_id)
    age(world, job.job_id, timedelta(minutes=3))
    assert sweep.sweep(world.deps) == {"create_not_found": 1}
    failed = world.jobs.get(job.job_id)
    assert failed is not None and failed.error is not None
    assert failed.error.code == JobErrorCode.CREATE_OUTCOME_UNKNOWN
    assert world.dashscope.creates == 0 and len(world.notifier.for_job(job.job_id)) == 1
    assert job.job_id not in world.slots.holders("wan2.2-i2v-flash")  # its slot went back


def test_a_task_another_job_owns_is_never_taken(world: FakeWorld, submitted: Job) -> None:
    world.dashscope.create_errors = [OutcomeUnknownError("no answer", code="ReadTimeout")]
    lost, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    world.run_create_step(lost.job_id)
    age(world, lost.job_id, timedelta(minutes=3))
    assert sweep.sweep(world.deps) == {"create_not_found": 1}  # task-1 is the submitted job's


def test_a_job_accepted_before_the_queue_existed_gets_an_execution_that_creates_only_with_a_slot(
    world: FakeWorld,
) -> None:
    world.objects.put_bytes("intake", "incoming/a.json", b"{}", "application/json")
    world.objects.objects[("intake", "incoming/a.json")].data = (
        b'{"model": "wan2.2-i2v-flash", "input": {"prompt": "p", "img_url": "i.png"},'
        b' "parameters": {"resolution": "480P"}}'
    )
    world.objects.put_bytes("intake", "incoming/i.png", image_bytes(320, 256), "image/png")
    world.workflow.fail_starts = True
    queued = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/a.json", "v1", None, "alice"))
    assert queued is not None
    world.slots.release("wan2.2-i2v-flash", queued.job_id)  # as the old version left it: accepted, no slot
    world.workflow.fail_starts = False
    assert sweep.sweep(world.deps) == {"execution_started": 1}
    for holder in ("other-1", "other-2"):  # meanwhile the model's slots are all taken
        world.slots.claim("wan2.2-i2v-flash", holder, 2)
    assert world.run_create_step(queued.job_id).stage is Stage.ACCEPTED and world.dashscope.creates == 0
    world.slots.release("wan2.2-i2v-flash", "other-1")
    assert world.run_create_step(queued.job_id).stage is Stage.SUBMITTED and world.dashscope.creates == 1
    assert queued.job_id in world.slots.holders("wan2.2-i2v-flash")


def test_a_submitted_job_without_a_poll_loop_gets_one(world: FakeWorld) -> None:
    world.workflow.fail_starts = True
    job, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    world.workflow.fail_starts = False
    assert sweep.sweep(world.deps) == {"execution_started": 1}
    assert world.workflow.executions == {job.job_id: "RUNNING"}
    assert sweep.sweep(world.deps) == {}  # running now: nothing more to do


def test_a_job_whose_loop_ended_without_ending_it_is_driven_to_its_end(world: FakeWorld, submitted: Job) -> None:
    world.workflow.executions[submitted.job_id] = "FAILED"
    world.dashscope.succeed("task-1", "https://video/1")
    world.objects.videos["https://video/1"] = b"video"
    assert sweep.sweep(world.deps) == {"driven": 1}
    job = world.jobs.get(submitted.job_id)
    assert job is not None and job.status is JobStatus.SUCCEEDED
    assert len(world.notifier.for_job(job.job_id)) == 1


def test_a_job_past_its_deadline_ends_failed(world: FakeWorld, submitted: Job) -> None:
    age(world, submitted.job_id, timedelta(hours=26))
    assert sweep.sweep(world.deps) == {"deadline": 1}
    job = world.jobs.get(submitted.job_id)
    assert job is not None and job.error is not None and job.error.code == JobErrorCode.DEADLINE_EXCEEDED


def test_a_notification_whose_publisher_died_is_published_once_after_a_grace_period(
    world: FakeWorld, submitted: Job
) -> None:
    world.notifier.fail = True
    with pytest.raises(RuntimeError):
        ending.end_failed(world.deps, submitted.job_id, "TaskFailed", "x")
    world.notifier.fail = False
    assert sweep.sweep(world.deps) == {}  # the publisher may still be at work
    age(world, submitted.job_id, timedelta(minutes=11))
    assert sweep.sweep(world.deps) == {"notification_published": 1}
    assert len(world.notifier.for_job(submitted.job_id)) == 1
    assert world.jobs.get(submitted.job_id).notification is Notification.PUBLISHED  # type: ignore[union-attr]
    assert sweep.sweep(world.deps) == {}


def test_one_job_that_cannot_be_repaired_does_not_stop_the_others(world: FakeWorld) -> None:
    world.workflow.fail_starts = True
    first, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    second, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    world.run_create_step(first.job_id)
    world.run_create_step(second.job_id)
    world.workflow.fail_starts = False
    broken = world.jobs.get(first.job_id)
    assert broken is not None
    broken.stage = Stage.FINALIZING  # finalizing, but the task is still PENDING: the drive fails
    world.jobs.put(broken)
    world.workflow.executions[first.job_id] = "FAILED"
    world.dashscope.set_status("task-1", TaskStatus.PENDING)
    counts = sweep.sweep(world.deps)
    assert counts.get("execution_started") == 1
    assert world.workflow.executions[second.job_id] == "RUNNING"
