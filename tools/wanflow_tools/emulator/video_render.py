"""Making real videos: H.264 MP4 (yuv420p, 30 fps) animated from the first frame, with AAC audio when asked.

The animation is a slow zoom with a slight drift (a "Ken Burns" move) so that the result is visibly a video of the
input image. Each frame is a numpy crop of the first frame that swscale scales and converts to yuv420p in one pass
(under a millisecond at 720P); libx264 runs with the "ultrafast" preset. PyAV releases the GIL while it converts
and encodes, and the Renderer runs jobs in a worker pool, so the HTTP API keeps answering while videos render.

`render_video` is a plain function of a picklable `RenderJob`, so the pool may be threads or processes.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing import get_context

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wanflow_tools.emulator.media import FetchError, fetch_bytes, load_first_frame

FPS = 30
AUDIO_SAMPLE_RATE = 48_000
AUDIO_FRAME_SAMPLES = 1024  # the AAC encoder's frame size
ZOOM_END = 1.08  # the last frame shows the central 1/1.08 of the first frame
DRIFT_FRACTION = 0.02  # the zoom centre drifts by this fraction of the frame size
X264_OPTIONS = {"preset": "ultrafast", "crf": "23"}

SizeRule = Callable[[int, int, str], tuple[int, int]]


@dataclass(frozen=True)
class RenderJob:
    task_id: str
    img_url: str
    audio_url: str | None
    resolution: str
    duration_seconds: int
    with_audio: bool
    watermark: bool
    output_path: str
    size_rule: SizeRule  # wanflow.capabilities.output_size: (width, height, resolution) -> (width, height)


@dataclass(frozen=True)
class RenderResult:
    task_id: str
    output_path: str
    width: int
    height: int
    frame_count: int
    size_bytes: int
    render_seconds: float
    image_is_placeholder: bool
    audio_source: str | None  # "audio_url", "tone" or None (silent)
    note: str


class RenderCancelled(Exception):
    """The emulator stopped while the video was rendering."""


def render_video(job: RenderJob, cancelled: Callable[[], bool] | None = None) -> RenderResult:
    """Renders the job's MP4 to `job.output_path` (written under a temporary name, then renamed)."""
    started = time.perf_counter()
    first_frame = load_first_frame(job.img_url)
    width, height = job.size_rule(first_frame.image.width, first_frame.image.height, job.resolution)
    frame_count = FPS * job.duration_seconds
    audio, audio_source = _audio_track(job) if job.with_audio else (None, None)

    temporary_path = job.output_path + ".part"
    try:
        _encode(job, temporary_path, first_frame.image, width, height, audio, cancelled)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary_path)
        raise
    os.replace(temporary_path, job.output_path)

    return RenderResult(
        task_id=job.task_id,
        output_path=job.output_path,
        width=width,
        height=height,
        frame_count=frame_count,
        size_bytes=os.path.getsize(job.output_path),
        render_seconds=time.perf_counter() - started,
        image_is_placeholder=first_frame.is_placeholder,
        audio_source=audio_source,
        note=first_frame.note,
    )


def _encode(
    job: RenderJob,
    path: str,
    first_frame: Image.Image,
    width: int,
    height: int,
    audio: np.ndarray | None,
    cancelled: Callable[[], bool] | None,
) -> None:
    frame_count = FPS * job.duration_seconds
    with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        video_stream = container.add_stream("libx264", rate=FPS, options=dict(X264_OPTIONS))
        video_stream.width = width
        video_stream.height = height
        video_stream.pix_fmt = "yuv420p"
        video_stream.codec_context.time_base = Fraction(1, FPS)
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=AUDIO_SAMPLE_RATE, layout="stereo")
        audio_chunks = _audio_frames(audio) if audio is not None else iter(())
        audio_samples_written = 0

        for index, frame in enumerate(_zoom_frames(first_frame, width, height, frame_count, job.watermark)):
            if cancelled is not None and cancelled():
                raise RenderCancelled(job.task_id)
            frame.pts = index
            container.mux(video_stream.encode(frame))
            # Interleave: keep the audio written up to the time of the current video frame.
            while audio_stream is not None and audio_samples_written * FPS <= index * AUDIO_SAMPLE_RATE:
                chunk = next(audio_chunks, None)
                if chunk is None:
                    break
                container.mux(audio_stream.encode(chunk))
                audio_samples_written += chunk.samples
        container.mux(video_stream.encode())
        if audio_stream is not None:
            for chunk in audio_chunks:
                container.mux(audio_stream.encode(chunk))
            container.mux(audio_stream.encode())


