"""The deployment-wide rate limiter: wanflow.adapters.rate_limits against moto DynamoDB, and its in-memory fake.

Both run the same rules, so every rule is tested on both. The clock is a test clock that only moves when a test
moves it, so every wait and turn is known in advance.
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import boto3
import pytest

from wanflow.adapters.rate_limits import DynamoRateLimiter
from wanflow.ports import RateLimiter
from wanflow_tools.emulator.ratelimit import SlidingWindowLimiter
from wanflow_tools.fakes import InMemoryRateLimiter

TABLE = "wanflow-test"
START = 1_700_000_000.0


def near(expected: Any) -> Any:
    """Equal to within a microsecond: waits are differences of unix times near 1.7e9, whose floats are 0.24 us apart."""
    return pytest.approx(expected, rel=0, abs=1e-6)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def aws(moto_dynamodb: Callable[[str, str], None]) -> None:
    moto_dynamodb("AdmissionTable", TABLE)


def dynamo_limiter(clock: Callable[[], float]) -> DynamoRateLimiter:
    """A limiter with its own boto3 session, like a separate Lambda invocation (boto3 resources are not shared
    across threads)."""
    return DynamoRateLimiter(boto3.session.Session().resource("dynamodb").Table(TABLE), clock=clock)


@pytest.fixture(params=["dynamo", "memory"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "dynamo":
        request.getfixturevalue("aws")
    return str(request.param)


def make(kind: str, clock: Callable[[], float]) -> RateLimiter:
    return dynamo_limiter(clock) if kind == "dynamo" else InMemoryRateLimiter(clock)


@pytest.fixture
def limiter(kind: str, clock: Clock) -> RateLimiter:
    return make(kind, clock)


def waits(limiter: RateLimiter, count: int, key: str = "q", per_second: float = 10, max_wait: float = 10) -> list:
    return [limiter.reserve(key, per_second, max_wait_seconds=max_wait) for _ in range(count)]


def test_sequential_reservations_are_one_spacing_apart(limiter: RateLimiter, clock: Clock):
    assert waits(limiter, 4) == near([0.0, 0.1, 0.2, 0.3])
    clock.now += 0.25  # the next free turn is START + 0.4
    assert waits(limiter, 2) == near([0.15, 0.25])


def test_spacing_is_rounded_up_to_whole_milliseconds(limiter: RateLimiter):
    # 1/15 s stored as 0.066 s would fit 16 turns into 0.99 s; 0.067 s fits 15 into 1.005 s.
    assert waits(limiter, 16, per_second=15)[15] == near(1.005)


def test_a_turn_is_never_before_its_callers_clock(limiter: RateLimiter, clock: Clock):
    # Turns are whole milliseconds. Were a clock reading between two rounded down, the first turn would be used
    # 0.4 ms after it and the 21st (at 20/s) 0.9996 s after the first use: 21 requests in one second.
    clock.now += 0.0004
    found = waits(limiter, 21, per_second=20)
    assert found[0] == near(0.0006)
    assert found[20] - found[0] >= 1.0 - 1e-6


def test_beyond_max_wait_is_none_and_reserves_nothing(limiter: RateLimiter, clock: Clock):
    assert waits(limiter, 4, max_wait=0.3) == near([0.0, 0.1, 0.2, 0.3])
    assert waits(limiter, 3, max_wait=0.3) == [None, None, None]
    clock.now += 0.1
    # Had a refused call taken a turn, the next free one would be later than START + 0.4.
    assert waits(limiter, 1, max_wait=0.3) == near([0.3])


def test_idle_time_earns_no_burst(limiter: RateLimiter, clock: Clock):
    assert waits(limiter, 1) == [0.0]
    clock.now += 60
    assert waits(limiter, 3) == near([0.0, 0.1, 0.2])


def test_keys_are_independent(limiter: RateLimiter):
    assert waits(limiter, 3, key="queries") == near([0.0, 0.1, 0.2])
    assert waits(limiter, 2, key="create:wan2.2-i2v-flash", per_second=2) == near([0.0, 0.5])
    assert waits(limiter, 1, key="queries") == near([0.3])


def test_the_dynamodb_item_has_the_next_turn_and_a_ttl(aws: None, clock: Clock):
    waits(dynamo_limiter(clock), 2, key="queries", per_second=15)
    item = boto3.resource("dynamodb").Table(TABLE).get_item(Key={"pk": "rate#queries"})["Item"]
    assert item["next_at"] == Decimal(START) + Decimal("0.134")
    assert START + 60 < int(str(item["expires_at"])) < START + 3600


def test_concurrent_reservations_get_distinct_turns_spaced_apart(kind: str, clock: Clock):
    threads, per_thread, per_second = 8, 5, 15
    barrier = threading.Barrier(threads)
    shared = make(kind, clock)

    def reserve_all(_: int) -> list[float]:
        # DynamoDB: one limiter (and boto3 session) per thread, like separate invocations that share only the table.
        limiter = dynamo_limiter(clock) if kind == "dynamo" else shared
        barrier.wait()
        found = waits(limiter, per_thread, per_second=per_second)
        assert None not in found
        return [START + wait for wait in found]

    # Switch threads every microsecond instead of every 5 ms, so that a reservation that is not atomic is likely
    # to be interrupted halfway, as two Lambda invocations would interleave.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(threads) as pool:
            turns = sorted(turn for found in pool.map(reserve_all, range(threads)) for turn in found)
    finally:
        sys.setswitchinterval(switch_interval)
    # Every thread started on a missing item, so they all raced for the first turn; exactly one got it.
    assert turns[0] == START
    assert len(turns) == threads * per_thread
    assert min(b - a for a, b in itertools.pairwise(turns)) >= 0.067 - 1e-6
    assert turns[-1] == near(START + (len(turns) - 1) * 0.067)


def test_granted_turns_pass_the_emulators_sliding_window(kind: str, clock: Clock):
    per_second = 15
    limiter = make(kind, clock)
    rng = random.Random(20240601)
    turns: list[float] = []
    refused = 0
    # Callers arrive about 40 a second for 4 seconds, far above the budget, each waiting up to half a second.
    while clock.now < START + 4:
        clock.now += rng.expovariate(40)
        wait = limiter.reserve("queries", per_second, max_wait_seconds=0.5)
        if wait is None:
            refused += 1
        else:
            turns.append(clock.now + wait)
    assert refused > 0
    assert len(turns) >= 4 * per_second  # the budget was used, not just respected
    if isinstance(limiter, InMemoryRateLimiter):
        assert [turn for _, turn in limiter.granted] == near(turns)
    turns.sort()
    # At most 15 turns in any window (t - 1, t]: the 16th turn after any turn is a whole second or more later ...
    assert all(later - earlier >= 1.0 for earlier, later in zip(turns, turns[per_second:], strict=False))
    # ... so the emulator's limiter, fed each request at its turn, refuses none.
    at = [0.0]
    emulator = SlidingWindowLimiter(lambda: at[0])
    for turn in turns:
        at[0] = turn
        assert emulator.allow("queries", per_second), f"refused at {turn - START:.3f}"
