"""Running slots in DynamoDB (through moto): a slot per job id, never more holders than slots, even when many
dispatchers claim at once."""

from __future__ import annotations

import threading
from collections.abc import Callable

import boto3
import pytest

from wanflow.adapters.running_slots import RECENT_RUNS, DynamoRunningSlots

TABLE = "wanflow-admission"


@pytest.fixture
def slots(moto_dynamodb: Callable[[str, str], None]) -> DynamoRunningSlots:
    moto_dynamodb("AdmissionTable", TABLE)
    return new_slots()


def new_slots() -> DynamoRunningSlots:
    """Its own session, as a separate Lambda invocation would have."""
    return DynamoRunningSlots(boto3.session.Session().resource("dynamodb").Table(TABLE))


def test_claims_stop_at_the_slot_count_and_a_job_holds_one_slot_however_often_granted(
    slots: DynamoRunningSlots,
) -> None:
    assert slots.claim("m", "a", 2) and slots.claim("m", "a", 2)  # the same job again: still one slot
    assert slots.claim("m", "b", 2)
    assert not slots.claim("m", "c", 2)
    assert slots.holders("m") == {"a", "b"}
    assert slots.claim("m", "a", 2)  # a holder claiming again while full is told it holds one


def test_release_frees_a_slot_once_and_models_are_separate(slots: DynamoRunningSlots) -> None:
    slots.claim("m", "a", 1)
    assert slots.claim("other", "x", 1)
    assert slots.release("m", "a") and not slots.release("m", "a")
    assert slots.holders("m") == set() and slots.holders("other") == {"x"}
    assert slots.claim("m", "c", 1) and not slots.release("m", "never-held")


def test_the_typical_run_is_the_average_of_recent_runs(slots: DynamoRunningSlots) -> None:
    assert slots.typical_run_seconds("m") is None
    slots.record_run("m", 10)
    slots.record_run("m", 20)
    assert slots.typical_run_seconds("m") == pytest.approx(15)
    for _ in range(RECENT_RUNS * 3):  # old runs fade: the average follows the model's recent runs
        slots.record_run("m", 100)
    assert slots.typical_run_seconds("m") == pytest.approx(100, rel=0.05)


def test_concurrent_dispatchers_never_hold_more_slots_than_there_are(slots: DynamoRunningSlots) -> None:
    barrier = threading.Barrier(8)
    granted: list[str] = []
    lock = threading.Lock()

    def dispatcher(index: int) -> None:
        mine = new_slots()
        barrier.wait()
        for job in range(10):
            job_id = f"job-{index}-{job}"
            if mine.claim("m", job_id, 5):
                with lock:
                    granted.append(job_id)

    threads = [threading.Thread(target=dispatcher, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 5 and slots.holders("m") == set(granted)