def _zoom_frames(
    source: Image.Image, width: int, height: int, frame_count: int, watermark: bool
) -> Iterator[av.VideoFrame]:
    # Crop boxes are whole pixels and swscale does the scaling and the colour conversion in one fast pass;
    # the rounding moves the box edges by under half a pixel per frame, which does not show.
    base = np.asarray(_cover(source, width, height))
    badge = _watermark_badge() if watermark else None
    last = max(frame_count - 1, 1)
    for index in range(frame_count):
        progress = _ease(index / last)
        scale = 1.0 + (ZOOM_END - 1.0) * progress
        box_width, box_height = round(width / scale), round(height / scale)
        centre_x = width / 2 + DRIFT_FRACTION * width * progress
        centre_y = height / 2 - DRIFT_FRACTION * height * progress
        left = min(max(round(centre_x - box_width / 2), 0), width - box_width)
        top = min(max(round(centre_y - box_height / 2), 0), height - box_height)
        crop = np.ascontiguousarray(base[top : top + box_height, left : left + box_width])
        frame = av.VideoFrame.from_ndarray(crop, format="rgb24")
        if badge is None:
            yield frame.reformat(width=width, height=height, format="yuv420p", interpolation="BILINEAR")
        else:
            pixels = frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR")
            yield av.VideoFrame.from_ndarray(_blend(pixels.to_ndarray(), badge), format="rgb24")


def _blend(pixels: np.ndarray, badge: np.ndarray) -> np.ndarray:
    """Alpha-blend an RGBA badge into the bottom-right corner of an RGB frame."""
    badge_height, badge_width = badge.shape[:2]
    top = max(pixels.shape[0] - badge_height - 16, 0)
    left = max(pixels.shape[1] - badge_width - 16, 0)
    region = pixels[top : top + badge_height, left : left + badge_width]
    alpha = badge[: region.shape[0], : region.shape[1], 3:4].astype(np.float32) / 255.0
    colour = badge[: region.shape[0], : region.shape[1], :3].astype(np.float32)
    region[...] = (colour * alpha + region.astype(np.float32) * (1.0 - alpha)).astype(np.uint8)
    return pixels


def _cover(source: Image.Image, width: int, height: int) -> Image.Image:
    """Scale and centre-crop the source to exactly width x height (the output keeps the input's aspect)."""
    scale = max(width / source.width, height / source.height)
    box_width, box_height = min(width / scale, source.width), min(height / scale, source.height)
    left = max((source.width - box_width) / 2, 0.0)  # the clamps absorb float rounding
    top = max((source.height - box_height) / 2, 0.0)
    return source.resize((width, height), Image.Resampling.LANCZOS, box=(left, top, left + box_width, top + box_height))


def _ease(progress: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * progress)


def _watermark_badge() -> np.ndarray:
    font = ImageFont.load_default(size=22)
    text = "AI-generated (emulator)"
    left, top, right, bottom = font.getbbox(text)
    badge = Image.new("RGBA", (int(right - left) + 16, int(bottom - top) + 12), (0, 0, 0, 110))
    ImageDraw.Draw(badge).text((8 - left, 6 - top), text, font=font, fill=(255, 255, 255, 220))
    return np.asarray(badge).copy()


