"""The job's first frame in its owner's view (`first_frame_url`): a short-lived URL of the input image where a browser
could not load `img_url` itself, and never in events or the document beside the video."""

from __future__ import annotations

import json

from wanflow.callers import uploads_prefix
from wanflow.jobs import Job, Provider, Source
from wanflow.usecases.cancel import cancel_job
from wanflow.usecases.queries import get_job, list_jobs
from wanflow.usecases.submit import submit_api_job
from wanflow.usecases.views import job_view, output_key
from wanflow_tools.fakes import FakeWorld, caller, sample_job_body
from wanflow_tools.testing import image_bytes

ALICE = caller("alice")
FAST = "wan2.2-i2v-flash"


def submit(world: FakeWorld, **overrides: object) -> str:
    job, _ = submit_api_job(world.deps, sample_job_body(**overrides), idempotency_key=None, caller=ALICE)
    return job.job_id


def test_a_data_uri_image_is_shown_through_a_short_lived_url_of_its_copy(world: FakeWorld) -> None:
    view = get_job(world.deps, submit(world), ALICE)
    stashed = view["request"]["input"]["img_url"]
    assert stashed.startswith("s3://intake/uploads/")
    bucket, key = stashed.removeprefix("s3://").split("/", 1)
    ttl = world.settings.output_url_ttl_seconds
    assert view["first_frame_url"] == world.objects.presigned_get(bucket, key, ttl)
    # Listed jobs carry it too (the console's job list shows thumbnails).
    [listed] = list_jobs(world.deps, ALICE, status=None, limit=10, cursor=None)["jobs"]
    assert listed["first_frame_url"] == view["first_frame_url"]


def test_an_uploaded_image_is_shown_through_a_short_lived_url(world: FakeWorld) -> None:
    body = sample_job_body()
    key = f"{uploads_prefix('alice')}frame.png"
    world.objects.put_bytes("intake", key, image_bytes(320, 256), "image/png")
    body["input"]["img_url"] = f"s3://intake/{key}"
    job, _ = submit_api_job(world.deps, body, idempotency_key=None, caller=ALICE)
    url = get_job(world.deps, job.job_id, ALICE)["first_frame_url"]
    assert url == world.objects.presigned_get("intake", key, world.settings.output_url_ttl_seconds)


def test_an_https_image_has_no_first_frame_url_the_client_loads_it_itself(world: FakeWorld) -> None:
    image = "https://example.com/cat.png"
    view = get_job(world.deps, submit(world, input={"prompt": "p", "img_url": image}), ALICE)
    assert view["first_frame_url"] is None
    assert view["request"]["input"]["img_url"] == image


def test_only_objects_of_the_intake_bucket_are_signed(world: FakeWorld) -> None:
    def first_frame(image_input: dict[str, str]) -> object:
        request = {"input": image_input, "parameters": {}}
        job = Job(job_id="f" * 32, source=Source.S3, model=FAST, request=request, provider=Provider(region="x"))
        return job_view(world.deps, job)["first_frame_url"]

    assert first_frame({"img_url": "s3://someone-elses-bucket/a.png"}) is None
    assert first_frame({"img_url": "s3://intake"}) is None  # no key
    assert first_frame({}) is None  # a refused manifest has no image
    assert first_frame({"img_url": "s3://intake/incoming/cat.png"}) == world.objects.presigned_get(
        "intake", "incoming/cat.png", world.settings.output_url_ttl_seconds
    )


def test_events_and_the_document_beside_the_video_never_carry_it(world: FakeWorld) -> None:
    job_id = submit(world)
    assert get_job(world.deps, job_id, ALICE)["first_frame_url"]
    ended = cancel_job(world.deps, job_id, ALICE)
    [event] = world.notifier.events
    assert event["type"] == "job.canceled"
    assert "first_frame_url" not in event["job"]
    document = world.objects.get_bytes(world.settings.output_bucket, output_key(ended, "json"))
    assert "first_frame_url" not in json.loads(document)
    assert "first_frame_url" not in job_view(world.deps, ended, with_url=False)
