"""wanflow.retry: attempt counts, deadlines, Retry-After, pass-through of other errors, jitter bounds.

Time is a fake clock that advances only when something sleeps (or a test's call says it took a while); jitter is
a recording stand-in for `random`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from wanflow.retry import (
    DEFAULT_BACKOFF,
    exponential,
    full_jitter,
    honour_retry_after,
    jittered,
    retry_after_seconds,
    retrying,
)


class Busy(Exception):
    def __init__(self, retry_after_seconds: float | None = None) -> None:
        super().__init__("busy")
        self.retry_after_seconds = retry_after_seconds


class Broken(Exception):
    pass


class OddRetryAfter(Exception):
    retry_after_seconds = "7"  # not a number: ignored


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class RecordingRandom:
    """Picks a fixed point of the range (0 = low end, 1 = high end) and records every range asked for."""

    def __init__(self, point: float = 1.0) -> None:
        self.point = point
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float, /) -> float:
        self.ranges.append((a, b))
        return a + (b - a) * self.point


class Script:
    """A callable that raises the scripted errors in turn, then returns "done"; it can take time on a clock."""

    def __init__(self, *errors: BaseException, fake_time: FakeTime | None = None, takes: float = 0.0) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.fake_time = fake_time
        self.takes = takes

    def __call__(self) -> str:
        self.calls += 1
        if self.fake_time is not None:
            self.fake_time.now += self.takes
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def constant(seconds: float) -> Callable[[int, BaseException], float]:
    return lambda attempt_number, error: seconds


# ------------------------------------------------------------------------------------------------ attempts


@pytest.mark.parametrize(
    ("max_attempts", "failures", "expected_calls", "succeeds"),
    [
        (1, 0, 1, True),
        (1, 1, 1, False),
        (3, 2, 3, True),
        (3, 3, 3, False),
        (4, 10, 4, False),
        (5, 1, 2, True),
    ],
)
def test_attempt_counts(max_attempts: int, failures: int, expected_calls: int, succeeds: bool) -> None:
    fake_time = FakeTime()
    call = Script(*[Busy() for _ in range(failures)])
    retry = retrying(Busy, max_attempts=max_attempts, backoff=constant(1.0), sleep=fake_time.sleep)
    if succeeds:
        assert retry(call) == "done"
    else:
        with pytest.raises(Busy):
            retry(call)
    assert call.calls == expected_calls
    assert fake_time.sleeps == [1.0] * (expected_calls - 1)  # no wait after the last attempt


def test_giving_up_raises_the_last_error_itself() -> None:
    first, last = Busy(), Busy()
    with pytest.raises(Busy) as caught:
        retrying(Busy, max_attempts=2, backoff=constant(0.0), sleep=FakeTime().sleep)(Script(first, last))
    assert caught.value is last


@pytest.mark.parametrize(
    "retry_on",
    [Busy, (Busy, KeyError), lambda error: isinstance(error, Busy)],
    ids=["type", "tuple", "predicate"],
)
def test_an_error_not_picked_passes_through_at_once(retry_on: Any) -> None:
    fake_time = FakeTime()
    gave_up: list[int] = []
    call = Script(Broken(), Busy())
    retry = retrying(
        retry_on, max_attempts=5, sleep=fake_time.sleep, on_give_up=lambda attempt, error: gave_up.append(attempt)
    )
    with pytest.raises(Broken):
        retry(call)
    assert call.calls == 1
    assert fake_time.sleeps == []
    assert gave_up == []


@pytest.mark.parametrize(
    "retry_on",
    [Busy, lambda error: isinstance(error, Busy) and error.retry_after_seconds is None],
    ids=["type", "predicate"],
)
def test_the_predicate_decides_per_error(retry_on: Any) -> None:
    call = Script(Busy(), Busy())
    assert retrying(retry_on, max_attempts=3, backoff=constant(0.0), sleep=FakeTime().sleep)(call) == "done"
    assert call.calls == 3


def test_each_call_of_one_retrying_counts_its_own_attempts() -> None:
    retry = retrying(Busy, max_attempts=2, backoff=constant(0.0), sleep=FakeTime().sleep)
    assert retry(Script(Busy())) == "done"
    assert retry(Script(Busy())) == "done"


def test_hooks_see_each_retry_and_the_giving_up() -> None:
    retries: list[tuple[int, str, float]] = []
    gave_up: list[tuple[int, str]] = []
    with pytest.raises(Busy):
        retrying(
            Busy,
            max_attempts=3,
            backoff=lambda attempt_number, error: float(attempt_number),
            sleep=FakeTime().sleep,
            on_retry=lambda attempt, error, wait: retries.append((attempt, str(error), wait)),
            on_give_up=lambda attempt, error: gave_up.append((attempt, str(error))),
        )(Script(Busy(), Busy(), Busy()))
    assert retries == [(1, "busy", 1.0), (2, "busy", 2.0)]
    assert gave_up == [(3, "busy")]


@pytest.mark.parametrize("limits", [{}, {"max_attempts": 0}])
def test_limits_are_required(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        retrying(Busy, **limits)


# ------------------------------------------------------------------------------------------------ deadline


@pytest.mark.parametrize(
    ("deadline", "call_takes", "expected_sleeps", "succeeds"),
    [
        # waits 1, 2, 4, 8 ...: the next wait must end by the deadline, counted from the first call's start
        (100.0, 0.0, [1.0, 2.0, 4.0], True),  # three failures scripted, then success
        (7.0, 0.0, [1.0, 2.0, 4.0], True),  # ends exactly at the deadline: allowed
        (6.9, 0.0, [1.0, 2.0], False),
        (0.5, 0.0, [], False),
        (7.0, 1.0, [1.0, 2.0], False),  # calls take time too: 1 + 1 + 1 + 2 + 1 = 6, and 6 + 4 > 7
    ],
)
def test_deadline(deadline: float, call_takes: float, expected_sleeps: list[float], succeeds: bool) -> None:
    fake_time = FakeTime()
    call = Script(Busy(), Busy(), Busy(), fake_time=fake_time, takes=call_takes)
    retry = retrying(
        Busy,
        deadline_seconds=deadline,
        backoff=exponential(1.0),
        sleep=fake_time.sleep,
        clock=fake_time.clock,
    )
    if succeeds:
        assert retry(call) == "done"
    else:
        with pytest.raises(Busy):
            retry(call)
    assert fake_time.sleeps == expected_sleeps


def test_the_deadline_restarts_with_each_call() -> None:
    fake_time = FakeTime()
    retry = retrying(Busy, deadline_seconds=1.5, backoff=constant(1.0), sleep=fake_time.sleep, clock=fake_time.clock)
    assert retry(Script(Busy())) == "done"
    fake_time.now += 60
    assert retry(Script(Busy())) == "done"
    assert fake_time.sleeps == [1.0, 1.0]


def test_attempts_and_deadline_whichever_comes_first() -> None:
    fake_time = FakeTime()
    call = Script(*[Busy() for _ in range(10)])
    retry = retrying(
        Busy,
        max_attempts=3,
        deadline_seconds=100.0,
        backoff=constant(1.0),
        sleep=fake_time.sleep,
        clock=fake_time.clock,
    )
    with pytest.raises(Busy):
        retry(call)
    assert call.calls == 3


@pytest.mark.parametrize(
    ("retry_after", "expected_sleeps", "calls"),
    [(None, [1.0], 2), (5.0, [5.0], 2), (5.1, [], 1)],
)
def test_a_wait_longer_than_max_wait_gives_up_at_once(
    retry_after: float | None, expected_sleeps: list[float], calls: int
) -> None:
    fake_time = FakeTime()
    call = Script(Busy(retry_after))
    retry = retrying(
        Busy,
        max_attempts=4,
        max_wait_seconds=5.0,
        backoff=honour_retry_after(constant(1.0), exactly=True),
        sleep=fake_time.sleep,
    )
    if calls == 2:
        assert retry(call) == "done"
    else:
        with pytest.raises(Busy):
            retry(call)
    assert fake_time.sleeps == expected_sleeps
    assert call.calls == calls


# ------------------------------------------------------------------------------------------------ Retry-After


@pytest.mark.parametrize(
    ("retry_after", "backoff_seconds", "exactly", "expected"),
    [
        (None, 1.5, False, 1.5),
        (None, 1.5, True, 1.5),
        (3.0, 1.5, False, 3.0),  # longer than the backoff: honoured
        (1.0, 1.5, False, 1.5),  # shorter: the backoff wins
        (1.0, 1.5, True, 1.0),  # exactly: Retry-After even when shorter
        (0.0, 1.5, True, 0.0),
        (0.0, 1.5, False, 1.5),
    ],
)
def test_retry_after_is_honoured(
    retry_after: float | None, backoff_seconds: float, exactly: bool, expected: float
) -> None:
    fake_time = FakeTime()
    backoff = honour_retry_after(constant(backoff_seconds), exactly=exactly)
    assert retrying(Busy, max_attempts=2, backoff=backoff, sleep=fake_time.sleep)(Script(Busy(retry_after))) == "done"
    assert fake_time.sleeps == [expected]


@pytest.mark.parametrize(
    ("error", "expected"),
    [(Busy(2), 2.0), (Busy(0.5), 0.5), (Busy(None), None), (Broken(), None), (OddRetryAfter(), None)],
)
def test_retry_after_seconds_reads_the_attribute(error: BaseException, expected: float | None) -> None:
    assert retry_after_seconds(error) == expected


def test_the_default_backoff_is_full_jitter_honouring_retry_after() -> None:
    assert 0.0 <= DEFAULT_BACKOFF(1, Busy()) <= 0.5
    assert 0.0 <= DEFAULT_BACKOFF(10, Busy()) <= 8.0
    assert DEFAULT_BACKOFF(1, Busy(30)) == 30.0


# ------------------------------------------------------------------------------------------------ backoff and jitter


def test_exponential_doubles_up_to_the_cap() -> None:
    assert [exponential(0.5, 4.0)(n, Busy()) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [exponential(0.25)(n, Busy()) for n in range(1, 5)] == [0.25, 0.5, 1.0, 2.0]
    assert exponential(1.0, 8.0)(10_000, Busy()) == 8.0  # no overflow however many attempts


@pytest.mark.parametrize("point", [0.0, 0.5, 1.0])
def test_full_jitter_draws_from_zero_to_the_capped_bound(point: float) -> None:
    rng = RecordingRandom(point)
    backoff = full_jitter(0.5, 3.0, rng=rng)
    waits = [backoff(n, Busy()) for n in range(1, 6)]
    assert rng.ranges == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 3.0)]
    assert waits == [point * high for _, high in rng.ranges]


@pytest.mark.parametrize(("point", "expected"), [(0.0, [0.25, 0.5, 3.0]), (1.0, [0.375, 0.75, 4.5])])
def test_jittered_scales_by_a_factor_in_range(point: float, expected: list[float]) -> None:
    rng = RecordingRandom(point)
    backoff = jittered(honour_retry_after(exponential(0.25)), 1.0, 1.5, rng=rng)
    assert [backoff(1, Busy()), backoff(2, Busy()), backoff(3, Busy(3.0))] == expected
    assert rng.ranges == [(1.0, 1.5)] * 3


def test_a_real_random_stays_within_bounds() -> None:
    backoff = full_jitter(0.5, 2.0)
    for attempt_number in range(1, 8):
        bound = min(2.0, 0.5 * 2 ** (attempt_number - 1))
        assert all(0.0 <= backoff(attempt_number, Busy()) <= bound for _ in range(50))


def test_no_jitter_is_drawn_after_the_last_attempt() -> None:
    rng = RecordingRandom()
    with pytest.raises(Busy):
        retrying(Busy, max_attempts=3, backoff=full_jitter(1.0, 8.0, rng=rng), sleep=FakeTime().sleep)(
            Script(Busy(), Busy(), Busy())
        )
    assert rng.ranges == [(0.0, 1.0), (0.0, 2.0)]


def test_sleep_gets_plain_floats() -> None:
    fake_time = FakeTime()
    retrying(Busy, max_attempts=2, backoff=constant(1.0), sleep=fake_time.sleep)(Script(Busy()))
    assert [type(seconds) for seconds in fake_time.sleeps] == [float]
