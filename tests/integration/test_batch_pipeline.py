"""Batches end to end, offline: `POST /v1/batches` and `incoming/*.jsonl` through the local stack (real handlers,
moto executing statemachine/job.asl.json) against the DashScope emulator on loopback: each job's own event, and
exactly one `batch.completed` with the right counts when the last job ended."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from wanflow.jobs import derived_job_id
from wanflow.wiring import reset as reset_application
from wanflow_tools.emulator import Emulator, EmulatorConfig
from wanflow_tools.moto_stack.stack import MotoStack
from wanflow_tools.testing import image_bytes, image_data_uri
from wanflow_tools.testing import wait_until as _wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
JOB_SCHEMA = json.loads((REPO / "schemas" / "job-event.v1.schema.json").read_text())
BATCH_SCHEMA = json.loads((REPO / "schemas" / "batch-event.v1.schema.json").read_text())
API_KEY = "sk-batch-test-key"
TIMEOUT = 60.0
FLASH = "wan2.2-i2v-flash"  # 2 running slots
PLUS = "wan2.2-i2v-plus"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(api_key=API_KEY, pending_seconds=0.2, running_seconds=0.3, rate_limits=False)
    with Emulator(config) as running:
        yield running


@pytest.fixture(scope="module")
def stack(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoStack]:
    with MotoStack(
        state_dir=tmp_path_factory.mktemp("state"),
        api_port=0,
        dashscope_base_url=emulator.base_url,
        dashscope_api_key=API_KEY,
        poll_interval_seconds=0,
        in_process_aws=True,
    ) as running:
        reset_application()
        yield running
    reset_application()


@pytest.fixture(autouse=True)
def clean_emulator(emulator: Emulator) -> Iterator[None]:
    httpx.post(f"{emulator.root_url}/_emulator/reset").raise_for_status()
    original = emulator.store.timings
    yield
    emulator.set_timings(pending_seconds=original.pending_seconds, running_seconds=original.running_seconds)


@pytest.fixture
def api(stack: MotoStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


def wait_until(predicate: Callable[[], Any], what: str) -> Any:
    return _wait_until(predicate, timeout=TIMEOUT, interval=0.05, what=what)


def job_body(model: str = FLASH, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "input": {"prompt": "a lighthouse at dusk", "img_url": image_data_uri(320, 256)},
        "parameters": {"resolution": "480P", "duration": 5},
    }
    body.update(overrides)
    return body


def batch_events(stack: MotoStack, batch_id: str) -> list[dict[str, Any]]:
    return [n for n in stack.notifications() if n["message"].get("batch", {}).get("batch_id") == batch_id]


def job_events(stack: MotoStack, job_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    events: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
    for notification in stack.notifications():
        job_id = notification["message"].get("job", {}).get("job_id")
        if job_id in events:
            events[job_id].append(notification)
    return events


def settle(stack: MotoStack) -> None:
    """Everything published so far has reached the sink (a marker published after it has)."""
    marker = uuid.uuid4().hex
    stack.boto3_client("sns").publish(TopicArn=stack.env["WANFLOW_TOPIC_ARN"], Message=json.dumps({"marker": marker}))
    wait_until(lambda: any(n["message"].get("marker") == marker for n in stack.notifications()), what="marker")


def the_one_batch_completed(stack: MotoStack, batch_id: str) -> dict[str, Any]:
    wait_until(lambda: batch_events(stack, batch_id), what=f"batch.completed of {batch_id}")
    settle(stack)  # a second one, if there were one, would have arrived by now
    (notification,) = batch_events(stack, batch_id)
    jsonschema.validate(notification["message"], BATCH_SCHEMA)
    assert notification["attributes"]["type"] == "batch.completed"
    return notification["message"]


def test_a_batch_of_mixed_outcomes_gives_each_jobs_event_and_one_batch_completed(stack, api, emulator) -> None:
    httpx.post(
        f"{emulator.root_url}/_emulator/faults",
        json=[{"on": "task", "fail_code": "DataInspectionFailed", "model": PLUS}],
    ).raise_for_status()
    # Two seconds PENDING at DashScope: the two flash jobs hold both flash slots, so the third waits QUEUED.
    emulator.set_timings(pending_seconds=2.0)
    body = {
        "jobs": [
            job_body(PLUS, metadata={"item": "moderated"}),
            job_body(metadata={"item": "first"}),
            job_body(metadata={"item": "second"}),
            job_body(metadata={"item": "canceled"}),
            job_body(parameters={"resolution": "480P", "duration": 7}),  # refused: partial
        ],
        "partial": True,
        "metadata": {"project": "e2e"},
    }
    answer = api.post("/v1/batches", json=body, headers={"Idempotency-Key": "mixed-1"})
    assert answer.status_code == 202, answer.text
    batch = answer.json()
    batch_id, job_ids = batch["batch_id"], batch["jobs"]
    assert answer.headers["Location"] == f"/v1/batches/{batch_id}"
    assert batch["total"] == 4 and len(job_ids) == 4 and batch["status"] == "open"
    (rejected,) = batch["rejected"]
    assert rejected["index"] == 4 and rejected["errors"][0]["field"] == "jobs[4].parameters.duration"
    assert batch["counts"]["QUEUED"] == 1  # the last flash job
    canceled = api.post(f"/v1/jobs/{job_ids[3]}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
    again = api.post("/v1/batches", json=body, headers={"Idempotency-Key": "mixed-1"})
    assert again.status_code == 200 and again.json()["batch_id"] == batch_id  # the same batch, nothing new

    event = the_one_batch_completed(stack, batch_id)
    assert event["batch"]["status"] == "completed" and event["batch"]["metadata"] == {"project": "e2e"}
    assert event["batch"]["counts"] == {
        "QUEUED": 0,
        "PENDING": 0,
        "RUNNING": 0,
        "SUCCEEDED": 2,
        "FAILED": 1,
        "CANCELED": 1,
    }
    events = job_events(stack, job_ids)
    assert {job_id: [n["message"]["type"] for n in found] for job_id, found in events.items()} == {
        job_ids[0]: ["job.failed"],
        job_ids[1]: ["job.succeeded"],
        job_ids[2]: ["job.succeeded"],
        job_ids[3]: ["job.canceled"],
    }
    for (notification,) in events.values():
        jsonschema.validate(notification["message"], JOB_SCHEMA)
        assert notification["message"]["job"]["batch_id"] == batch_id
    view = api.get(f"/v1/batches/{batch_id}", params={"limit": 3}).json()
    assert view["status"] == "completed" and view["counts"] == event["batch"]["counts"]
    assert view["jobs"] == job_ids[:3] and view["next_cursor"]
    rest = api.get(f"/v1/batches/{batch_id}", params={"cursor": view["next_cursor"]}).json()
    assert rest["jobs"] == job_ids[3:] and rest["next_cursor"] is None
    assert api.get(f"/v1/batches/{batch_id}", headers={"X-Wanflow-Principal": "mallory"}).status_code == 404
    assert len(httpx.get(f"{emulator.root_url}/_emulator/tasks").json()["tasks"]) == 3  # one task per started job


def test_a_jsonl_upload_is_a_batch_and_its_cancel_ends_it_with_one_batch_completed(stack, api, emulator) -> None:
    emulator.set_timings(pending_seconds=30.0)  # nothing starts running: every job can be canceled
    s3 = stack.boto3_client("s3")
    bucket = stack.env["WANFLOW_INTAKE_BUCKET"]
    s3.put_object(Bucket=bucket, Key="incoming/run9/frame.png", Body=image_bytes(320, 256), ContentType="image/png")
    line = {"model": FLASH, "input": {"prompt": "waves on a pier", "img_url": "frame.png"}}
    text = "\n".join(json.dumps({**line, "metadata": {"line": str(number)}}) for number in range(3))
    version = s3.put_object(Bucket=bucket, Key="incoming/run9/jobs.jsonl", Body=text.encode())["VersionId"]
    batch_id = derived_job_id("s3-batch", bucket, "incoming/run9/jobs.jsonl", version)
    view = wait_until(
        lambda: (answer := api.get(f"/v1/batches/{batch_id}")).status_code == 200 and answer.json(),
        what="the jsonl batch",
    )
    assert view["source"] == "s3" and view["total"] == 3
    wait_until(lambda: len(httpx.get(f"{emulator.root_url}/_emulator/tasks").json()["tasks"]) == 2, what="2 tasks")

    canceled = api.post(f"/v1/batches/{batch_id}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["counts"]["CANCELED"] == 3 and canceled.json()["status"] == "canceled"
    event = the_one_batch_completed(stack, batch_id)
    assert event["batch"]["status"] == "canceled" and event["batch"]["source"] == "s3"
    assert event["batch"]["counts"]["CANCELED"] == 3
    events = job_events(stack, view["jobs"])
    assert all([n["message"]["type"] for n in found] == ["job.canceled"] for found in events.values())
    tasks = httpx.get(f"{emulator.root_url}/_emulator/tasks").json()["tasks"]
    assert sorted(task["task_status"] for task in tasks) == ["CANCELED", "CANCELED"]


def test_a_jsonl_upload_with_a_bad_line_queues_nothing_and_says_which_line(stack, emulator) -> None:
    s3 = stack.boto3_client("s3")
    bucket = stack.env["WANFLOW_INTAKE_BUCKET"]
    lines = [json.dumps(job_body()), json.dumps(job_body(model="wan9-imaginary"))]
    s3.put_object(Bucket=bucket, Key="incoming/bad-lines.jsonl", Body="\n".join(lines).encode())
    notification = wait_until(
        lambda: [
            n
            for n in stack.notifications()
            if "bad-lines.jsonl" in json.dumps(n["message"].get("job", {}).get("error"))
        ],
        what="the refused file's job",
    )[0]
    error = notification["message"]["job"]["error"]
    assert notification["message"]["type"] == "job.failed" and "line 2.model" in error["message"]
    assert httpx.get(f"{emulator.root_url}/_emulator/tasks").json()["tasks"] == []
