"""The job status machine: the one place where status and stage change."""

from __future__ import annotations

import pytest

from wanflow.jobs import Job, JobStatus, Provider, Source, Stage, TransitionRefused, derived_job_id, fingerprint
from wanflow.usecases.poll import next_poll_wait


def new_job() -> Job:
    return Job(job_id="a" * 32, source=Source.API, model="wan2.6-i2v-flash", request={}, provider=Provider(region="x"))


def test_the_happy_path_is_allowed():
    job = new_job()
    assert (job.status, job.stage) == (JobStatus.QUEUED, Stage.QUEUED)  # a new job waits in the queue
    for status, stage in [
        (JobStatus.PENDING, Stage.ACCEPTED),
        (JobStatus.PENDING, Stage.CREATING),
        (JobStatus.PENDING, Stage.SUBMITTED),
        (JobStatus.RUNNING, Stage.SUBMITTED),
        (JobStatus.RUNNING, Stage.FINALIZING),
        (JobStatus.SUCCEEDED, Stage.DONE),
    ]:
        job.advance(status, stage)
    assert job.completed_at is not None


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        # A queued job holds no slot: it is granted one before anything can be created.
        ([], (JobStatus.QUEUED, Stage.QUEUED)),
        # A finished job never changes again: a late poll or a second finalizer cannot undo the end.
        ([(JobStatus.FAILED, Stage.DONE)], (JobStatus.RUNNING, Stage.FINALIZING)),
        ([(JobStatus.CANCELED, Stage.DONE)], (JobStatus.SUCCEEDED, Stage.DONE)),
        # A create with an unknown outcome can never go back to "accepted", where it could be sent again.
        (
            [(JobStatus.PENDING, Stage.CREATING), (JobStatus.PENDING, Stage.CREATE_UNKNOWN)],
            (JobStatus.PENDING, Stage.ACCEPTED),
        ),
        (
            [(JobStatus.PENDING, Stage.CREATING), (JobStatus.PENDING, Stage.CREATE_UNKNOWN)],
            (JobStatus.PENDING, Stage.CREATING),
        ),
        # A job being created cannot be claimed for creating a second time.
        ([(JobStatus.PENDING, Stage.CREATING)], (JobStatus.PENDING, Stage.CREATING)),
        # Once DashScope runs the task it can no longer be canceled, and success needs the video first.
        (
            [(JobStatus.PENDING, Stage.CREATING), (JobStatus.PENDING, Stage.SUBMITTED)],
            (JobStatus.SUCCEEDED, Stage.DONE),
        ),
        (
            [
                (JobStatus.PENDING, Stage.CREATING),
                (JobStatus.PENDING, Stage.SUBMITTED),
                (JobStatus.RUNNING, Stage.FINALIZING),
            ],
            (JobStatus.CANCELED, Stage.DONE),
        ),
    ],
)
def test_transitions_the_machine_does_not_allow_are_refused(path, refused):
    job = new_job()
    job.advance(JobStatus.PENDING, Stage.ACCEPTED)  # granted a slot
    for status, stage in path:
        job.advance(status, stage)
    assert not job.can_advance(*refused)
    with pytest.raises(TransitionRefused):
        job.advance(*refused)


def test_a_queued_job_is_created_only_after_its_grant_and_may_end_at_once():
    job = new_job()
    assert not job.can_advance(JobStatus.PENDING, Stage.CREATING)
    assert not job.can_advance(JobStatus.PENDING, Stage.SUBMITTED)
    assert job.can_advance(JobStatus.CANCELED, Stage.DONE) and job.can_advance(JobStatus.FAILED, Stage.DONE)


def test_fail_records_the_error_and_public_view_hides_bookkeeping():
    job = new_job()
    job.fail("DataInspectionFailed", "flagged", "req-1")
    view = job.public_view()
    assert view["status"] == "FAILED"
    assert view["error"] == {"code": "DataInspectionFailed", "message": "flagged", "provider_request_id": "req-1"}
    assert {"stage", "version", "request_fingerprint", "notification"}.isdisjoint(view)
    assert view["created_at"].endswith("Z")


def test_derived_ids_and_fingerprints_are_stable():
    assert derived_job_id("s3", "b", "k", "v1") == derived_job_id("s3", "b", "k", "v1")
    assert derived_job_id("s3", "b", "k", "v1") != derived_job_id("s3", "b", "k", "v2")
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_polling_backs_off_so_a_24_hour_task_stays_under_the_history_limit():
    from datetime import timedelta

    elapsed, polls = timedelta(0), 0
    while elapsed < timedelta(hours=24):
        elapsed += timedelta(seconds=next_poll_wait(elapsed, 15))
        polls += 1
    events_per_poll = 9  # Wait entered/exited, Task entered/scheduled/started/succeeded/exited, Choice entered/exited
    assert polls * events_per_poll < 25_000 / 4
    assert next_poll_wait(timedelta(minutes=1), 15) == 15


def submitted_job(task_status: str) -> Job:
    job = new_job()
    job.advance(JobStatus.PENDING, Stage.ACCEPTED)
    job.advance(JobStatus.PENDING, Stage.CREATING)
    job.advance(JobStatus.PENDING, Stage.SUBMITTED)
    job.provider.task_id = "task-1"
    job.provider.request_id = "req-1"
    job.record_task_status(task_status)
    return job


def test_a_job_goes_back_to_accepted_only_to_retry_a_task_that_ended_failed():
    for status in ("PENDING", "RUNNING", "SUCCEEDED", "CANCELED", "UNKNOWN"):
        with pytest.raises(TransitionRefused):
            submitted_job(status).retry_with_new_task()
    job = submitted_job("FAILED")
    job.retry_with_new_task()
    assert (job.status, job.stage) == (JobStatus.PENDING, Stage.ACCEPTED)
    assert job.provider == Provider(region=job.provider.region)  # the old task's fields are in its attempt only
    assert [(attempt.task_id, attempt.status) for attempt in job.attempts] == [("task-1", "FAILED")]


def test_a_finalizing_job_never_goes_back_to_accepted():
    job = submitted_job("SUCCEEDED")
    job.advance(JobStatus.RUNNING, Stage.FINALIZING)
    assert not job.can_advance(JobStatus.PENDING, Stage.ACCEPTED)


def test_an_attempt_ends_once_with_the_failure_of_its_task():
    job = submitted_job("RUNNING")
    job.record_task_status("FAILED", "InternalError", "boom")
    ended = job.attempts[0].ended
    job.record_task_status("FAILED", "Other", "later")  # a repeated poll changes nothing
    assert (job.attempts[0].code, job.attempts[0].message, job.attempts[0].ended) == ("InternalError", "boom", ended)
    view = job.public_view()["attempts"]
    assert view == [
        {
            "task_id": "task-1",
            "status": "FAILED",
            "code": "InternalError",
            "message": "boom",
            "started": view[0]["started"],
            "ended": view[0]["ended"],
        }
    ]


def test_a_stored_job_without_attempts_loads_with_none():
    document = new_job().model_dump(mode="json")
    del document["attempts"]
    job = Job.model_validate(document)
    assert job.attempts == [] and job.public_view()["attempts"] == []
