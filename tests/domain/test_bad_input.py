"""Hostile and broken input: refused naming the field, nothing created at DashScope, nothing stored unbounded."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image

from wanflow.errors import InvalidRequest
from wanflow.jobs import Notification
from wanflow.request import METADATA_KEY_MAX_CHARS, METADATA_MAX_ENTRIES, METADATA_VALUE_MAX_CHARS, URL_MAX_CHARS
from wanflow.usecases import ending, sweep
from wanflow.usecases.intake import CreatedObject, submit_uploaded_object
from wanflow.usecases.submit import submit_api_job
from wanflow_tools.fakes import FakeWorld, caller, sample_job_body
from wanflow_tools.testing import image_bytes

SQS_MESSAGE_MAX = 256 * 1024
DYNAMODB_ITEM_MAX = 400 * 1024


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels but that holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress((b"\x00" + b"\x00" * width * 3) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def jpeg(width: int = 640, height: int = 480) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((width, height), 64).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def with_input(**fields: Any) -> dict[str, Any]:
    body = sample_job_body()
    body["input"] = {**body["input"], **fields}
    return body


BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("a 300 KB https URL", with_input(img_url="https://example.com/" + "a" * 300_000), "input.img_url"),
    ("a long s3 URI", with_input(img_url="s3://intake/" + "k" * URL_MAX_CHARS), "input.img_url"),
    ("an unparseable URL", with_input(img_url="https://[::1/x.png"), "input.img_url"),
    ("a decompression bomb", with_input(img_url=data_uri(png_bomb(20_000, 20_000), "image/png")), "input.img_url"),
    ("a truncated JPEG", with_input(img_url=data_uri(jpeg()[: len(jpeg()) // 2], "image/jpeg")), "input.img_url"),
    ("a huge model name", sample_job_body(model="m" * 300_000), "model"),
    ("a huge metadata key", sample_job_body(metadata={"k" * 100_000: "v"}), "metadata."),
    ("a huge metadata value", sample_job_body(metadata={"k": "v" * 100_000}), "metadata.k"),
    ("a huge resolution", sample_job_body(parameters={"resolution": "R" * 100_000}), "parameters.resolution"),
    ("a huge prompt", with_input(prompt="p" * 100_000), "input.prompt"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_BODIES, ids=[case for case, _, _ in BAD_BODIES])
def test_bad_input_is_refused_naming_the_field_before_anything_is_spent(
    world: FakeWorld, case: str, body: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        submit_api_job(world.deps, body, idempotency_key=None, caller=caller())
    assert any(error.field.startswith(field) for error in refused.value.errors), refused.value.errors
    assert world.dashscope.creates == 0 and world.jobs.all() == []
    assert len(json.dumps(refused.value.to_dict())) < 16 * 1024  # the answer itself stays small


@pytest.mark.parametrize(("case", "body", "field"), BAD_BODIES, ids=[case for case, _, _ in BAD_BODIES])
def test_bad_input_through_the_intake_is_a_small_failed_job_with_its_notification(
    world: FakeWorld, case: str, body: dict[str, Any], field: str
) -> None:
    manifest = json.dumps(body).encode()
    assert len(manifest) < 1024 * 1024  # within what a manifest may be; larger ones are tested below
    world.objects.put_bytes("intake", "incoming/job.json", manifest, "application/json")
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/job.json", "v1", None, "alice"))
    assert job is not None and job.error is not None and field in job.error.message
    assert world.dashscope.creates == 0
    (event,) = world.notifier.for_job(job.job_id)
    assert len(json.dumps(event)) < SQS_MESSAGE_MAX and len(job.model_dump_json()) < DYNAMODB_ITEM_MAX


def test_a_manifest_over_a_megabyte_is_a_failed_job_naming_the_manifest(world: FakeWorld) -> None:
    world.objects.put_bytes("intake", "incoming/big.json", b" " * (1024 * 1024 + 1), "application/json")
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/big.json", "v1", None, "alice"))
    assert job is not None and job.error is not None and "manifest" in job.error.message


@pytest.mark.parametrize("manifest", [b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe\x00garbage"])
def test_a_manifest_nested_too_deep_or_not_text_is_a_failed_job(world: FakeWorld, manifest: bytes) -> None:
    world.objects.put_bytes("intake", "incoming/bad.json", manifest, "application/json")
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/bad.json", "v1", None, "alice"))
    assert job is not None and job.error is not None and "manifest" in job.error.message
    assert job.public_view()["request"] == {"input": {}, "parameters": {}}


def test_an_upload_that_is_a_decompression_bomb_is_a_failed_job(world: FakeWorld) -> None:
    world.objects.put_bytes("intake", "incoming/bomb.png", png_bomb(20_000, 20_000), "image/png")
    world.objects.objects[("intake", "incoming/bomb.png")].metadata = {"prompt": "boom", "model": "wan2.2-i2v-flash"}
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/bomb.png", "v1", None, "alice"))
    assert job is not None and job.error is not None and "decompression bomb" in job.error.message
    assert job.public_view()["request"] == {"input": {"img_url": "s3://intake/incoming/bomb.png"}, "parameters": {}}


def test_the_largest_valid_job_fits_an_item_and_its_event_fits_a_message(world: FakeWorld) -> None:
    wide = "\U0001f30a"  # four bytes in UTF-8, the worst case for sizes counted in bytes
    body = sample_job_body(
        input={
            "prompt": wide * 800,
            "negative_prompt": wide * 500,
            "img_url": "https://example.com/" + "a" * (URL_MAX_CHARS - 20),
        },
        metadata={
            f"{i:0{METADATA_KEY_MAX_CHARS}d}": wide * METADATA_VALUE_MAX_CHARS for i in range(METADATA_MAX_ENTRIES)
        },
    )
    job, _ = submit_api_job(world.deps, body, idempotency_key=None, caller=caller())
    ended = ending.end_failed(world.deps, job.job_id, "X" * 500, "m" * 5000)
    (event,) = world.notifier.for_job(job.job_id)
    assert len(json.dumps(event, ensure_ascii=False).encode()) < SQS_MESSAGE_MAX
    assert len(ended.model_dump_json().encode()) < DYNAMODB_ITEM_MAX // 2


def test_a_notification_that_never_publishes_is_given_up_once_not_retried_forever(world: FakeWorld) -> None:
    job, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    world.notifier.fail = True
    with pytest.raises(RuntimeError):
        ending.end_failed(world.deps, job.job_id, "TaskFailed", "x")

    def sweep_later() -> dict[str, int]:
        stored = world.jobs.get(job.job_id)
        assert stored is not None
        stored.updated_at -= timedelta(minutes=11)
        world.jobs.put(stored)
        return sweep.sweep(world.deps)

    outcomes = [sweep_later() for _ in range(sweep.MAX_PUBLISH_ATTEMPTS + 2)]
    assert outcomes[: sweep.MAX_PUBLISH_ATTEMPTS] == [{"error": 1}] * sweep.MAX_PUBLISH_ATTEMPTS
    assert outcomes[sweep.MAX_PUBLISH_ATTEMPTS :] == [{"notification_undeliverable": 1}, {}]
    assert world.jobs.get(job.job_id).notification is Notification.UNDELIVERABLE  # type: ignore[union-attr]


def test_the_sample_image_still_passes_every_check(world: FakeWorld) -> None:
    body = with_input(img_url=data_uri(image_bytes(320, 256, "JPEG"), "image/jpeg"))
    job, created = submit_api_job(world.deps, body, idempotency_key=None, caller=caller())
    world.run_create_step(job.job_id)
    assert created and world.dashscope.creates == 1
