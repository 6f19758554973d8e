"""Rate limits: per-model submit RPS from the capability table, and 20 queries per second.

The clock stands still, so "within one second" is exact and the tests are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from emulator_support import ASYNC, AUTH, CREATE, ManualClock, body, create_task

from wanflow.capabilities import find_model
from wanflow_tools.emulator import Emulator


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def limited(start_emulator: Callable[..., Emulator], clock: ManualClock) -> Emulator:
    return start_emulator(clock=clock, rate_limits=True, pending_seconds=1000)


def assert_throttled(reply: httpx.Response) -> None:
    assert reply.status_code == 429, reply.text
    payload = reply.json()
    assert payload["code"] == "Throttling.RateQuota"
    assert payload["message"].startswith("Requests rate limit exceeded")
    assert payload["request_id"]


@pytest.mark.parametrize("model", ["wan2.2-i2v-flash", "wan2.6-i2v-flash"])
def test_submit_rate_is_limited_per_model(limited: Emulator, clock: ManualClock, model: str):
    allowed = find_model(model).submit_rps
    with httpx.Client(base_url=limited.base_url) as client:
        for _ in range(allowed):
            create_task(client, body(model=model))
        assert_throttled(client.post(CREATE, json=body(model=model), headers=ASYNC))
        assert limited.store.count() == allowed  # a throttled create makes no task

        other = "wan2.5-i2v-preview" if model != "wan2.5-i2v-preview" else "wan2.6-i2v-flash"
        create_task(client, body(model=other))  # another model has its own budget

        clock.advance(1.0)
        create_task(client, body(model=model))


def test_twenty_queries_per_second(limited: Emulator, clock: ManualClock):
    with httpx.Client(base_url=limited.base_url) as client:
        task_id = create_task(client)
        for number in range(20):
            path = "/tasks" if number % 2 else f"/tasks/{task_id}"  # task queries and lists share the budget
            assert client.get(path, headers=AUTH).status_code == 200
        assert_throttled(client.get(f"/tasks/{task_id}", headers=AUTH))
        assert_throttled(client.get("/tasks", headers=AUTH))
        clock.advance(1.0)
        assert client.get(f"/tasks/{task_id}", headers=AUTH).status_code == 200


def test_limits_can_be_switched_off(start_emulator: Callable[..., Emulator], clock: ManualClock):
    emulator = start_emulator(clock=clock, rate_limits=False, pending_seconds=1000)
    with httpx.Client(base_url=emulator.base_url) as client:
        for _ in range(4):
            create_task(client, body(model="wan2.2-i2v-flash"))
        for _ in range(30):
            assert client.get("/tasks", headers=AUTH).status_code == 200


def test_the_request_log_counts_what_the_account_saw(limited: Emulator, clock: ManualClock):
    with httpx.Client(base_url=limited.base_url) as client:
        task_id = create_task(client, body(model="wan2.2-i2v-flash"))
        create_task(client, body(model="wan2.2-i2v-flash"))
        assert_throttled(client.post(CREATE, json=body(model="wan2.2-i2v-flash"), headers=ASYNC))
        for _ in range(21):
            client.get(f"/tasks/{task_id}", headers=AUTH)
        clock.advance(1.0)
        client.get(f"/tasks/{task_id}", headers=AUTH)
        log = httpx.get(f"{limited.root_url}/_emulator/requests", params={"times": "1"}).json()["requests"]
        assert log["create"]["requests"] == 3 and log["create"]["throttled"] == 1
        assert log["create"]["statuses"] == {"200": 2, "429": 1}
        assert log["query"]["requests"] == 22 and log["query"]["throttled"] == 1
        # Refused queries count too: 21 arrived within one second, whatever the answer.
        assert log["query"]["peak_per_second"] == 21 and len(log["query"]["times"]) == 22
        assert len(log["query"]["throttled_times"]) == 1 and log["create"]["throttled_times"] == [clock() - 1.0]
        httpx.post(f"{limited.root_url}/_emulator/reset")
        assert httpx.get(f"{limited.root_url}/_emulator/requests").json() == {"requests": {}}
