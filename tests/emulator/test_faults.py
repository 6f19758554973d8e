"""Faults on request: every kind, deterministic by count, from the config or the control endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from emulator_support import ASYNC, AUTH, CREATE, body, create_task, query, wait_for_status, wait_until

from wanflow_tools.emulator import Emulator, FaultPlan, FaultPlanError


def set_faults(emulator: Emulator, rules: list[dict[str, Any]]) -> None:
    reply = httpx.post(f"{emulator.root_url}/_emulator/faults", json=rules)
    assert reply.status_code == 200, reply.text


def succeeded_video_url(client: httpx.Client) -> str:
    task_id = create_task(client)
    return wait_for_status(client, task_id, "SUCCEEDED")["output"]["video_url"]


@pytest.mark.parametrize(
    ("status", "code"), [(429, "Throttling.RateQuota"), (500, "InternalError"), (503, "ServiceUnavailable")]
)
def test_create_answers_injected_status(client: httpx.Client, emulator: Emulator, status: int, code: str):
    set_faults(emulator, [{"on": "create", "status": status}])
    reply = client.post(CREATE, json=body(), headers=ASYNC)
    assert reply.status_code == status
    assert reply.json()["code"] == code
    assert emulator.store.count() == 0
    create_task(client)  # the fault fired once
    assert emulator.store.count() == 1


def test_create_fault_counts_skip_and_model_filter(client: httpx.Client, emulator: Emulator):
    set_faults(emulator, [{"on": "create", "status": 500, "times": 2, "skip": 1, "model": "wan2.2-i2v-flash"}])
    models = ["wan2.6-i2v-flash"] + ["wan2.2-i2v-flash"] * 4
    statuses = [client.post(CREATE, json=body(model=model), headers=ASYNC).status_code for model in models]
    assert statuses == [200, 200, 500, 500, 200]


def test_create_dropped_after_accept_leaves_exactly_one_task(client: httpx.Client, emulator: Emulator):
    set_faults(emulator, [{"on": "create", "action": "drop_after_accept"}])
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(CREATE, json=body(), headers=ASYNC)
    assert emulator.store.count() == 1
    (task,) = emulator.store.all()
    assert query(client, task.task_id)["output"]["task_status"] in ("PENDING", "RUNNING")


def test_create_hang_past_client_timeout_then_respond_creates_the_task(client: httpx.Client, emulator: Emulator):
    set_faults(emulator, [{"on": "create", "action": "hang", "seconds": 0.5, "then": "respond"}])
    with pytest.raises(httpx.ReadTimeout):
        client.post(CREATE, json=body(), headers=ASYNC, timeout=0.1)
    wait_until(lambda: emulator.store.count() == 1, what="the task created after the hang")


def test_create_hang_then_close_creates_nothing(client: httpx.Client, emulator: Emulator):
    set_faults(emulator, [{"on": "create", "action": "hang", "seconds": 0.2, "then": "close"}])
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(CREATE, json=body(), headers=ASYNC, timeout=5.0)
    assert emulator.store.count() == 0


def test_stopping_cuts_a_hang_short(start_emulator: Callable[..., Emulator]):
    emulator = start_emulator(faults=[{"on": "create", "action": "hang", "seconds": 60}])
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(httpx.post(emulator.base_url + CREATE, json=body(), headers=ASYNC, timeout=30))
        except httpx.HTTPError as error:
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    wait_until(lambda: not emulator.faults.remaining(), what="the hang to begin")
    started = time.monotonic()
    emulator.stop()
    caller.join(10)
    assert time.monotonic() - started < 5
    assert isinstance(outcome[0], httpx.HTTPError)


@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (429, "Throttling.RateQuota")])
def test_query_answers_injected_status_for_given_times(
    client: httpx.Client, emulator: Emulator, status: int, code: str
):
    task_id = create_task(client)
    set_faults(emulator, [{"on": "query", "status": status, "times": 2}])
    for _ in range(2):
        reply = client.get(f"/tasks/{task_id}", headers=AUTH)
        assert (reply.status_code, reply.json()["code"]) == (status, code)
    assert client.get(f"/tasks/{task_id}", headers=AUTH).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fail_code", "message_part"),
    [
        ("DataInspectionFailed", "inappropriate content"),
        ("IPInfringementSuspect", "IP infringement"),
        ("InternalError", "internal error"),
    ],
)
def test_task_ends_failed_with_chosen_code(client: httpx.Client, emulator: Emulator, fail_code: str, message_part: str):
    set_faults(emulator, [{"on": "task", "fail_code": fail_code}])
    failing = create_task(client)
    healthy = create_task(client)
    payload = wait_for_status(client, failing, "FAILED")
    output = payload["output"]
    assert output["code"] == fail_code
    assert message_part in output["message"]
    assert output["end_time"] and output["scheduled_time"]
    assert "video_url" not in output and "usage" not in payload
    wait_for_status(client, healthy, "SUCCEEDED")


def test_task_faults_pick_tasks_by_prompt_and_fail_the_next_n_with_a_provider_side_code(
    client: httpx.Client, emulator: Emulator
):
    set_faults(emulator, [{"on": "task", "fail_code": "InternalError", "times": 2, "prompt": "flaky"}])
    other = create_task(client)  # its prompt does not match: left alone, and the rule not used up
    flaky = body()
    flaky["input"]["prompt"] = "a flaky lighthouse"
    first, second, third = (create_task(client, flaky) for _ in range(3))
    for task_id in (first, second):
        output = wait_for_status(client, task_id, "FAILED")["output"]
        assert output["code"] == "InternalError" and "internal error" in output["message"]
        assert output["end_time"] and "video_url" not in output
    wait_for_status(client, third, "SUCCEEDED")
    wait_for_status(client, other, "SUCCEEDED")
    assert FaultPlan([{"on": "task", "fail_code": "X", "prompt": "p"}]).remaining()[0]["prompt"] == "p"


def test_task_failure_message_can_be_chosen(client: httpx.Client, emulator: Emulator):
    set_faults(emulator, [{"on": "task", "fail_code": "Arrearage", "message": "Access denied, account overdue."}])
    output = wait_for_status(client, create_task(client), "FAILED")["output"]
    assert (output["code"], output["message"]) == ("Arrearage", "Access denied, account overdue.")


@pytest.mark.slow
def test_download_truncated_announces_full_length_but_closes_early(client: httpx.Client, emulator: Emulator):
    video_url = succeeded_video_url(client)
    full_size = len(httpx.get(video_url).content)
    set_faults(emulator, [{"on": "download", "action": "truncate", "fraction": 0.5}])
    received = 0
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", video_url) as reply:
        assert int(reply.headers["content-length"]) == full_size
        for chunk in reply.iter_raw():
            received += len(chunk)
    assert 0 < received < full_size
    assert len(httpx.get(video_url).content) == full_size  # the fault fired once


@pytest.mark.slow
def test_download_slow_is_throttled(client: httpx.Client, emulator: Emulator):
    video_url = succeeded_video_url(client)
    size = len(httpx.get(video_url).content)
    set_faults(emulator, [{"on": "download", "action": "slow", "bytes_per_second": size * 2}])
    started = time.monotonic()
    slow = httpx.get(video_url, timeout=30)
    assert slow.status_code == 200 and len(slow.content) == size
    assert time.monotonic() - started >= 0.4  # half a second at the injected rate, minus one chunk's pause


@pytest.mark.slow
def test_download_404(client: httpx.Client, emulator: Emulator):
    video_url = succeeded_video_url(client)
    set_faults(emulator, [{"on": "download", "status": 404}])
    missing = httpx.get(video_url)
    assert missing.status_code == 404
    assert "<Code>NoSuchKey</Code>" in missing.text
    assert httpx.get(video_url).status_code == 200


def test_control_endpoints(client: httpx.Client, emulator: Emulator):
    control = f"{emulator.root_url}/_emulator"
    assert httpx.get(f"{control}/health").json() == {"status": "ok", "base_url": emulator.base_url}

    refused = httpx.post(f"{control}/faults", json=[{"on": "nowhere"}])
    assert (refused.status_code, refused.json()["code"]) == (400, "InvalidFaultPlan")
    set_faults(emulator, [{"on": "query", "status": 500, "times": 3}])
    assert httpx.get(f"{control}/faults").json()["faults"][0]["times"] == 3
    assert httpx.delete(f"{control}/faults").json() == {"faults": []}

    task_id = create_task(client)
    (listed,) = httpx.get(f"{control}/tasks").json()["tasks"]
    assert listed["task_id"] == task_id
    assert listed["img_url"].startswith("data:image/png;base64,<")  # summarised, never echoed
    assert httpx.post(f"{control}/reset").status_code == 200
    assert emulator.store.count() == 0
    assert query(client, task_id)["output"]["task_status"] == "UNKNOWN"


def test_fault_plan_from_config(start_emulator: Callable[..., Emulator]):
    emulator = start_emulator(faults=[{"on": "create", "status": 429, "times": -1}])
    with httpx.Client(base_url=emulator.base_url) as client:
        for _ in range(3):
            assert client.post(CREATE, json=body(), headers=ASYNC).status_code == 429
    assert emulator.faults.remaining()[0]["times"] == -1


@pytest.mark.parametrize(
    "rules",
    [
        {"on": "create"},
        [{"on": "create"}],
        [{"on": "task"}],
        [{"on": "create", "status": 200}],
        [{"on": "create", "status": "500"}],
        [{"on": "query", "action": "truncate"}],
        [{"on": "create", "action": "hang", "then": "explode"}],
        [{"on": "download", "action": "slow", "bytes_per_second": 0}],
        [{"on": "create", "status": 500, "times": 0}],
        [{"on": "create", "status": 500, "colour": "red"}],
    ],
)
def test_malformed_fault_plans_are_refused(rules: Any):
    with pytest.raises(FaultPlanError):
        FaultPlan(rules)


def test_documented_example_plan_parses():
    from wanflow_tools.emulator import faults

    example = faults.__doc__.split("\n\n")[2]
    assert len(FaultPlan(json.loads(example)).remaining()) == 13
