"""Batches: every item validated like a job, all-or-nothing unless partial, idempotent, counted, canceled where not
started, and one `batch.completed` when the last job ended, however often an ending is repeated."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from wanflow.batches import MAX_BATCH_ITEMS, Batch, Completion, batch_job_id
from wanflow.errors import Conflict, InvalidRequest, NotFound
from wanflow.jobs import Job, JobStatus, Notification, Stage
from wanflow.usecases import batch_completion, batches, ending
from wanflow.usecases.intake import CreatedObject, submit_uploaded_object
from wanflow.usecases.sweep import sweep
from wanflow_tools.fakes import FakeWorld, caller, sample_job_body
from wanflow_tools.testing import image_bytes

ALICE = caller("alice")


def submit(world: FakeWorld, body: dict[str, Any], key: str | None = None, who: Any = ALICE) -> tuple[Batch, bool]:
    return batches.submit_api_batch(world.deps, body, idempotency_key=key, caller=who)


def bodies(count: int, **overrides: Any) -> list[dict[str, Any]]:
    return [sample_job_body(metadata={"item": str(index)}, **overrides) for index in range(count)]


def job_of(world: FakeWorld, job_id: str) -> Job:
    job = world.jobs.get(job_id)
    assert job is not None
    return job


def succeed(world: FakeWorld, job_id: str) -> Job:
    """End a job SUCCEEDED the way the finalizer does (the video part is the finalizer tests')."""

    def finalizing(job: Job) -> None:
        job.status, job.stage = JobStatus.RUNNING, Stage.FINALIZING

    world.jobs.update(job_id, finalizing)
    return ending.end(world.deps, job_id, lambda job: job.advance(JobStatus.SUCCEEDED, Stage.DONE))


def fail(world: FakeWorld, job_id: str) -> Job:
    return ending.end_failed(world.deps, job_id, "DataInspectionFailed", "inappropriate content")


# ------------------------------------------------------------------------------------------- submission


def test_a_valid_batch_queues_every_job_under_ids_derived_from_the_batch(world: FakeWorld) -> None:
    batch, created = submit(world, {"jobs": bodies(4), "metadata": {"project": "p1"}})
    assert created and batch.total == 4 and batch.jobs_stored and batch.metadata == {"project": "p1"}
    assert batch.job_ids == [batch_job_id(batch.batch_id, index) for index in range(4)]
    jobs = [job_of(world, job_id) for job_id in batch.job_ids]
    assert [job.metadata for job in jobs] == [{"item": str(index)} for index in range(4)]  # item metadata on the job
    assert all(job.batch_id == batch.batch_id and job.owner == "alice" for job in jobs)
    assert [job.batch_index for job in jobs] == [0, 1, 2, 3]
    # wan2.2-i2v-flash has 2 running slots: the first two are granted, the others wait in the queue.
    assert [job.status for job in jobs] == [JobStatus.PENDING] * 2 + [JobStatus.QUEUED] * 2
    assert world.workflow.started == batch.job_ids[:2]
    assert batch.cost_estimate_usd == pytest.approx(sum(job.cost_estimate_usd or 0 for job in jobs))


def test_one_invalid_item_refuses_the_batch_with_every_items_errors_and_stores_nothing(world: FakeWorld) -> None:
    items = bodies(4)
    items[1]["parameters"]["duration"] = 7
    items[3]["input"]["img_url"] = "ftp://example.com/a.png"
    items[2] = "not a job"
    with pytest.raises(InvalidRequest) as refused:
        submit(world, {"jobs": items})
    fields = [error.field for error in refused.value.errors]
    assert "jobs[1].parameters.duration" in fields and "jobs[3].input.img_url" in fields and "jobs[2]" in fields
    assert not any(field.startswith("jobs[0]") for field in fields)
    assert refused.value.http_status == 400
    assert world.jobs.all() == [] and world.batches.all() == [] and world.objects.objects == {}


def test_a_partial_batch_queues_the_valid_items_and_lists_the_refused_ones(world: FakeWorld) -> None:
    items = bodies(3)
    items[1]["parameters"]["resolution"] = "4K"
    batch, created = submit(world, {"jobs": items, "partial": True})
    assert created and batch.job_indexes == [0, 2] and batch.total == 2
    (rejected,) = batches.batch_view(world.deps, batch)["rejected"]  # the answer to the submission: with errors
    assert rejected["index"] == 1 and rejected["errors"][0]["field"] == "jobs[1].parameters.resolution"
    assert {job.batch_index for job in world.jobs.all()} == {0, 2}
    view = batches.get_batch(world.deps, batch.batch_id, ALICE)  # later: which items, not their errors again
    assert view["total"] == 2 and view["rejected"] == [{"index": 1}] and len(view["jobs"]) == 2


def test_a_partial_batch_with_no_valid_item_is_refused(world: FakeWorld) -> None:
    with pytest.raises(InvalidRequest):
        submit(world, {"jobs": [{"input": {}}], "partial": True})
    assert world.batches.all() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"jobs": []}, "jobs"),
        ({"jobs": [{}] * (MAX_BATCH_ITEMS + 1)}, "jobs"),
        ({}, "jobs"),
        ({"jobs": {"0": {}}}, "jobs"),
        ({"jobs": [{}], "partial": "yes"}, "partial"),
        ({"jobs": [{}], "webhook": "https://example.com"}, "webhook"),
        ({"jobs": [{}], "webhook": None}, "webhook"),
        ({"jobs": [{}], "webhook": {"url": "https://example.com/" + "a" * 5000}}, "webhook"),
        ({"jobs": [{}], "metadata": {"k": 1}}, "metadata"),
        ({"jobs": [{}], "metadata": {"k" * 65: "v"}}, "metadata." + "k" * 64 + "..."),
        ({"jobs": [{}], "priority": "high"}, "priority"),
        ([], "body"),
    ],
)
def test_a_bad_batch_body_is_a_400_naming_its_field(world: FakeWorld, body: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        submit(world, body)
    assert field in [error.field for error in refused.value.errors]
    assert world.batches.all() == []


def test_the_shared_webhook_is_kept_on_the_batch_and_given_to_items_without_their_own(world: FakeWorld) -> None:
    webhook = {"url": "https://example.com/hook"}
    own = {"url": "https://example.com/own", "events": ["job.failed"]}
    items = bodies(2)
    items[1]["webhook"] = own
    batch, _ = submit(world, {"jobs": items, "webhook": webhook})
    stored = world.batches.get(batch.batch_id)
    endings = ["job.succeeded", "job.failed", "job.canceled"]
    assert stored is not None and stored.webhook == {"url": "https://example.com/hook", "events": endings}
    first, second = (job_of(world, job_id).webhook for job_id in batch.job_ids)
    assert first is not None and (first.url, first.events) == ("https://example.com/hook", endings)
    assert second is not None and (second.url, second.events) == ("https://example.com/own", ["job.failed"])
    item = {"input": {}}
    assert batches.with_shared_webhook(item, webhook) == {"input": {}, "webhook": webhook}
    assert batches.with_shared_webhook({"webhook": {"url": "https://own"}}, webhook) == {
        "webhook": {"url": "https://own"}
    }


def test_a_bad_shared_webhook_is_one_400_naming_the_batchs_field_and_nothing_is_stored(world: FakeWorld) -> None:
    with pytest.raises(InvalidRequest) as refused:
        submit(world, {"jobs": bodies(3), "webhook": {"url": "https://10.0.0.7/hook", "events": ["job.done"]}})
    fields = [error.field for error in refused.value.errors]
    assert fields == ["webhook.url", "webhook.events[0]"]
    with pytest.raises(InvalidRequest) as unknown:
        submit(world, {"jobs": bodies(1), "webhook": {"url": "https://example.com/hook", "secret": "x"}})
    assert [error.field for error in unknown.value.errors] == ["webhook.secret"]
    assert world.batches.all() == [] and world.jobs.all() == []


def test_the_same_idempotency_key_and_body_give_the_same_batch_and_jobs(world: FakeWorld) -> None:
    body = {"jobs": bodies(3)}
    first, created = submit(world, body, key="k1")
    again, created_again = submit(world, body, key="k1")
    assert created and not created_again and again.batch_id == first.batch_id
    assert len(world.jobs.all()) == 3 and len(world.batches.all()) == 1
    with pytest.raises(Conflict):
        submit(world, {"jobs": bodies(2)}, key="k1")
    other, _ = submit(world, body, key="k1", who=caller("bob"))  # keys are per caller
    assert other.batch_id != first.batch_id


def test_a_retry_after_a_submission_died_midway_stores_the_missing_jobs_once(world: FakeWorld) -> None:
    body = {"jobs": bodies(3)}
    created_jobs: list[str] = []
    real_create = world.jobs.create

    def dies_after_one(job: Job) -> bool:
        if created_jobs:
            raise RuntimeError("the Lambda timed out")
        created_jobs.append(job.job_id)
        return real_create(job)

    world.jobs.create = dies_after_one  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        submit(world, body, key="k1")
    world.jobs.create = real_create  # type: ignore[method-assign]
    batch, created = submit(world, body, key="k1")
    assert not created and batch.jobs_stored
    assert sorted(job.job_id for job in world.jobs.all()) == sorted(batch.job_ids)


# ------------------------------------------------------------------------------------------- reads


def test_the_view_counts_jobs_per_status_and_pages_the_job_ids(world: FakeWorld) -> None:
    batch, _ = submit(world, {"jobs": bodies(5)})
    fail(world, batch.job_ids[0])
    view = batches.get_batch(world.deps, batch.batch_id, ALICE, limit=2)
    assert view["status"] == "open" and view["total"] == 5
    assert view["counts"] == {
        "QUEUED": 2,
        "PENDING": 2,  # the failed job freed its slot: the next queued job got it
        "RUNNING": 0,
        "SUCCEEDED": 0,
        "FAILED": 1,
        "CANCELED": 0,
    }
    pages = [view["jobs"]]
    while view["next_cursor"]:
        view = batches.get_batch(world.deps, batch.batch_id, ALICE, limit=2, cursor=view["next_cursor"])
        pages.append(view["jobs"])
    assert pages == [batch.job_ids[0:2], batch.job_ids[2:4], batch.job_ids[4:5]]
    with pytest.raises(InvalidRequest) as refused:
        batches.get_batch(world.deps, batch.batch_id, ALICE, cursor=pages[0][0] + ".forged")
    assert refused.value.errors[0].field == "cursor"


def test_an_ending_the_job_index_has_not_caught_up_with_still_counts(world: FakeWorld) -> None:
    batch, _ = submit(world, {"jobs": bodies(2)})
    fail(world, batch.job_ids[0])
    world.jobs.batch_statuses = lambda batch_id: {}  # type: ignore[method-assign]  # the index lags
    counts = batches.get_batch(world.deps, batch.batch_id, ALICE)["counts"]
    assert counts["FAILED"] == 1 and counts["QUEUED"] == 1


def test_another_callers_batch_is_not_found_and_an_admin_sees_it(world: FakeWorld) -> None:
    batch, _ = submit(world, {"jobs": bodies(1)})
    with pytest.raises(NotFound):
        batches.get_batch(world.deps, batch.batch_id, caller("bob"))
    with pytest.raises(NotFound):
        batches.cancel_batch(world.deps, batch.batch_id, caller("bob"))
    assert batches.get_batch(world.deps, batch.batch_id, caller("root", admin=True))["batch_id"] == batch.batch_id
    assert job_of(world, batch.job_ids[0]).status is not JobStatus.CANCELED


# ------------------------------------------------------------------------------------------- cancel


def test_cancel_ends_every_job_that_has_not_started_and_leaves_running_ones(world: FakeWorld) -> None:
    batch, _ = submit(world, {"jobs": bodies(4)})
    world.run_started_create_steps()  # the two granted jobs have DashScope tasks (PENDING there)
    running = batch.job_ids[0]
    world.jobs.update(running, lambda job: job.advance(JobStatus.RUNNING, Stage.SUBMITTED))
    view = batches.cancel_batch(world.deps, batch.batch_id, ALICE)
    assert view["counts"]["CANCELED"] == 3 and view["counts"]["RUNNING"] == 1 and view["status"] == "open"
    assert job_of(world, running).status is JobStatus.RUNNING
    assert world.dashscope.canceled == [job_of(world, batch.job_ids[1]).provider.task_id]
    assert world.notifier.batch_events == []
    succeed(world, running)
    (event,) = world.notifier.batch_events
    assert event["batch"]["status"] == "canceled" and event["batch"]["counts"]["SUCCEEDED"] == 1


# ------------------------------------------------------------------------------------------- batch.completed


def test_one_batch_completed_after_the_last_jobs_own_event_with_the_final_counts(world: FakeWorld) -> None:
    batch, _ = submit(world, {"jobs": bodies(3), "metadata": {"project": "p1"}})
    succeed(world, batch.job_ids[0])
    fail(world, batch.job_ids[1])
    assert world.notifier.batch_events == []
    last = job_of(world, batch.job_ids[2])
    ending.end(world.deps, last.job_id, lambda job: job.advance(JobStatus.CANCELED, Stage.DONE))
    (event,) = world.notifier.batch_events
    assert event["schema"] == "wanflow.batch.v1" and event["type"] == "batch.completed"
    view = event["batch"]
    assert (view["batch_id"], view["status"], view["metadata"]) == (batch.batch_id, "completed", {"project": "p1"})
    assert (view["counts"]["SUCCEEDED"], view["counts"]["FAILED"], view["counts"]["CANCELED"]) == (1, 1, 1)
    assert view["total"] == 3 and view["completed_at"] and "jobs" not in view
    assert len(world.notifier.events) == 3  # each job's own event too
    stored = world.batches.get(batch.batch_id)
    assert stored is not None and stored.completion is Completion.PUBLISHED


def test_repeated_endings_and_publishes_never_give_a_second_batch_completed(world: FakeWorld) -> None:
    batch, _ = submit(world, {"jobs": bodies(2)})
    for job_id in batch.job_ids:
        fail(world, job_id)
    for job_id in batch.job_ids:
        job = job_of(world, job_id)
        fail(world, job_id)  # a second ending is refused by the status machine
        ending.publish_once(world.deps, job)
        batch_completion.job_ended(world.deps, job)  # the bookkeeping itself repeated
    sweep(world.deps)
    assert len(world.notifier.batch_events) == 1 and world.batches.ending_writes == 2


def test_jobs_ending_at_the_same_moment_give_one_batch_completed(world: FakeWorld) -> None:
    batch, _ = submit(world, {"jobs": bodies(8)})
    start = threading.Barrier(8)

    def end(job_id: str) -> None:
        start.wait()
        fail(world, job_id)

    threads = [threading.Thread(target=end, args=(job_id,)) for job_id in batch.job_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (event,) = world.notifier.batch_events
    assert event["batch"]["counts"]["FAILED"] == 8


def test_the_sweeper_records_an_ending_a_dead_process_missed_and_completes_the_batch(world: FakeWorld) -> None:
    batch, _ = submit(world, {"jobs": bodies(2)})
    fail(world, batch.job_ids[0])
    real = batch_completion.job_ended
    batch_completion.job_ended = lambda deps, job: None  # type: ignore[assignment]  # died right after the publish
    try:
        fail(world, batch.job_ids[1])
    finally:
        batch_completion.job_ended = real  # type: ignore[assignment]
    assert job_of(world, batch.job_ids[1]).notification is Notification.PUBLISHED
    assert world.notifier.batch_events == []
    counts = sweep(world.deps)
    assert counts["batch_ending_recorded"] == 1 and counts["batch_completed_published"] == 1
    assert len(world.notifier.batch_events) == 1
    sweep(world.deps)
    assert len(world.notifier.batch_events) == 1


def test_a_claimed_batch_completed_whose_publisher_died_is_published_by_the_sweeper_later(
    world: FakeWorld,
) -> None:
    batch, _ = submit(world, {"jobs": bodies(1)})
    world.notifier.fail = True  # SNS down for the batch event: the claim stays
    real_publish_job: Callable[..., str] = world.notifier.publish_job_event
    world.notifier.publish_job_event = lambda job, view: "ok"  # type: ignore[method-assign]
    fail(world, batch.job_ids[0])
    world.notifier.publish_job_event = real_publish_job  # type: ignore[method-assign]
    world.notifier.fail = False
    stored = world.batches.get(batch.batch_id)
    assert stored is not None and stored.completion is Completion.CLAIMED
    assert "batch_completed_published" not in sweep(world.deps)  # too recent: its publisher may be alive
    assert stored.completed_at is not None
    stored.completed_at -= timedelta(minutes=11)
    world.batches.put(stored)
    assert sweep(world.deps)["batch_completed_published"] == 1
    assert len(world.notifier.batch_events) == 1


# ------------------------------------------------------------------------------------------- jsonl intake


def upload(world: FakeWorld, key: str, lines: list[Any]) -> CreatedObject:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    world.objects.put_bytes("intake", key, text.encode(), "application/x-ndjson")
    return CreatedObject("intake", key, "v1", "etag", "alice")


def test_a_jsonl_upload_is_a_batch_of_its_lines_and_a_redelivery_changes_nothing(world: FakeWorld) -> None:
    world.objects.put_bytes("intake", "incoming/run/cat.png", image_bytes(320, 256), "image/png")
    relative = {"model": "wan2.2-i2v-flash", "input": {"prompt": "a cat", "img_url": "cat.png"}}
    created = upload(world, "incoming/run/jobs.jsonl", [sample_job_body(), "", relative])
    assert submit_uploaded_object(world.deps, created) is None
    (batch,) = world.batches.all()
    assert batch.total == 2 and batch.owner == "alice" and batch.origin == "s3://intake/incoming/run/jobs.jsonl#v1"
    second = job_of(world, batch.job_ids[1])
    assert second.request["input"]["img_url"] == "s3://intake/incoming/run/cat.png" and second.source.value == "s3"
    assert submit_uploaded_object(world.deps, created) is None
    assert len(world.batches.all()) == 1 and len(world.jobs.all()) == 2


def test_a_jsonl_upload_with_a_bad_line_is_refused_whole_with_each_lines_errors(world: FakeWorld) -> None:
    bad_duration = sample_job_body(parameters={"duration": 7})
    created = upload(world, "incoming/jobs.jsonl", [sample_job_body(), "{not json", bad_duration])
    failed = submit_uploaded_object(world.deps, created)
    assert failed is not None and failed.status is JobStatus.FAILED and failed.error is not None
    assert "line 2:" in failed.error.message and "line 3.parameters.duration" in failed.error.message
    assert "was not a valid batch" in failed.error.message
    assert world.batches.all() == [] and [job.job_id for job in world.jobs.all()] == [failed.job_id]
    assert [event["type"] for event in world.notifier.events] == ["job.failed"]
    assert submit_uploaded_object(world.deps, created) is not None and len(world.notifier.events) == 1


def test_an_empty_jsonl_upload_is_refused_naming_the_file(world: FakeWorld) -> None:
    failed = submit_uploaded_object(world.deps, upload(world, "incoming/empty.jsonl", ["", "  "]))
    assert failed is not None and failed.error is not None and "file: has 0 job bodies" in failed.error.message
