"""Retrying with backoff: one helper over tenacity, used wherever wanflow repeats a failed call.

    for_query = retrying(RetryLaterError, max_attempts=4)            # full jitter, honours Retry-After
    task = for_query(client.get_task, task_id)                       # a tenacity.Retrying: call it

`retrying()` builds a `tenacity.Retrying` that

* retries only the errors `retry_on` picks (exception types or a predicate); anything else passes through at once;
* stops after `max_attempts` calls, or when the next wait would end past `deadline_seconds` after the first call
  began, or when the next wait would be longer than `max_wait_seconds` - whichever comes first;
* waits what `backoff(attempt_number, error)` says after a failed attempt (the number of the attempt that failed,
  from 1). The default is full-jitter exponential backoff, capped, and at least the `retry_after_seconds` the
  error carries (wanflow.errors' retryable errors carry DashScope's Retry-After there);
* re-raises the last error itself (not a tenacity.RetryError) when it gives up.

Time is injectable for tests: `sleep` for the waits and `clock` (monotonic seconds) for the deadline; jitter draws
from `rng` (anything with `uniform(a, b)`, e.g. `random.Random(seed)`).

The backoff building blocks compose: `jittered(honour_retry_after(exponential(0.25)), 1.0, 1.5)` waits 0.25 s,
0.5 s, 1 s ... or the Retry-After when it is longer, times a random factor between 1 and 1.5.

A Retrying built here may be called any number of times, also from several threads; each call has its own attempt
count and deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import tenacity


__all__ = [
    "DEFAULT_BACKOFF",
    "Backoff",
    "RetryOn",
    "Uniform",
    "exponential",
    "full_jitter",
    "honour_retry_after",
    "jittered",
    "retry_after_seconds",
    "retrying",
]


class Uniform(Protocol):
    """A source of jitter: `random` itself, a `random.Random`, or a test double."""

    def uniform(self, a: float, b: float, /) -> float: ...


Backoff = Callable[[int, BaseException], float]
"""Seconds to wait after attempt number `n` (from 1) failed with `error`."""

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
"""Which errors are worth another attempt: exception types, or a predicate on the error."""

# 2 ** 60 base periods is longer than anything will ever wait; beyond it the float arithmetic would overflow.
_MAX_DOUBLINGS = 60


def retry_after_seconds(error: BaseException) -> float | None:
    """The wait the failing service asked for: the error's `retry_after_seconds` attribute, or None."""
    value = getattr(error, "retry_after_seconds", None)
    return float(value) if isinstance(value, int | float) else None


def exponential(base_seconds: float, cap_seconds: float | None = None) -> Backoff:
    """base, 2 x base, 4 x base ... after attempts 1, 2, 3 ..., never more than `cap_seconds` (None: no cap)."""

    def backoff(attempt_number: int, error: BaseException) -> float:
        delay = base_seconds * 2 ** min(attempt_number - 1, _MAX_DOUBLINGS)
        return delay if cap_seconds is None else min(cap_seconds, delay)

    return backoff


def full_jitter(base_seconds: float, cap_seconds: float, *, rng: Uniform = random) -> Backoff:
    """Uniform in [0, min(cap, base x 2 ** (n - 1))] ("full jitter"): spreads many clients' retries apart."""
    bound = exponential(base_seconds, cap_seconds)

    def backoff(attempt_number: int, error: BaseException) -> float:
        return rng.uniform(0.0, bound(attempt_number, error))

    return backoff


def jittered(backoff: Backoff, low: float, high: float, *, rng: Uniform = random) -> Backoff:
    """`backoff` times a factor drawn uniformly from [low, high]."""

    def scaled(attempt_number: int, error: BaseException) -> float:
        return backoff(attempt_number, error) * rng.uniform(low, high)

    return scaled


def honour_retry_after(backoff: Backoff, *, exactly: bool = False) -> Backoff:
    """When the error carries `retry_after_seconds`: wait at least that long, or exactly that long (exactly=True).

    Errors without it get `backoff`'s wait.
    """

    def honouring(attempt_number: int, error: BaseException) -> float:
        retry_after = retry_after_seconds(error)
        if retry_after is None:
            return backoff(attempt_number, error)
        if exactly:
            return retry_after
        return max(backoff(attempt_number, error), retry_after)

    return honouring


