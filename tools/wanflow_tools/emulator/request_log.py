"""Every DashScope API request the emulator answered: what it was, how it was answered, and when.

`GET /_emulator/requests` shows it, so that tests and `bench/burst.py` can measure what a client did to the
account: queries per second (peak over any sliding one-second window, the way DashScope's limiter counts), creates,
429s received. Reset with the rest of the emulator's state.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any

from wanflow_tools.emulator.config import Clock

DROPPED = 0  # the status recorded for a request answered by hanging up


class RequestLog:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: list[tuple[str, int, float]] = []

    def record(self, kind: str, status: int) -> None:
        with self._lock:
            self._entries.append((kind, status, self._clock()))

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

    def summary(self, *, with_times: bool = False) -> dict[str, Any]:
        """Per kind (create, query, list, cancel): requests, answers by status, 429s, the busiest one-second window
        and, with `with_times`, every request's time and every 429's."""
        with self._lock:
            entries = list(self._entries)
        times: dict[str, list[float]] = defaultdict(list)
        statuses: dict[str, Counter[int]] = defaultdict(Counter)
        for kind, status, moment in entries:
            times[kind].append(moment)
            statuses[kind][status] += 1
        summary: dict[str, Any] = {}
        for kind, moments in times.items():
            moments.sort()
            entry: dict[str, Any] = {
                "requests": len(moments),
                "statuses": {str(status): count for status, count in sorted(statuses[kind].items())},
                "throttled": statuses[kind][429],
                "peak_per_second": peak_in_window(moments, 1.0),
                "first": moments[0],
                "last": moments[-1],
            }
            if with_times:
                entry["times"] = moments
                refused = (when for name, status, when in entries if name == kind and status == 429)
                entry["throttled_times"] = sorted(refused)
            summary[kind] = entry
        return summary


def peak_in_window(sorted_times: list[float], window: float) -> int:
    """The most requests in any half-open window of `window` seconds (two pointers over sorted times)."""
    peak = start = 0
    for end, moment in enumerate(sorted_times):
        while sorted_times[start] <= moment - window:
            start += 1
        peak = max(peak, end - start + 1)
    return peak
