"""Batch records in DynamoDB (moto, with the template's own tables): each change one conditional write, endings
recorded once per job, `batch.completed` claimed once; and the jobs table's batch index."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from wanflow.adapters.batch_table import BatchTable
from wanflow.adapters.job_table import JobTable
from wanflow.batches import Batch, Completion
from wanflow.jobs import Job, JobStatus, Provider, Source, Stage


@pytest.fixture
def tables(moto_dynamodb: Callable[[str, str], None]) -> tuple[BatchTable, JobTable]:
    moto_dynamodb("BatchesTable", "batches")
    moto_dynamodb("JobsTable", "jobs")
    dynamodb: Any = boto3.resource("dynamodb")
    return BatchTable(dynamodb.Table("batches")), JobTable(dynamodb.Table("jobs"))


def new_batch(size: int = 3) -> Batch:
    return Batch(
        batch_id="b" * 32,
        owner="alice",
        source=Source.API,
        items=size + 1,
        job_indexes=list(range(size)),
        rejected=[size],
        metadata={"project": "p1"},
        webhook={"url": "https://example.com/hook"},
        cost_estimate_usd=1.5,
        request_fingerprint="f",
    )


def test_a_batch_is_stored_once_and_read_back_whole(tables: tuple[BatchTable, JobTable]) -> None:
    batches, _ = tables
    batch = new_batch()
    assert batches.create(batch) and not batches.create(batch)
    stored = batches.get(batch.batch_id)
    assert stored is not None and stored.model_dump() == batch.model_dump()
    assert batches.get("c" * 32) is None
    batches.mark_jobs_stored(batch.batch_id)
    batches.request_cancel(batch.batch_id)
    stored = batches.get(batch.batch_id)
    assert stored is not None and stored.jobs_stored and stored.cancel_requested_at is not None


def test_each_jobs_ending_is_recorded_once_and_completion_is_claimed_once(tables: tuple[BatchTable, JobTable]) -> None:
    batches, _ = tables
    batch = new_batch(size=2)
    batches.create(batch)
    first, second = batch.job_ids
    after = batches.record_ending(batch.batch_id, first, "SUCCEEDED")
    assert after is not None and after.endings == {first: "SUCCEEDED"} and not after.all_ended
    again = batches.record_ending(batch.batch_id, first, "FAILED")  # a repeat changes nothing
    assert again is not None and again.endings == {first: "SUCCEEDED"}
    done = batches.record_ending(batch.batch_id, second, "CANCELED")
    assert done is not None and done.all_ended and done.status.value == "completed"
    assert batches.record_ending("c" * 32, first, "FAILED") is None
    claimed = batches.claim_completion(batch.batch_id)
    assert claimed is not None and claimed.completion is Completion.CLAIMED and claimed.completed_at is not None
    assert batches.claim_completion(batch.batch_id) is None
    assert batches.claim_completion(batch.batch_id, reclaim=True) is not None  # the sweeper takes a stale claim
    batches.confirm_completion(batch.batch_id)
    assert batches.claim_completion(batch.batch_id, reclaim=True) is None
    stored = batches.get(batch.batch_id)
    assert stored is not None and stored.completion is Completion.PUBLISHED


def test_endings_written_at_the_same_moment_are_all_kept(tables: tuple[BatchTable, JobTable]) -> None:
    batches, _ = tables
    batch = new_batch(size=20)
    batches.create(batch)
    start = threading.Barrier(20)
    results: list[Batch | None] = []

    def end(job_id: str) -> None:
        start.wait()
        results.append(batches.record_ending(batch.batch_id, job_id, "FAILED"))

    threads = [threading.Thread(target=end, args=(job_id,)) for job_id in batch.job_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = batches.get(batch.batch_id)
    assert stored is not None and len(stored.endings) == 20
    assert sum(1 for result in results if result is not None and result.all_ended) >= 1


def test_the_batch_index_lists_a_batchs_jobs_with_their_statuses(tables: tuple[BatchTable, JobTable]) -> None:
    _, jobs = tables
    batch = new_batch(size=3)
    for index, job_id in enumerate(batch.job_ids):
        job = Job(job_id=job_id, source=Source.API, model="wan2.2-i2v-flash", request={}, provider=Provider(region="x"))
        job.batch_id, job.batch_index = batch.batch_id, index
        jobs.create(job)
    jobs.create(
        Job(job_id="lonely", source=Source.API, model="wan2.2-i2v-flash", request={}, provider=Provider(region="x"))
    )
    jobs.update(batch.job_ids[1], lambda job: job.advance(JobStatus.CANCELED, Stage.DONE))
    assert jobs.batch_statuses(batch.batch_id) == {
        batch.job_ids[0]: "QUEUED",
        batch.job_ids[1]: "CANCELED",
        batch.job_ids[2]: "QUEUED",
    }
    assert jobs.batch_statuses("c" * 32) == {}