DEFAULT_BACKOFF: Backoff = honour_retry_after(full_jitter(0.5, 8.0))
"""Full jitter from 0.5 s doubling up to 8 s, or the error's Retry-After when that is longer."""


# Where a call's deadline is kept: Retrying.statistics, which tenacity keeps per call and per thread.
_DEADLINE_KEY = "wanflow_deadline"


def retrying(
    retry_on: RetryOn,
    *,
    max_attempts: int | None = None,
    deadline_seconds: float | None = None,
    max_wait_seconds: float | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    on_give_up: Callable[[int, BaseException], None] | None = None,
) -> tenacity.Retrying:
    """A tenacity.Retrying that calls a function until it succeeds, fails for good, or a limit is reached.

    retry_on          the errors worth another attempt; any other error is raised at once.
    max_attempts      calls in all (1: no retries).
    deadline_seconds  give up rather than wait past this many seconds (on `clock`) after the first call began.
    max_wait_seconds  give up rather than wait longer than this once (say, a Retry-After of minutes).
    backoff           the wait after a failed attempt (see the module docstring).
    sleep, clock      waiting and monotonic time, injectable for tests.
    on_retry          called as on_retry(attempt_number, error, wait_seconds) before each wait (logging).
    on_give_up        called as on_give_up(attempt_number, error) when a limit stops the retries, just before the
                      error is re-raised. Not called for errors `retry_on` does not pick.

    At least one of max_attempts and deadline_seconds is required, so nothing retries forever by accident.
    When retries stop, the last error is raised as it was (reraise=True).
    """
    if max_attempts is None and deadline_seconds is None:
        raise ValueError("retrying() needs max_attempts or deadline_seconds")
    if max_attempts is not None and max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")

    # Imported here rather than with the module: handlers that never retry (a GET of a job) should not pay for
    # tenacity (and the asyncio it loads) at cold start.
    import tenacity

    def before(retry_state: tenacity.RetryCallState) -> None:
        """Runs before every attempt; the first one fixes the deadline (kept per call and per thread)."""
        if deadline_seconds is not None and retry_state.attempt_number == 1:
            retry_state.retry_object.statistics[_DEADLINE_KEY] = clock() + deadline_seconds

    def stop(retry_state: tenacity.RetryCallState) -> bool:
        """After a failed attempt (its wait already computed): whether any limit says to give up."""
        if max_attempts is not None and retry_state.attempt_number >= max_attempts:
            return True
        if deadline_seconds is not None:
            deadline: float = retry_state.retry_object.statistics[_DEADLINE_KEY]
            if clock() + retry_state.upcoming_sleep > deadline:
                return True
        return max_wait_seconds is not None and retry_state.upcoming_sleep > max_wait_seconds

    def wait(retry_state: tenacity.RetryCallState) -> float:
        if max_attempts is not None and retry_state.attempt_number >= max_attempts:
            return 0.0  # no attempt follows: nothing to compute (and no jitter drawn)
        return backoff(retry_state.attempt_number, _error(retry_state))

    def before_sleep(retry_state: tenacity.RetryCallState) -> None:
        if on_retry is not None:
            on_retry(retry_state.attempt_number, _error(retry_state), retry_state.upcoming_sleep)

    def give_up(retry_state: tenacity.RetryCallState) -> object:
        if on_give_up is not None:
            on_give_up(retry_state.attempt_number, _error(retry_state))
        raise _error(retry_state)

    return tenacity.Retrying(
        retry=_retry_condition(retry_on),
        stop=stop,
        wait=wait,
        before=before,
        before_sleep=before_sleep if on_retry is not None else None,
        sleep=lambda seconds: sleep(float(seconds)),  # tenacity passes a float subclass; callers get a float
        reraise=True,
        retry_error_callback=give_up if on_give_up is not None else None,
    )


def _retry_condition(retry_on: RetryOn) -> tenacity.retry_base:
    import tenacity

    if isinstance(retry_on, type | tuple):
        return tenacity.retry_if_exception_type(retry_on)
    return tenacity.retry_if_exception(retry_on)


def _error(retry_state: tenacity.RetryCallState) -> BaseException:
    """The error of the attempt that just failed (the retry conditions only ever pick failed attempts)."""
    outcome = retry_state.outcome
    error = outcome.exception() if outcome is not None else None
    if error is None:
        raise RuntimeError("no failed attempt to retry")
    return error
