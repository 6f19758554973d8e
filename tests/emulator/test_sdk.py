"""The official `dashscope` Python SDK, unchanged, against the emulator: async_call, fetch, wait, call, cancel, list.

The only change a user makes is the base URL (`dashscope.base_http_api_url`), as the API reference tells them to
do for their region.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from http import HTTPStatus

import av
import dashscope
import httpx
import pytest
from dashscope import VideoSynthesis
from emulator_support import API_KEY, StaticFiles, image_data_uri, wav_bytes

from wanflow_tools.emulator import Emulator

# The prompt of the API reference's sample request (docs/dashscope.md "Sources", ref-id).
SAMPLE_PROMPT = (
    "A scene of urban fantasy art. A dynamic graffiti art character. A boy made of spray paint comes to life from a "
    "concrete wall. He raps an English song at high speed while striking a classic, energetic rapper pose. The scene "
    "is set under an urban railway bridge at night. The lighting comes from a single street lamp, creating a "
    "cinematic atmosphere full of high energy and amazing detail. The audio of the video consists entirely of his "
    "rap, with no other dialogue or noise."
)
CHINA = timezone(timedelta(hours=8))


@pytest.fixture
def sdk_emulator(start_emulator: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    emulator = start_emulator(api_key=API_KEY, pending_seconds=0.2, running_seconds=0.2)
    monkeypatch.setattr(dashscope, "base_http_api_url", emulator.base_url)
    yield emulator


def sdk_args(**overrides: object) -> dict[str, object]:
    arguments: dict[str, object] = {
        "api_key": API_KEY,
        "model": "wan2.6-i2v-flash",
        "prompt": "a lighthouse at dusk",
        "img_url": image_data_uri(),
        "resolution": "720P",
        "duration": 2,
        "prompt_extend": True,
        "watermark": False,
        "negative_prompt": "",
        "seed": 12345,
        "audio": False,
    }
    arguments.update(overrides)
    return {name: value for name, value in arguments.items() if value is not None}


@pytest.mark.slow
def test_async_call_fetch_wait(sdk_emulator: Emulator):
    created = VideoSynthesis.async_call(**sdk_args())
    assert created.status_code == HTTPStatus.OK, created
    assert created.output.task_status == "PENDING"
    assert created.request_id

    fetched = VideoSynthesis.fetch(task=created, api_key=API_KEY)
    assert fetched.status_code == HTTPStatus.OK
    assert fetched.output.task_id == created.output.task_id
    assert fetched.output.task_status in ("PENDING", "RUNNING")

    done = VideoSynthesis.wait(task=created, api_key=API_KEY)
    assert done.status_code == HTTPStatus.OK, done
    assert done.output.task_status == "SUCCEEDED"
    assert done.output.video_url.startswith("http://127.0.0.1:")
    assert done.output.orig_prompt == "a lighthouse at dusk"
    assert done.usage.video_count == 1
    assert done.usage["output_video_duration"] == 2
    assert done.usage["audio"] is False
    assert sdk_emulator.store.count() == 1


@pytest.mark.slow
def test_sample_request_from_the_api_reference(sdk_emulator: Emulator, static_files: StaticFiles):
    """The reference's sample call (synchronous form), with a 750x1000 image and the audio on a loopback URL."""
    audio_url = static_files.add("/rap.mp3", wav_bytes(4.0), "audio/wav")
    response = VideoSynthesis.call(
        api_key=API_KEY,
        model="wan2.6-i2v-flash",
        prompt=SAMPLE_PROMPT,
        img_url=image_data_uri(750, 1000),
        audio_url=audio_url,
        resolution="720P",
        duration=10,
        prompt_extend=True,
        watermark=False,
        negative_prompt="",
        seed=12345,
    )
    assert response.status_code == HTTPStatus.OK, response
    output = response.output
    assert output.task_status == "SUCCEEDED"
    assert output.orig_prompt == SAMPLE_PROMPT
    assert "actual_prompt" not in output  # wan2.6 does not report one
    for name in ("submit_time", "scheduled_time", "end_time"):
        datetime.strptime(output[name], "%Y-%m-%d %H:%M:%S.%f")
    assert response.usage["duration"] == 10
    assert response.usage["SR"] == 720
    assert response.usage["audio"] is True

    video = httpx.get(output.video_url, timeout=30)
    assert video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content)) as container:
        stream = container.streams.video[0]
        size = (stream.codec_context.width, stream.codec_context.height)
        fps = stream.average_rate
        has_audio = bool(container.streams.audio)
        frames = sum(1 for _ in container.decode(video=0))
    assert size == (816, 1104)  # the FAQ's example: 750x1000 at 720P
    assert fps == 30
    assert frames == 300
    assert has_audio


