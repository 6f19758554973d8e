"""The job table's queue and task indexes in DynamoDB (through moto, with the template's own table definition)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from wanflow.adapters.job_table import JobTable
from wanflow.errors import QueueUnavailable
from wanflow.jobs import Job, JobStatus, Priority, Provider, Source, Stage, utc_now


@pytest.fixture
def table(moto_dynamodb: Callable[[str, str], None]) -> Any:
    moto_dynamodb("JobsTable", "jobs")
    return boto3.resource("dynamodb").Table("jobs")


def queued_job(number: int, *, model: str = "wan2.2-i2v-flash", priority: Priority = Priority.NORMAL) -> Job:
    now = utc_now()
    return Job(
        job_id=f"job-{number:02d}",
        source=Source.API,
        model=model,
        request={},
        provider=Provider(region="ap-southeast-1"),
        priority=priority,
        queued_at=now + timedelta(seconds=number),
    )


def created(job: Job, task_id: str) -> None:
    """The job's grant and its create: DashScope has task `task_id`."""
    job.advance(JobStatus.PENDING, Stage.ACCEPTED)
    job.advance(JobStatus.PENDING, Stage.CREATING)
    job.advance(JobStatus.PENDING, Stage.SUBMITTED)
    job.provider.task_id = task_id


def test_the_queue_index_holds_queued_jobs_only_in_queue_order(table: Any) -> None:
    jobs = JobTable(table)
    for number in range(5):
        jobs.create(queued_job(number))
    jobs.create(queued_job(9, priority=Priority.HIGH))
    jobs.create(queued_job(7, model="wan2.6-i2v-flash"))
    assert [job.job_id for job in jobs.queued("wan2.2-i2v-flash", limit=3)] == ["job-09", "job-00", "job-01"]

    def granted(job: Job) -> None:
        job.advance(JobStatus.PENDING, Stage.ACCEPTED)

    jobs.update("job-09", granted)  # leaves the queue (and the sparse index) with its grant
    assert [job.job_id for job in jobs.queued("wan2.2-i2v-flash", limit=10)] == [f"job-{n:02d}" for n in range(5)]
    last = jobs.get("job-04")
    assert last is not None
    assert jobs.queued_ranks_before("wan2.2-i2v-flash", last.queue_rank) == [
        job.queue_rank for job in jobs.queued("wan2.2-i2v-flash", limit=4)
    ]
    assert jobs.queued_ranks_before("wan2.6-i2v-flash", "2") == [jobs.get("job-07").queue_rank]  # type: ignore[union-attr]


def test_the_task_index_names_the_job_that_records_a_task(table: Any) -> None:
    jobs = JobTable(table)
    jobs.create(queued_job(1))

    jobs.update("job-01", lambda job: created(job, "task-abc"))
    assert jobs.holding_task("task-abc") == "job-01" and jobs.holding_task("task-other") is None


def test_a_throttled_table_is_the_queue_unavailable(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = JobTable(table)

    def throttled(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}, "PutItem")

    monkeypatch.setattr(table, "put_item", throttled)
    with pytest.raises(QueueUnavailable):
        jobs.create(queued_job(1))


def test_a_retried_jobs_earlier_task_stays_in_the_task_index_and_nowhere_else(table: Any) -> None:
    jobs = JobTable(table)
    jobs.create(queued_job(1))

    def created_and_failed(job: Job) -> None:
        created(job, "task-old")
        job.record_task_status("FAILED", "InternalError")

    jobs.update("job-01", created_and_failed)
    jobs.remember_task("job-01", "task-old")
    jobs.remember_task("job-01", "task-old")  # idempotent
    jobs.update("job-01", lambda job: job.retry_with_new_task())
    assert jobs.holding_task("task-old") == "job-01"
    # The remembered task is not a job: lists, the sweeper's queries and reads by key never see it.
    assert [job.job_id for job in jobs.unfinished()] == ["job-01"]
    assert [job.job_id for job in jobs.page()[0]] == ["job-01"]
    assert jobs.get("job-01#task#task-old") is None
