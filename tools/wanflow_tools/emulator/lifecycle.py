"""Drives the task store: a background ticker advances tasks, and tasks that start RUNNING get their video rendered."""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from wanflow_tools.emulator.config import Clock
from wanflow_tools.emulator.store import Task, TaskStore
from wanflow_tools.emulator.video_render import Renderer, RenderJob, RenderResult, SizeRule

logger = logging.getLogger(__name__)


class Lifecycle:
    def __init__(
        self,
        store: TaskStore,
        renderer: Renderer,
        *,
        clock: Clock,
        size_rule: SizeRule,
        tick_seconds: float,
    ) -> None:
        self.store = store
        self.renderer = renderer
        self.clock = clock
        self.results_dir = ""  # set by start()
        self.size_rule = size_rule
        self.tick_seconds = tick_seconds
        self._stopping = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self, results_dir: str) -> None:
        """Starts the ticker; videos are written to `results_dir`."""
        self.results_dir = results_dir
        self._stopping.clear()
        self._ticker = threading.Thread(target=self._tick_forever, name="emulator-lifecycle", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None

    def advance(self) -> None:
        """Moves every task along as far as the clock allows; starts renders for tasks that began RUNNING."""
        step = self.store.advance(self.clock())
        for task in step.to_render:
            self.renderer.submit(self._render_job(task), self._render_finished)
        delete_files(step.files_to_delete)

    def video_path(self, task_id: str) -> str:
        return os.path.join(self.results_dir, f"{task_id}.mp4")

    def _render_job(self, task: Task) -> RenderJob:
        accepted = task.accepted
        return RenderJob(
            task_id=task.task_id,
            img_url=accepted.img_url,
            audio_url=accepted.audio_url,
            resolution=accepted.resolution,
            duration_seconds=accepted.duration,
            with_audio=accepted.has_audio,
            watermark=accepted.watermark,
            output_path=self.video_path(task.task_id),
            size_rule=self.size_rule,
        )

    def _render_finished(self, task_id: str, result: RenderResult | None, error: str | None) -> None:
        known = self.store.finish_render(task_id, result, error, self.clock())
        if not known and result is not None:
            delete_files([result.output_path])  # the task was reset or expired while its video rendered
        if self._stopping.is_set():
            return  # the emulator is shutting down: renders end early on purpose
        if result is not None:
            logger.info(
                "rendered task %s: %dx%d, %d frames, %d bytes in %.2f s",
                task_id,
                result.width,
                result.height,
                result.frame_count,
                result.size_bytes,
                result.render_seconds,
            )
        else:
            logger.warning("render of task %s failed: %s", task_id, error)
        self.advance()

    def _tick_forever(self) -> None:
        while not self._stopping.wait(self.tick_seconds):
            try:
                self.advance()
            except Exception:  # a broken tick must not stop the lifecycle; the next one tries again
                logger.exception("lifecycle tick failed")


def delete_files(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
