"""Submitting from the API: validation before money, one task per job, throttling ridden out, nothing left
behind when DashScope refuses."""

from __future__ import annotations

import pytest

from wanflow.callers import uploads_prefix
from wanflow.errors import Conflict, InvalidRequest, OutcomeUnknownError, RejectedError, ThrottledError
from wanflow.jobs import JobStatus, Stage
from wanflow.usecases.submit import submit_api_job
from wanflow_tools.fakes import FakeWorld, caller
from wanflow_tools.fakes import sample_job_body as job_body


def test_a_valid_job_gets_one_task_and_a_poll_loop(world: FakeWorld) -> None:
    job, created = submit_api_job(world.deps, job_body(), idempotency_key=None, caller=caller())
    assert created
    assert (job.status, job.stage) == (JobStatus.PENDING, Stage.SUBMITTED)
    assert job.provider.task_id == "task-1" and world.dashscope.creates == 1
    assert world.workflow.started == [job.job_id]
    assert world.jobs.get(job.job_id) is not None


def test_a_data_uri_image_is_stored_and_the_task_gets_a_presigned_url(world: FakeWorld) -> None:
    job, _ = submit_api_job(world.deps, job_body(), idempotency_key=None, caller=caller())
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
    assert again.job_id == first.job_id and world.dashscope.creates == 1


def test_the_same_key_from_another_caller_is_another_job(world: FakeWorld) -> None:
    first, _ = submit_api_job(world.deps, job_body(), idempotency_key="k1", caller=caller())
    other, created = submit_api_job(world.deps, job_body(), idempotency_key="k1", caller=caller("bob"))
    assert created and other.job_id != first.job_id


def test_the_same_key_with_another_body_is_a_conflict(world: FakeWorld) -> None:
    submit_api_job(world.deps, job_body(), idempotency_key="k1", caller=caller())
    with pytest.raises(Conflict):
        submit_api_job(world.deps, job_body(metadata={"other": "body"}), idempotency_key="k1", caller=caller())
    assert world.dashscope.creates == 1


def test_brief_throttling_is_ridden_out_within_the_create_budget(world: FakeWorld) -> None:
    world.dashscope.create_errors = [ThrottledError("slow down", code="Throttling.RateQuota")] * 2
    job, _ = submit_api_job(world.deps, job_body(), idempotency_key=None, caller=caller())
    assert job.stage is Stage.SUBMITTED and world.dashscope.creates == 1
    assert len(world.sleeps) == 2 and sum(world.sleeps) <= world.settings.create_retry_seconds


def test_a_retry_after_longer_than_the_budget_is_handed_to_the_caller(world: FakeWorld) -> None:
    world.dashscope.create_errors = [ThrottledError("slow down", code="Throttling.RateQuota", retry_after_seconds=30)]
    with pytest.raises(ThrottledError):
        submit_api_job(world.deps, job_body(), idempotency_key="k1", caller=caller())
    assert world.sleeps == [] and world.dashscope.creates == 0
    # Nothing is left behind: the caller's retry with the same key starts clean.
    assert world.jobs.all() == []
    job, created = submit_api_job(world.deps, job_body(), idempotency_key="k1", caller=caller())
    assert created and job.stage is Stage.SUBMITTED


def test_a_rejected_create_leaves_no_job(world: FakeWorld) -> None:
    world.dashscope.create_errors = [RejectedError("no money", code="Arrearage", http_status=402)]
    with pytest.raises(RejectedError):
        submit_api_job(world.deps, job_body(), idempotency_key=None, caller=caller())
    assert world.jobs.all() == []


def test_an_unanswered_create_is_never_repeated(world: FakeWorld) -> None:
    world.dashscope.create_then_drop = OutcomeUnknownError("no answer", code="ReadTimeout")
    job, created = submit_api_job(world.deps, job_body(), idempotency_key=None, caller=caller())
    assert created and (job.status, job.stage) == (JobStatus.PENDING, Stage.CREATE_UNKNOWN)
    assert world.dashscope.creates == 1 and world.sleeps == []
    assert world.workflow.started == []  # only the sweeper may decide what became of it


def test_a_job_whose_poll_loop_cannot_start_is_still_accepted(world: FakeWorld) -> None:
    world.workflow.fail_starts = True
    job, _ = submit_api_job(world.deps, job_body(), idempotency_key=None, caller=caller())
    assert job.stage is Stage.SUBMITTED and world.workflow.executions == {}
