"""Waiting for a job to end, with a progress display.

On a terminal one line is redrawn every second (status, elapsed time, DashScope's task status, and a QUEUED job's
place in the queue) and every change of status or queue position leaves a line behind; when the output is a file
or a pipe only the changes are printed, one plain line each, so logs stay readable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from wanflow.retry import retrying
from wanflow_tools.client.api import ApiClient
from wanflow_tools.client.display import TERMINAL_STATUSES, elapsed_seconds, format_duration, format_queue
from wanflow_tools.client.errors import ApiError, ClientError, DeadlineError, UnavailableError

DEFAULT_INTERVAL_SECONDS = 2.0
# Consecutive transient failures (429, 5xx, connection trouble) tolerated while waiting before giving up.
MAX_TRANSIENT_FAILURES = 5
_SPINNER = "|/-\\"
_CLEAR_LINE = "\r\x1b[2K"


@dataclass
class Clock:
    """Time as the waiter sees it; tests substitute a fake one that advances when it sleeps."""

    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


class ProgressDisplay:
    def __init__(self, stream: TextIO, *, tty: bool) -> None:
        self.stream = stream
        self.tty = tty
        self._last_change: tuple[Any, ...] | None = None
        self._frame = 0
        self._line_open = False

    def show(self, job: dict[str, Any], elapsed: float) -> None:
        status = job.get("status", "?")
        task_status = (job.get("provider") or {}).get("task_status")
        # A queued job moving up the queue is a change too; its ETA alone is not (it is re-estimated every poll).
        change = (status, task_status, _queue_position(job))
        if change != self._last_change:
            self._last_change = change
            self._write_line(self._describe(job, status, task_status, elapsed))
        if self.tty and status not in TERMINAL_STATUSES:
            spinner = _SPINNER[self._frame % len(_SPINNER)]
            self._frame += 1
            self.stream.write(f"{_CLEAR_LINE}{spinner} {self._describe(job, status, task_status, elapsed)}")
            self.stream.flush()
            self._line_open = True

    def note(self, message: str) -> None:
        self._write_line(message)

    def close(self) -> None:
        if self._line_open:
            self.stream.write(_CLEAR_LINE)
            self.stream.flush()
            self._line_open = False

    def _write_line(self, text: str) -> None:
        prefix = _CLEAR_LINE if self._line_open else ""
        self._line_open = False
        self.stream.write(f"{prefix}{text}\n")
        self.stream.flush()

    @staticmethod
    def _describe(job: dict[str, Any], status: Any, task_status: Any, elapsed: float) -> str:
        text = f"[{format_duration(elapsed)}] job {job.get('job_id', '?')} {status}"
        place = format_queue(job.get("queue")) if status == "QUEUED" else None
        if place:
            text += f" ({place})"
        if task_status:
            text += f" (DashScope task {task_status})"
        return text


def _queue_position(job: dict[str, Any]) -> Any:
    queue = job.get("queue")
    return queue.get("position") if job.get("status") == "QUEUED" and isinstance(queue, dict) else None


def wait_for_job(
    api: ApiClient,
    job_id: str,
    *,
    display: ProgressDisplay,
    interval: float = DEFAULT_INTERVAL_SECONDS,
    timeout: float | None = None,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """Poll the job until it is SUCCEEDED, FAILED or CANCELED and return it.

    Raises DeadlineError after `timeout` seconds (None: no limit), the API's error for a permanent failure
    (404 ...), and the last transient error after MAX_TRANSIENT_FAILURES of them in a row.
    """
    return poll_until(
        lambda: api.get_job(job_id),
        lambda job: job.get("status") in TERMINAL_STATUSES,
        what=f"job {job_id}",
        display=display,
        interval=interval,
        timeout=timeout,
        clock=clock,
    )


class Display(Protocol):
    """What `poll_until` shows its progress on (`ProgressDisplay` for a job; a batch has its own)."""

    tty: bool

    def show(self, resource: dict[str, Any], elapsed: float) -> None: ...

    def note(self, message: str) -> None: ...

    def close(self) -> None: ...


def poll_until(
    fetch: Callable[[], dict[str, Any]],
    finished: Callable[[dict[str, Any]], bool],
    *,
    what: str,
    display: Display,
    interval: float = DEFAULT_INTERVAL_SECONDS,
    timeout: float | None = None,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """Fetch `what` (a job, a batch) every `interval` seconds until `finished` says so, and return it; errors as
    for `wait_for_job`."""
    clock = clock or Clock()
    started = clock.monotonic()
    deadline = None if timeout is None else started + timeout
    # A terminal redraws its elapsed-time counter every second between polls; a log gets one line per change.
    tick = 1.0 if display.tty else None
    job: dict[str, Any] | None = None
    polled_at = started  # when the latest poll began; waits count from there

    def poll() -> dict[str, Any]:
        nonlocal polled_at
        polled_at = clock.monotonic()
        return fetch()

    def show(now: float) -> None:
        if job is not None:
            elapsed = elapsed_seconds(job, clock.now())
            display.show(job, now - started if elapsed is None else elapsed)

    def wait_until(next_poll: float) -> None:
        """Sleep until the next poll, redrawing on a terminal; DeadlineError when the deadline comes first."""
        now = polled_at
        while True:
            if deadline is not None and now >= deadline:
                status = job.get("status") if job else "unknown"
                raise DeadlineError(f"{what} is still {status} after {timeout:g} s", job)
            wake = next_poll
            if tick is not None:
                wake = min(wake, now + tick)
            if deadline is not None:
                wake = min(wake, deadline)
            clock.sleep(max(0.0, wake - now))
            now = clock.monotonic()
            if now >= next_poll:
                return
            show(now)

    def pause_after_failure(delay: float) -> None:
        # The retry helper's sleep: the last job seen stays on screen, and the deadline can cut the wait short
        # (that DeadlineError goes straight through the helper, which retries only what the API call raised).
        show(polled_at)
        wait_until(polled_at + delay)

    # Transient failures (429, 5xx, connection trouble) are retried; the count starts again after each success.
    poll_with_retries = retrying(
        lambda error: isinstance(error, ClientError) and _is_transient(error),
        max_attempts=MAX_TRANSIENT_FAILURES + 1,
        backoff=lambda failures, error: _retry_delay(error, failures, interval),
        sleep=pause_after_failure,
        on_retry=lambda failures, error, delay: display.note(f"{error}; retrying in {delay:.0f} s"),
    )
    try:
        while True:
            job = poll_with_retries(poll)
            show(polled_at)
            if finished(job):
                return job
            wait_until(polled_at + interval)
    finally:
        display.close()


def _is_transient(error: ClientError) -> bool:
    if isinstance(error, ApiError):
        return error.status == 429 or error.status >= 500
    return isinstance(error, UnavailableError | DeadlineError)


def _retry_delay(error: BaseException, failures: int, interval: float) -> float:
    if isinstance(error, ApiError) and error.retry_after:
        try:
            return max(float(error.retry_after), 0.5)
        except ValueError:
            pass
    return min(interval * 2 ** (failures - 1), 30.0)
