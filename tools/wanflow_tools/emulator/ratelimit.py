"""Requests-per-second limits, counted over a sliding one-second window of the emulator's clock.

A sliding window (rather than a token bucket) makes the limit exact and deterministic: with a frozen test clock,
the (limit+1)-th request is always the first one refused.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque

from wanflow_tools.emulator.config import Clock

WINDOW_SECONDS = 1.0


class SlidingWindowLimiter:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._accepted: dict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str, limit: int) -> bool:
        """Records the request and returns True when fewer than `limit` were accepted for `key` in the window."""
        now = self._clock()
        with self._lock:
            accepted = self._accepted[key]
            while accepted and accepted[0] <= now - WINDOW_SECONDS:
                accepted.popleft()
            if len(accepted) >= limit:
                return False
            accepted.append(now)
            return True

    def reset(self) -> None:
        with self._lock:
            self._accepted.clear()
