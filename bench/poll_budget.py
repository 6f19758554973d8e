"""Step Functions state transitions and DashScope queries per job, for tasks of 1 minute, 5 minutes and 24 hours.

Counts come from the poll policy itself (`wanflow.usecases.poll.next_poll_wait`) and the shape of
statemachine/job.asl.json (each loop is Wait -> CheckStatus -> Choice), so they change when either changes.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from wanflow.usecases.poll import next_poll_wait

STATE_MACHINE = Path(__file__).resolve().parent.parent / "statemachine" / "job.asl.json"
HISTORY_LIMIT = 25_000
# History events per loop iteration: WaitStateEntered/Exited, TaskStateEntered, TaskScheduled, TaskStarted,
# TaskSucceeded, TaskStateExited, ChoiceStateEntered/Exited.
EVENTS_PER_LOOP = 9


def loop_states() -> int:
    definition = json.loads(STATE_MACHINE.read_text())
    return sum(1 for state in definition["States"].values() if state["Type"] in {"Wait", "Choice"}) + 1


def budget(task_duration: timedelta, base_seconds: int = 15) -> dict[str, float]:
    elapsed = timedelta(seconds=base_seconds)  # the execution starts with a Wait
    queries = 0
    while True:
        queries += 1
        if elapsed >= task_duration:
            break
        elapsed += timedelta(seconds=next_poll_wait(elapsed, base_seconds))
    per_loop = loop_states()
    transitions = queries * per_loop + 2  # + Finalize + Done
    return {
        "task_minutes": task_duration.total_seconds() / 60,
        "dashscope_queries": queries,
        "state_transitions": transitions,
        "history_events_estimate": queries * EVENTS_PER_LOOP + 6,
        "history_limit_share": round((queries * EVENTS_PER_LOOP + 6) / HISTORY_LIMIT, 4),
        "seen_within_seconds_of_end": round((elapsed - task_duration).total_seconds(), 1),
    }


def run() -> dict[str, dict[str, float]]:
    return {
        label: budget(duration)
        for label, duration in (
            ("1 minute", timedelta(minutes=1)),
            ("5 minutes", timedelta(minutes=5)),
            ("24 hours", timedelta(hours=24)),
        )
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
