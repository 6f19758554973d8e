"""The S3 intake: one job per object version, poison input ends as a FAILED job with its notification."""

from __future__ import annotations

import json

import pytest

from wanflow.capabilities import MODELS
from wanflow.errors import RetryLaterError, ThrottledError
from wanflow.jobs import JobStatus, Stage
from wanflow.usecases.intake import CreatedObject, SubmitPacer, start_intake_job, submit_uploaded_object
from wanflow_tools.fakes import FakeWorld
from wanflow_tools.testing import image_bytes


def upload_image(world: FakeWorld, key: str, **metadata: str) -> None:
    world.objects.put_bytes("intake", key, image_bytes(320, 256), "image/png")
    world.objects.objects[("intake", key)].metadata = dict(metadata)


def test_an_image_with_a_prompt_in_its_metadata_starts_one_job(world: FakeWorld) -> None:
    upload_image(world, "incoming/cat.png", prompt="a cat", model="wan2.2-i2v-flash", resolution="480P")
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/cat.png", "v1", "etag", "alice"))
    assert job is not None and job.stage is Stage.SUBMITTED and job.origin == "s3://intake/incoming/cat.png#v1"
    again = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/cat.png", "v1", "etag", "alice"))
    assert again is not None and again.job_id == job.job_id and world.dashscope.creates == 1


def test_an_image_without_a_prompt_is_data_for_a_manifest(world: FakeWorld) -> None:
    upload_image(world, "incoming/frame.png")
    assert (
        submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/frame.png", "v1", None, "alice")) is None
    )
    assert world.jobs.all() == []


def test_a_manifest_names_its_image_relative_to_itself(world: FakeWorld) -> None:
    upload_image(world, "incoming/batch/frame.png")
    manifest = {
        "model": "wan2.2-i2v-flash",
        "input": {"prompt": "p", "img_url": "./frame.png"},
        "parameters": {"resolution": "480P"},
    }
    world.objects.put_bytes("intake", "incoming/batch/job.json", json.dumps(manifest).encode(), "application/json")
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/batch/job.json", "v1", None, "alice"))
    assert job is not None and job.request["input"]["img_url"] == "s3://intake/incoming/batch/frame.png"


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        (b"{oops", "manifest"),
        (b'{"input": {"prompt": "p", "img_url": "missing.png"}}', "input.img_url"),
    ],
)
def test_poison_input_ends_as_a_failed_job_with_one_notification(world: FakeWorld, manifest: bytes, field: str) -> None:
    world.objects.put_bytes("intake", "incoming/bad.json", manifest, "application/json")
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/bad.json", "v1", None, "alice"))
    assert job is not None and job.status is JobStatus.FAILED and job.error is not None
    assert field in job.error.message and "s3://intake/incoming/bad.json#v1" in job.error.message
    assert world.dashscope.creates == 0
    assert [event["type"] for event in world.notifier.for_job(job.job_id)] == ["job.failed"]
    again = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/bad.json", "v1", None, "alice"))
    assert again is not None and again.job_id == job.job_id and len(world.notifier.events) == 1


def test_bad_metadata_values_name_their_field(world: FakeWorld) -> None:
    upload_image(world, "incoming/cat.png", prompt="a cat", duration="five", audio="maybe")
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/cat.png", "v1", None, "alice"))
    assert job is not None and job.error is not None
    assert "metadata.duration" in job.error.message and "metadata.audio" in job.error.message


def test_dashscope_throttling_pauses_the_worker_and_hands_the_message_back(world: FakeWorld) -> None:
    upload_image(world, "incoming/cat.png", prompt="a cat", model="wan2.2-i2v-flash", resolution="480P")
    world.dashscope.create_errors = [ThrottledError("slow", code="Throttling", retry_after_seconds=30)]
    clock = [100.0]
    pacer = SubmitPacer(2, clock=lambda: clock[0], sleep=lambda seconds: None)
    created = CreatedObject("intake", "incoming/cat.png", "v1", None)
    with pytest.raises(ThrottledError):
        start_intake_job(world.deps, created, pacer)
    (job,) = world.jobs.all()
    assert job.stage is Stage.ACCEPTED  # nothing was created: safe to submit again
    with pytest.raises(RetryLaterError, match="throttled this worker"):
        pacer(MODELS["wan2.2-i2v-flash"])
    clock[0] += 31
    submitted = start_intake_job(world.deps, created, pacer)
    assert submitted is not None and submitted.stage is Stage.SUBMITTED and world.dashscope.creates == 1


class Unreadable(Exception):
    pass


def test_an_object_that_keeps_failing_gets_a_failed_job_on_its_last_receive(world: FakeWorld) -> None:
    upload_image(world, "incoming/cat.png", prompt="a cat", model="wan2.2-i2v-flash", resolution="480P")

    def broken_head(*_: object, **__: object) -> None:
        raise Unreadable("S3 answered 500")

    world.objects.head = broken_head  # type: ignore[method-assign]
    created = CreatedObject("intake", "incoming/cat.png", "v1", None, "alice")
    pacer = SubmitPacer(2, clock=lambda: 0.0, sleep=lambda seconds: None)
    for receive in range(1, world.settings.intake_max_receives):
        with pytest.raises(Unreadable):  # SQS will deliver it again
            start_intake_job(world.deps, created, pacer, receive_count=receive)
    assert world.jobs.all() == []
    job = start_intake_job(world.deps, created, pacer, receive_count=world.settings.intake_max_receives)
    assert job is not None and job.status is JobStatus.FAILED and job.error is not None
    assert job.error.code == "InternalError" and "Unreadable" in job.error.message
    assert [event["type"] for event in world.notifier.for_job(job.job_id)] == ["job.failed"]
    assert world.dashscope.creates == 0 and job.owner == "alice"


def test_a_manifest_deleted_before_it_was_read_is_a_failed_job(world: FakeWorld) -> None:
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/gone.json", "v1", None, "alice"))
    assert job is not None and job.error is not None and "does not exist" in job.error.message


def test_a_throttled_last_receive_leaves_the_stored_job_to_the_sweeper(world: FakeWorld) -> None:
    upload_image(world, "incoming/cat.png", prompt="a cat", model="wan2.2-i2v-flash", resolution="480P")
    world.dashscope.create_errors = [ThrottledError("slow", code="Throttling", retry_after_seconds=30)]
    pacer = SubmitPacer(2, clock=lambda: 0.0, sleep=lambda seconds: None)
    created = CreatedObject("intake", "incoming/cat.png", "v1", None, "alice")
    with pytest.raises(ThrottledError):
        start_intake_job(world.deps, created, pacer, receive_count=world.settings.intake_max_receives)
    (job,) = world.jobs.all()
    assert job.stage is Stage.ACCEPTED and world.notifier.events == []  # waiting, not failed
