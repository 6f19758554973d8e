"""S3 intake: event parsing and pacing under DashScope's submit rate."""

from __future__ import annotations

import json

import pytest

from wanflow.capabilities import MODELS
from wanflow.errors import RetryLaterError
from wanflow.usecases.intake import SubmitPacer, objects_in_message


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def s3_message(*records: dict) -> str:
    return json.dumps({"Records": list(records)})


def created(key: str, event: str = "ObjectCreated:Put", version: str | None = "v1") -> dict:
    return {"eventName": event, "s3": {"bucket": {"name": "intake"}, "object": {"key": key, "versionId": version}}}


def test_only_created_objects_under_incoming_count_and_keys_are_decoded():
    message = s3_message(
        created("incoming/my+cat%281%29.png"),
        created("incoming/folder/"),
        created("uploads/x.png"),
        created("incoming/removed.png", event="ObjectRemoved:Delete"),
    )
    objects = objects_in_message(message)
    assert [(o.bucket, o.key, o.version_id) for o in objects] == [("intake", "incoming/my cat(1).png", "v1")]


def test_s3_test_events_carry_no_objects():
    assert objects_in_message(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []


@pytest.mark.parametrize(
    ("model", "concurrency"), [("wan2.6-i2v-flash", 2), ("wan2.2-i2v-flash", 2), ("wan2.6-i2v", 5)]
)
def test_a_burst_of_1000_never_exceeds_the_models_submit_rate(model, concurrency):
    spec = MODELS[model]
    fake = FakeTime()
    pacer = SubmitPacer(concurrency, clock=fake.clock, sleep=fake.sleep)
    submits = []
    for _ in range(1000):
        pacer(spec)
        submits.append(fake.now)
    # One worker's share: within any one-second window it submits at most rps / concurrency (rounded up) times,
    # so `concurrency` workers together stay within the model's rate.
    per_worker = spec.submit_rps / concurrency
    for index, moment in enumerate(submits):
        in_window = sum(1 for other in submits[index:] if other < moment + 1.0)
        assert in_window <= max(1, -(-spec.submit_rps // concurrency))
    total_seconds = submits[-1] - submits[0]
    assert total_seconds == pytest.approx(999 / per_worker)


def test_models_are_paced_independently():
    fake = FakeTime()
    pacer = SubmitPacer(2, clock=fake.clock, sleep=fake.sleep)
    pacer(MODELS["wan2.2-i2v-flash"])
    pacer(MODELS["wan2.6-i2v-flash"])  # another model's budget: no wait
    assert fake.now == 1000.0
    pacer(MODELS["wan2.2-i2v-flash"])  # 2 rps shared by 2 workers: one per second each
    assert fake.now == pytest.approx(1001.0)


def test_after_a_throttle_the_worker_hands_work_back_until_the_pause_ends():
    fake = FakeTime()
    pacer = SubmitPacer(2, clock=fake.clock, sleep=fake.sleep)
    pacer.throttled(retry_after_seconds=3)
    with pytest.raises(RetryLaterError):
        pacer(MODELS["wan2.6-i2v-flash"])
    fake.now += 3.01
    pacer(MODELS["wan2.6-i2v-flash"])
