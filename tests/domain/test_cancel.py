"""Cancel: at once before DashScope has the task, through DashScope while it is PENDING, refused after."""

from __future__ import annotations

import pytest

from wanflow.dashscope import TaskStatus
from wanflow.errors import Conflict, RejectedError
from wanflow.events import PollState
from wanflow.jobs import Job, JobStatus, Provider, Source, Stage
from wanflow.usecases.cancel import cancel_job
from wanflow.usecases.poll import check_status
from wanflow_tools.fakes import FakeWorld, caller


def test_a_pending_task_is_canceled_at_dashscope_and_the_loop_stopped(world: FakeWorld, submitted: Job) -> None:
    job = cancel_job(world.deps, submitted.job_id, caller())
    assert job.status is JobStatus.CANCELED and job.provider.task_status == "CANCELED"
    assert world.dashscope.canceled == ["task-1"] and world.workflow.stopped == [submitted.job_id]
    assert [event["type"] for event in world.notifier.for_job(job.job_id)] == ["job.canceled"]


def test_a_job_not_yet_at_dashscope_is_canceled_without_calling_it(world: FakeWorld) -> None:
    world.jobs.create(
        Job(
            job_id="a" * 32,
            source=Source.API,
            owner="alice",
            model="wan2.2-i2v-flash",
            request={},
            provider=Provider(region="ap-southeast-1"),
        )
    )
    job = cancel_job(world.deps, "a" * 32, caller())
    assert (job.status, job.stage) == (JobStatus.CANCELED, Stage.DONE)
    assert world.dashscope.canceled == [] and len(world.notifier.events) == 1


def test_a_running_task_can_no_longer_be_canceled(world: FakeWorld, submitted: Job) -> None:
    world.dashscope.set_status("task-1", TaskStatus.RUNNING)
    check_status(world.deps, submitted.job_id, PollState(next="wait"))
    with pytest.raises(Conflict, match="can no longer be canceled"):
        cancel_job(world.deps, submitted.job_id, caller())
    assert world.dashscope.canceled == [] and world.notifier.events == []


def test_an_ended_job_cannot_be_canceled(world: FakeWorld, submitted: Job) -> None:
    cancel_job(world.deps, submitted.job_id, caller())
    with pytest.raises(Conflict, match="already ended as CANCELED"):
        cancel_job(world.deps, submitted.job_id, caller())
    assert len(world.notifier.events) == 1


def test_a_cancel_dashscope_refuses_leaves_the_job_running(world: FakeWorld, submitted: Job) -> None:
    world.dashscope.cancel_errors = [RejectedError("already running", code="UnsupportedOperation")]
    with pytest.raises(Conflict, match="refused"):
        cancel_job(world.deps, submitted.job_id, caller())
    job = world.jobs.get(submitted.job_id)
    assert job is not None and job.status is JobStatus.PENDING and world.workflow.stopped == []
