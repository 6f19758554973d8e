"""Automatic retry of provider-side failures end to end: real HTTP to the API adapter, the handlers in-process, moto
executing statemachine/job.asl.json, and the DashScope emulator failing tasks on request (docs/emulator.md "Faults").

The backoff before a retry is 1 s here (WANFLOW_PROVIDER_RETRY_BACKOFF_SECONDS) and the poll interval 0 s, so a job
with a retry ends within seconds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from wanflow_tools.emulator import Emulator, EmulatorConfig
from wanflow_tools.moto_stack.stack import MotoStack
from wanflow_tools.testing import image_data_uri
from wanflow_tools.testing import wait_until as _wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EVENT_SCHEMA = json.loads((REPO / "schemas" / "job-event.v1.schema.json").read_text())
API_KEY = "sk-retries-test-key"
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(api_key=API_KEY, pending_seconds=0.2, running_seconds=0.3, rate_limits=False)
    with Emulator(config) as running:
        yield running


@pytest.fixture(scope="module")
def stack(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoStack]:
    # The stack gives the handlers the short backoff itself: set after it started, a variable could be read back
    # from the template's environment by a handler started later.
    with MotoStack(
        state_dir=tmp_path_factory.mktemp("state"),
        api_port=0,
        dashscope_base_url=emulator.base_url,
        dashscope_api_key=API_KEY,
        poll_interval_seconds=0,
        environment={"WANFLOW_PROVIDER_RETRY_BACKOFF_SECONDS": "1"},
    ) as running:
        yield running


@pytest.fixture
def api(stack: MotoStack, emulator: Emulator) -> Iterator[httpx.Client]:
    httpx.post(f"{emulator.root_url}/_emulator/reset").raise_for_status()
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


def wait_until(predicate: Callable[[], Any], what: str) -> Any:
    return _wait_until(predicate, timeout=TIMEOUT, interval=0.05, what=what)


def faults(emulator: Emulator, *rules: dict[str, Any]) -> None:
    httpx.post(f"{emulator.root_url}/_emulator/faults", json=list(rules)).raise_for_status()


def submit(api: httpx.Client, prompt: str) -> str:
    body = {
        "model": "wan2.2-i2v-flash",
        "input": {"prompt": prompt, "img_url": image_data_uri(320, 256)},
        "parameters": {"resolution": "480P", "duration": 5},
    }
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def notifications_for(stack: MotoStack, job_id: str) -> list[dict[str, Any]]:
    return [n for n in stack.notifications() if n["message"].get("job", {}).get("job_id") == job_id]


def the_one_notification(stack: MotoStack, job_id: str) -> dict[str, Any]:
    """The job's notification, after waiting for everything published so far to arrive: it is the only one."""
    wait_until(lambda: notifications_for(stack, job_id), what=f"the notification of {job_id}")
    marker = uuid.uuid4().hex
    stack.boto3_client("sns").publish(TopicArn=stack.env["WANFLOW_TOPIC_ARN"], Message=json.dumps({"marker": marker}))
    wait_until(lambda: any(n["message"].get("marker") == marker for n in stack.notifications()), what="the marker")
    found = notifications_for(stack, job_id)
    assert len(found) == 1, found
    jsonschema.validate(found[0]["message"], EVENT_SCHEMA)
    return found[0]["message"]


def emulator_state(emulator: Emulator) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    tasks = httpx.get(f"{emulator.root_url}/_emulator/tasks").json()["tasks"]
    requests = httpx.get(f"{emulator.root_url}/_emulator/requests").json()["requests"]
    return tasks, requests


def test_a_task_dashscope_fails_internally_is_retried_and_the_job_succeeds_with_two_attempts(
    stack: MotoStack, api: httpx.Client, emulator: Emulator
) -> None:
    prompt = f"a flaky lighthouse {uuid.uuid4().hex}"
    faults(emulator, {"on": "task", "fail_code": "InternalError", "prompt": prompt})
    job_id = submit(api, prompt)

    event = the_one_notification(stack, job_id)
    assert event["type"] == "job.succeeded"
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "SUCCEEDED" and job["output"]["bytes"] > 0
    attempts = job["attempts"]
    assert [(a["status"], a["code"]) for a in attempts] == [("FAILED", "InternalError"), ("SUCCEEDED", None)]
    assert "internal error" in attempts[0]["message"]
    assert attempts[0]["ended"] <= attempts[1]["started"] <= attempts[1]["ended"]
    assert job["provider"]["task_id"] == attempts[1]["task_id"] != attempts[0]["task_id"]
    assert event["job"]["attempts"] == attempts

    tasks, requests = emulator_state(emulator)
    assert sorted(task["task_id"] for task in tasks) == sorted(a["task_id"] for a in attempts)
    assert requests["create"]["requests"] == 2 and "list" not in requests  # one task per attempt, none reconciled


def test_a_task_dashscope_fails_every_time_ends_the_job_failed_after_three_attempts(
    stack: MotoStack, api: httpx.Client, emulator: Emulator
) -> None:
    prompt = f"a broken lighthouse {uuid.uuid4().hex}"
    faults(emulator, {"on": "task", "fail_code": "InternalError", "times": -1, "prompt": prompt})
    job_id = submit(api, prompt)

    event = the_one_notification(stack, job_id)
    assert event["type"] == "job.failed"
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "FAILED" and job["error"]["code"] == "InternalError"
    assert [a["status"] for a in job["attempts"]] == ["FAILED"] * 3  # the first, and ProviderRetries (2) more
    assert len({a["task_id"] for a in job["attempts"]}) == 3
    _, requests = emulator_state(emulator)
    assert requests["create"]["requests"] == 3