def test_cancel_pending_task(start_emulator: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch):
    emulator = start_emulator(api_key=API_KEY, pending_seconds=60)
    monkeypatch.setattr(dashscope, "base_http_api_url", emulator.base_url)
    created = VideoSynthesis.async_call(**sdk_args())
    canceled = VideoSynthesis.cancel(task=created, api_key=API_KEY)
    assert canceled.status_code == HTTPStatus.OK, canceled
    assert VideoSynthesis.fetch(task=created, api_key=API_KEY).output.task_status == "CANCELED"

    refused = VideoSynthesis.cancel(task=created, api_key=API_KEY)
    assert refused.status_code == HTTPStatus.BAD_REQUEST
    assert refused.code == "UnsupportedOperation"

    finished = VideoSynthesis.wait(task=created, api_key=API_KEY)  # CANCELED is terminal for the SDK too
    assert finished.output.task_status == "CANCELED"


def test_list_with_filters(start_emulator: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch):
    emulator = start_emulator(api_key=API_KEY, pending_seconds=60)
    monkeypatch.setattr(dashscope, "base_http_api_url", emulator.base_url)
    first = VideoSynthesis.async_call(**sdk_args())
    second = VideoSynthesis.async_call(**sdk_args(model="wan2.2-i2v-flash", resolution="480P", duration=5, audio=None))
    VideoSynthesis.cancel(task=first, api_key=API_KEY)

    listing = VideoSynthesis.list(api_key=API_KEY)
    assert listing.status_code == HTTPStatus.OK
    assert listing.output["total"] == 2
    assert [task["task_id"] for task in listing.output["data"]] == [
        second.output.task_id,
        first.output.task_id,
    ]

    now = datetime.now(UTC).astimezone(CHINA)
    window = {
        "start_time": (now - timedelta(minutes=5)).strftime("%Y%m%d%H%M%S"),
        "end_time": (now + timedelta(minutes=5)).strftime("%Y%m%d%H%M%S"),
    }
    filtered = VideoSynthesis.list(api_key=API_KEY, model_name="wan2.2-i2v-flash", status="PENDING", **window)
    assert [task["task_id"] for task in filtered.output["data"]] == [second.output.task_id]
    paged = VideoSynthesis.list(api_key=API_KEY, page_no=2, page_size=1)
    assert (paged.output["page_no"], paged.output["total_page"]) == (2, 2)
    assert [task["task_id"] for task in paged.output["data"]] == [first.output.task_id]


def test_sdk_sees_dashscope_errors(sdk_emulator: Emulator):
    wrong_key = VideoSynthesis.async_call(**sdk_args(api_key="sk-not-the-key"))
    assert (wrong_key.status_code, wrong_key.code) == (HTTPStatus.UNAUTHORIZED, "InvalidApiKey")

    bad_duration = VideoSynthesis.async_call(**sdk_args(duration=99))
    assert (bad_duration.status_code, bad_duration.code) == (HTTPStatus.BAD_REQUEST, "InvalidParameter")
    assert "parameters.duration" in bad_duration.message

    no_model = VideoSynthesis.async_call(**sdk_args(model="wan9-i2v-imaginary"))
    assert (no_model.status_code, no_model.code) == (HTTPStatus.NOT_FOUND, "ModelNotFound")

    unknown = VideoSynthesis.fetch(task="no-such-task", api_key=API_KEY)
    assert unknown.status_code == HTTPStatus.OK
    assert unknown.output.task_status == "UNKNOWN"
    assert sdk_emulator.store.count() == 0