def _audio_track(job: RenderJob) -> tuple[np.ndarray, str]:
    """Stereo float32 samples, shape (2, 48000 * duration): the audio_url content when readable, else a tone."""
    total = AUDIO_SAMPLE_RATE * job.duration_seconds
    if job.audio_url:
        try:
            return _fit_length(_decode_audio(fetch_bytes(job.audio_url)), total), "audio_url"
        except (FetchError, av.FFmpegError, ValueError):
            pass  # DashScope would fail the task; the emulator keeps going with a tone, as documented.
    return _tone(total), "tone"


def _decode_audio(data: bytes) -> np.ndarray:
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_SAMPLE_RATE)
    parts: list[np.ndarray] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        for frame in container.decode(audio=0):
            parts.extend(resampled.to_ndarray() for resampled in resampler.resample(frame))
    parts.extend(resampled.to_ndarray() for resampled in resampler.resample(None))
    if not parts:
        raise ValueError("empty audio")
    return np.concatenate(parts, axis=1).astype(np.float32)


def _fit_length(samples: np.ndarray, total: int) -> np.ndarray:
    if samples.shape[1] >= total:
        return np.ascontiguousarray(samples[:, :total])
    padding = np.zeros((samples.shape[0], total - samples.shape[1]), dtype=np.float32)
    return np.concatenate([samples, padding], axis=1)


def _tone(total: int) -> np.ndarray:
    """A quiet A-major chord that swells gently; clearly synthetic, pleasant enough to listen to."""
    seconds = np.arange(total, dtype=np.float32) / AUDIO_SAMPLE_RATE
    chord = sum(np.sin(2 * np.pi * frequency * seconds) for frequency in (220.0, 277.18, 329.63))
    swell = 0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * seconds)
    fade = np.minimum(1.0, np.minimum(seconds, seconds[-1] - seconds) / 0.05) if total > 1 else 1.0
    mono = (0.08 * chord * swell * fade).astype(np.float32)
    return np.stack([mono, mono])


def _audio_frames(samples: np.ndarray) -> Iterator[av.AudioFrame]:
    for start in range(0, samples.shape[1], AUDIO_FRAME_SAMPLES):
        chunk = np.ascontiguousarray(samples[:, start : start + AUDIO_FRAME_SAMPLES])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_SAMPLE_RATE)
        yield frame


class Renderer:
    """Runs render jobs off the request threads.

    `use_processes=True` renders in spawned worker processes (full isolation from the API's GIL);
    the default is threads, which start instantly and are enough because the heavy work releases the GIL.
    After `shutdown()` new jobs are ignored until `reopen()`.
    """

    def __init__(self, *, workers: int | None = None, use_processes: bool = False) -> None:
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.use_processes = use_processes
        self._lock = threading.Lock()
        self._executor: Executor | None = None
        self._closed = False
        self._stopping = threading.Event()

    def submit(self, job: RenderJob, on_done: Callable[[str, RenderResult | None, str | None], None]) -> None:
        """Calls on_done(task_id, result, error) from a worker thread when the job ends."""
        with self._lock:
            if self._closed:
                return  # the emulator is stopping: a request that was still in flight asked for a render
            executor = self._pool()
            if self.use_processes:
                future = executor.submit(render_video, job)
            else:  # threads can see the stop flag, so a shutdown does not wait for whole videos
                future = executor.submit(render_video, job, self._stopping.is_set)

        def finished(done: Future[RenderResult]) -> None:
            if done.cancelled():
                on_done(job.task_id, None, "render cancelled")
                return
            error = done.exception()
            if error is not None:
                on_done(job.task_id, None, f"{type(error).__name__}: {error}")
            else:
                on_done(job.task_id, done.result(), None)

        future.add_done_callback(finished)

    def shutdown(self) -> None:
        """Stops rendering; waits for the workers (thread renders stop at their next frame)."""
        with self._lock:
            self._closed = True
            self._stopping.set()
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def reopen(self) -> None:
        with self._lock:
            self._closed = False
            self._stopping.clear()

    def _pool(self) -> Executor:
        if self._executor is None:
            if self.use_processes:
                # spawn, not fork: the API process has running threads, and forking those is unsafe.
                self._executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn"))
            else:
                self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="render")
        return self._executor
