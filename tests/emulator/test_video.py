"""The videos: H.264 yuv420p MP4 at 30 fps, the documented size and duration, audio exactly when requested."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import httpx
import pytest
from emulator_support import StaticFiles, body, create_task, image_bytes, image_data_uri, wait_for_status, wav_bytes

from wanflow.capabilities import output_size
from wanflow_tools.emulator import Emulator

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Probe:
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: Fraction
    frames: int
    audio_streams: int
    audio_codec: str | None
    audio_seconds: float | None


def probe(data: bytes) -> Probe:
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0].codec_context
        codec, pix_fmt, width, height = video.name, video.pix_fmt, video.width, video.height
        fps = container.streams.video[0].average_rate
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(io.BytesIO(data)) as container:
        audio_streams = len(container.streams.audio)
        audio_codec, audio_seconds = None, None
        if audio_streams:
            audio = container.streams.audio[0].codec_context
            audio_codec = audio.name
            audio_seconds = sum(frame.samples for frame in container.decode(audio=0)) / audio.sample_rate
    return Probe(codec, pix_fmt, width, height, fps, frames, audio_streams, audio_codec, audio_seconds)


def internal_video_facts(emulator: Emulator) -> dict[str, Any]:
    (task,) = httpx.get(f"{emulator.root_url}/_emulator/tasks").json()["tasks"]
    return task["video"]


def render(client: httpx.Client, payload: dict[str, Any]) -> tuple[Probe, dict[str, Any]]:
    task_id = create_task(client, payload)
    answer = wait_for_status(client, task_id, "SUCCEEDED", timeout=60)
    video = httpx.get(answer["output"]["video_url"], timeout=30)
    assert video.status_code == 200
    return probe(video.content), answer


@pytest.mark.parametrize(
    ("model", "parameters", "has_audio"),
    [
        ("wan2.6-i2v-flash", {"audio": False}, False),  # the flash model's silent option
        ("wan2.6-i2v-flash", {"audio": True}, True),
        ("wan2.2-i2v-flash", {}, False),  # wan2.2 is always silent
        ("wan2.5-i2v-preview", {}, True),  # wan2.5 always has audio
    ],
)
def test_video_format_and_audio_per_model(
    client: httpx.Client, model: str, parameters: dict[str, Any], has_audio: bool
):
    payload = body(model=model, **parameters)
    video, answer = render(client, payload)
    resolution = payload["parameters"]["resolution"]
    duration = payload["parameters"].get("duration", 5)
    assert (video.codec, video.pix_fmt, video.fps) == ("h264", "yuv420p", 30)
    assert (video.width, video.height) == output_size(300, 400, resolution)
    assert video.frames == 30 * duration
    assert video.audio_streams == (1 if has_audio else 0)
    if has_audio:
        assert video.audio_codec == "aac"
        assert video.audio_seconds == pytest.approx(duration, abs=0.1)
    assert answer["usage"].get("audio", has_audio) is has_audio


def test_audio_url_content_becomes_the_soundtrack(client: httpx.Client, emulator: Emulator, static_files: StaticFiles):
    payload = body(audio=None)  # wan2.6-i2v-flash with its default audio=true
    payload["input"]["audio_url"] = static_files.add("/voice.wav", wav_bytes(3.0), "audio/wav")
    video, _ = render(client, payload)
    assert video.audio_streams == 1
    assert video.audio_seconds == pytest.approx(2, abs=0.1)  # cut to the video's 2 s
    assert internal_video_facts(emulator)["audio_source"] == "audio_url"


def test_unreachable_audio_url_falls_back_to_a_tone(client: httpx.Client, emulator: Emulator):
    payload = body(audio=None)
    payload["input"]["audio_url"] = "http://127.0.0.1:9/voice.mp3"  # nothing listens on the discard port
    video, _ = render(client, payload)
    assert video.audio_streams == 1
    assert internal_video_facts(emulator)["audio_source"] == "tone"


def test_image_from_http_url(client: httpx.Client, emulator: Emulator, static_files: StaticFiles):
    payload = body()
    payload["input"]["img_url"] = static_files.add("/frame.png", image_bytes(480, 270), "image/png")
    video, _ = render(client, payload)
    assert (video.width, video.height) == output_size(480, 270, "720P")
    assert internal_video_facts(emulator)["image_is_placeholder"] is False


def test_unreachable_image_gives_a_labelled_placeholder(client: httpx.Client, emulator: Emulator):
    payload = body()
    payload["input"]["img_url"] = "http://127.0.0.1:9/missing.png"
    video, _ = render(client, payload)
    assert (video.width, video.height) == output_size(1280, 720, "720P")  # the placeholder is 16:9
    assert video.frames == 60
    assert internal_video_facts(emulator)["image_is_placeholder"] is True


def test_first_frame_shows_the_input_image(client: httpx.Client):
    payload = body()
    payload["input"]["img_url"] = image_data_uri(320, 320)
    task_id = create_task(client, payload)
    url = wait_for_status(client, task_id, "SUCCEEDED")["output"]["video_url"]
    with av.open(io.BytesIO(httpx.get(url).content)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    first, last = frames[0], frames[-1]
    height, width = first.shape[:2]
    corner = first[5, 5].astype(int)
    centre = first[height // 2, width // 2].astype(int)
    assert abs(corner - [30, 60, 120]).max() < 30  # the test image's blue background
    assert abs(centre - [240, 180, 60]).max() < 30  # its orange disc
    assert (first != last).any()  # the picture moves (slow zoom)


def test_faq_size_750x1000_at_720p_is_816x1104(start_emulator: Callable[..., Emulator]):
    emulator = start_emulator(pending_seconds=0, running_seconds=0)
    payload = body(duration=2)
    payload["input"]["img_url"] = image_data_uri(750, 1000)
    with httpx.Client(base_url=emulator.base_url, timeout=10) as client:
        video, answer = render(client, payload)
    assert (video.width, video.height) == (816, 1104)
    assert answer["usage"]["SR"] == 720


def test_process_workers_render_the_same_video(start_emulator: Callable[..., Emulator]):
    emulator = start_emulator(render_in_processes=True, render_workers=1)
    with httpx.Client(base_url=emulator.base_url, timeout=10) as client:
        video, _ = render(client, body())
    assert (video.width, video.height, video.frames, video.audio_streams) == (*output_size(300, 400, "720P"), 60, 0)
