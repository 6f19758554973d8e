"""The emulator's tasks and their lifecycle: PENDING -> RUNNING -> SUCCEEDED / FAILED (or CANCELED while PENDING).

All state lives behind one lock. Readers get copies, so a response is built from a consistent snapshot while the
lifecycle moves on. Transitions happen in `advance(now)`, which the emulator calls from a background ticker and
before every read, so that answers are exact even with a frozen test clock.

A task leaves PENDING after `pending_seconds` once its model has a free running slot (`ModelSpec.max_running`, or
an account's raised quota, `EmulatorConfig.max_running`), oldest first; it leaves RUNNING after `running_seconds`
once its video has been rendered (or at once, FAILED, when a fault planned a failure). A task older than
`task_ttl_seconds` is forgotten: queries answer UNKNOWN.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wanflow.capabilities import find_model
from wanflow.dashscope import TaskStatus  # the wire protocol's statuses, defined once
from wanflow_tools.emulator.media import describe_source
from wanflow_tools.emulator.protocol import INTERNAL_ERROR
from wanflow_tools.emulator.rules import AcceptedTask
from wanflow_tools.emulator.video_render import RenderResult


@dataclass(frozen=True)
class Timings:
    pending_seconds: float
    running_seconds: float
    task_ttl_seconds: float
    url_ttl_seconds: float


@dataclass
class Task:
    task_id: str
    request_id: str  # of the create call
    accepted: AcceptedTask
    api_key_id: str
    submit_time: float
    status: TaskStatus = TaskStatus.PENDING
    scheduled_time: float | None = None
    end_time: float | None = None
    planned_failure: tuple[str, str] | None = None  # (code, message) chosen by a "task" fault
    failure: tuple[str, str] | None = None  # (code, message) once FAILED
    render: RenderResult | None = None
    render_error: str | None = None
    rendered_at: float | None = None  # clock time the render ended (successfully or not)
    url_expires_at: float | None = None

    @property
    def model_key(self) -> str:
        return self.accepted.spec.name

    def internal_view(self) -> dict[str, Any]:
        """Everything about the task, for GET /_emulator/tasks (sources summarised, never echoed in full)."""
        accepted = self.accepted
        view: dict[str, Any] = {
            "task_id": self.task_id,
            "request_id": self.request_id,
            "task_status": self.status.value,
            "model": accepted.model,
            "canonical_model": accepted.spec.name,
            "resolution": accepted.resolution,
            "duration": accepted.duration,
            "has_audio": accepted.has_audio,
            "img_url": describe_source(accepted.img_url),
            "audio_url": describe_source(accepted.audio_url) if accepted.audio_url else None,
            "submit_time": self.submit_time,
            "scheduled_time": self.scheduled_time,
            "end_time": self.end_time,
            "planned_failure": list(self.planned_failure) if self.planned_failure else None,
            "failure": list(self.failure) if self.failure else None,
            "render_error": self.render_error,
            "url_expires_at": self.url_expires_at,
        }
        if self.render is not None:
            view["video"] = {
                "width": self.render.width,
                "height": self.render.height,
                "frames": self.render.frame_count,
                "bytes": self.render.size_bytes,
                "render_seconds": round(self.render.render_seconds, 3),
                "image_is_placeholder": self.render.image_is_placeholder,
                "audio_source": self.render.audio_source,
            }
        return view


@dataclass
class Advance:
    """What the caller has to do after a lifecycle step (outside the lock)."""

    to_render: list[Task] = field(default_factory=list)
    files_to_delete: list[str] = field(default_factory=list)


class TaskStore:
    def __init__(self, timings: Timings, max_running: Mapping[str, int] | None = None) -> None:
        self.timings = timings
        # canonical model name -> running slots, instead of the capability table's
        self._max_running = {_canonical(name): count for name, count in (max_running or {}).items()}
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}  # insertion order is submission order

    # -- reading ---------------------------------------------------------------------------------

    def get(self, task_id: str, now: float) -> Task | None:
        """A copy of the task, or None when it does not exist or has expired."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or self._expired(task, now):
                return None
            return copy.copy(task)

    def live(self, now: float) -> list[Task]:
        """Copies of every live task, oldest first."""
        with self._lock:
            return [copy.copy(task) for task in self._tasks.values() if not self._expired(task, now)]

    def count(self) -> int:
        with self._lock:
            return len(self._tasks)

    def all(self) -> list[Task]:
        """Copies of every stored task, expired ones included until they are purged."""
        with self._lock:
            return [copy.copy(task) for task in self._tasks.values()]

    # -- changing --------------------------------------------------------------------------------

    def add(self, task: Task) -> None:
        with self._lock:
            self._tasks[task.task_id] = task

    def cancel(self, task_id: str, now: float) -> bool:
        """Cancels a PENDING task; False when the task is missing, expired or no longer PENDING."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or self._expired(task, now) or task.status is not TaskStatus.PENDING:
                return False
            task.status = TaskStatus.CANCELED
            task.end_time = now
            return True

    def finish_render(self, task_id: str, result: RenderResult | None, error: str | None, now: float) -> bool:
        """Records a finished render; False when the task is gone (reset or expired meanwhile)."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return False
            task.render, task.render_error, task.rendered_at = result, error, now
            return True

    def advance(self, now: float) -> Advance:
        """Moves every task as far along its lifecycle as `now` allows.

        Transition times are when they became due, not when this step noticed them, so a clock that jumps far
        ahead (in tests) still gives a consistent history: scheduled = submitted + pending (or when a running
        slot freed up), ended = scheduled + running (or when the video was ready, if later).
        """
        step = Advance()
        with self._lock:
            for task in [task for task in self._tasks.values() if self._expired(task, now)]:
                del self._tasks[task.task_id]
                if task.render is not None:
                    step.files_to_delete.append(task.render.output_path)

            slot_freed_at: dict[str, float] = {}
            for task in self._tasks.values():
                ended = self._due_end(task) if task.status is TaskStatus.RUNNING else None
                if ended is not None and ended <= now:
                    self._finish(task, ended)
                    slot_freed_at[task.model_key] = max(ended, slot_freed_at.get(task.model_key, ended))

            running = Counter(task.model_key for task in self._tasks.values() if task.status is TaskStatus.RUNNING)
            for task in self._tasks.values():
                due = task.submit_time + self.timings.pending_seconds
                if task.status is not TaskStatus.PENDING or now < due:
                    continue
                if running[task.model_key] >= self._max_running.get(task.model_key, task.accepted.spec.max_running):
                    continue
                running[task.model_key] += 1
                task.status = TaskStatus.RUNNING
                task.scheduled_time = min(max(due, slot_freed_at.get(task.model_key, due)), now)
                if task.planned_failure is None:
                    step.to_render.append(copy.copy(task))
        return step

    def clear(self) -> list[str]:
        """Forgets every task; returns the video files to delete."""
        with self._lock:
            files = [task.render.output_path for task in self._tasks.values() if task.render is not None]
            self._tasks.clear()
            return files

    # -- internals (lock held) -------------------------------------------------------------------

    def _expired(self, task: Task, now: float) -> bool:
        return now >= task.submit_time + self.timings.task_ttl_seconds

    def _due_end(self, task: Task) -> float | None:
        """When a RUNNING task ends: after its running time, and not before its video is ready; None: not known yet."""
        started = task.scheduled_time
        if started is None:
            return None
        earliest = started + self.timings.running_seconds
        if task.planned_failure is not None:
            return earliest
        if task.rendered_at is None:
            return None  # still rendering
        return max(earliest, task.rendered_at)

    def _finish(self, task: Task, ended: float) -> None:
        if task.planned_failure is not None:
            self._fail(task, ended, task.planned_failure)
        elif task.render_error is not None or task.render is None:
            self._fail(task, ended, (INTERNAL_ERROR.code, INTERNAL_ERROR.message))
        else:
            task.status = TaskStatus.SUCCEEDED
            task.end_time = ended
            task.url_expires_at = ended + self.timings.url_ttl_seconds

    @staticmethod
    def _fail(task: Task, now: float, failure: tuple[str, str]) -> None:
        task.status = TaskStatus.FAILED
        task.failure = failure
        task.end_time = now


def _canonical(model: str) -> str:
    spec = find_model(model)
    return spec.name if spec is not None else model
