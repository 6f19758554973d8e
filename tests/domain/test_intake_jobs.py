"""The S3 intake: one job per object version, poison input ends as a FAILED job with its notification."""

from __future__ import annotations

import json

import pytest

from wanflow.capabilities import MODELS
from wanflow.errors import ThrottledError
from wanflow.jobs import JobStatus
from wanflow.usecases.intake import CreatedObject, start_intake_job, submit_uploaded_object
from wanflow_tools.fakes import FakeWorld
from wanflow_tools.testing import image_bytes


def upload_image(world: FakeWorld, key: str, **metadata: str) -> None:
    world.objects.put_bytes("intake", key, image_bytes(320, 256), "image/png")
    world.objects.objects[("intake", key)].metadata = dict(metadata)


def test_an_image_with_a_prompt_in_its_metadata_starts_one_job(world: FakeWorld) -> None:
    upload_image(world, "incoming/cat.png", prompt="a cat", model="wan2.2-i2v-flash", resolution="480P")
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/cat.png", "v1", "etag", "alice"))
    assert job is not None and job.status is JobStatus.QUEUED and job.origin == "s3://intake/incoming/cat.png#v1"
    again = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/cat.png", "v1", "etag", "alice"))
    assert again is not None and again.job_id == job.job_id
    world.run_started_create_steps()
    assert world.dashscope.creates == 1 and len(world.jobs.all()) == 1


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


def test_a_burst_of_uploads_is_all_queued_whatever_dashscope_says(world: FakeWorld) -> None:
    world.dashscope.create_errors = [ThrottledError("slow", code="Throttling", retry_after_seconds=30)] * 10
    for index in range(6):
        key = f"incoming/cat-{index}.png"
        upload_image(world, key, prompt="a cat", model="wan2.2-i2v-flash", resolution="480P")
        job = start_intake_job(world.deps, CreatedObject("intake", key, "v1", None, "alice"))
        assert job is not None and job.status is JobStatus.QUEUED  # the intake never waits for DashScope
    assert world.dashscope.creates == 0 and len(world.jobs.all()) == 6
    assert len(world.workflow.started) == MODELS["wan2.2-i2v-flash"].max_running  # the rest wait their turn


class Unreadable(Exception):
    pass


def test_an_object_that_keeps_failing_gets_a_failed_job_on_its_last_receive(world: FakeWorld) -> None:
    upload_image(world, "incoming/cat.png", prompt="a cat", model="wan2.2-i2v-flash", resolution="480P")

    def broken_head(*_: object, **__: object) -> None:
        raise Unreadable("S3 answered 500")

    world.objects.head = broken_head  # type: ignore[method-assign]
    created = CreatedObject("intake", "incoming/cat.png", "v1", None, "alice")
    for receive in range(1, world.settings.intake_max_receives):
        with pytest.raises(Unreadable):  # SQS will deliver it again
            start_intake_job(world.deps, created, receive_count=receive)
    assert world.jobs.all() == []
    job = start_intake_job(world.deps, created, receive_count=world.settings.intake_max_receives)
    assert job is not None and job.status is JobStatus.FAILED and job.error is not None
    assert job.error.code == "InternalError" and "Unreadable" in job.error.message
    assert [event["type"] for event in world.notifier.for_job(job.job_id)] == ["job.failed"]
    assert world.dashscope.creates == 0 and job.owner == "alice"


def test_a_manifest_deleted_before_it_was_read_is_a_failed_job(world: FakeWorld) -> None:
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/gone.json", "v1", None, "alice"))
    assert job is not None and job.error is not None and "does not exist" in job.error.message
