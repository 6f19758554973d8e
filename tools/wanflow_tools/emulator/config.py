"""Settings of one emulator instance."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wanflow_tools.emulator.protocol import DEFAULT_UTC_OFFSET_HOURS

Clock = Callable[[], float]  # epoch seconds, like time.time


@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port (the CLI defaults to 8080)
    api_key: str | None = None  # when set, only this key is accepted; otherwise any Bearer key is
    pending_seconds: float = 2.0  # time a task spends PENDING (longer when its model's running slots are full)
    running_seconds: float = 5.0  # minimum time RUNNING (longer while its video is still rendering)
    task_ttl_seconds: float = 86_400.0  # after this long from submission a task answers UNKNOWN
    url_ttl_seconds: float = 86_400.0  # a video URL stops serving this long after the task ended
    faults: list[dict[str, Any]] = field(default_factory=list)  # see wanflow_tools.emulator.faults
    region: str | None = None  # a region id restricts model names to that region; None accepts every name
    rate_limits: bool = True  # per-model submit RPS and the 20 queries/s limit
    query_rps: int = 20
    # Concurrent RUNNING tasks per model, for an account with raised quotas (what wanflow's ModelSlots would be set
    # to); a model not listed keeps the capability table's `max_running`.
    max_running: dict[str, int] = field(default_factory=dict)
    render_workers: int | None = None  # default: min(4, CPUs)
    render_in_processes: bool = False  # True: spawned worker processes instead of threads
    results_dir: str | None = None  # where videos are written; default: a temporary directory removed on stop
    utc_offset_hours: float = DEFAULT_UTC_OFFSET_HOURS  # zone of DashScope's time strings and list filters
    clock: Clock = time.time  # injectable, so that tests can expire tasks and URLs without sleeping
    tick_seconds: float = 0.02  # how often the lifecycle advances in the background
