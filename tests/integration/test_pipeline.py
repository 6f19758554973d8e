"""The pipeline end to end, offline: real HTTP to the API adapter, the real handlers in-process, moto executing
statemachine/job.asl.json, moto S3/SNS/SQS/DynamoDB, and the DashScope emulator on loopback.

One stack and one emulator serve the module; each test resets the emulator's tasks and faults. The poll interval
is 0 s, so the state machine loops as fast as moto runs it.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest

from wanflow.adapters.notifier import SnsNotifier
from wanflow.adapters.workflow import StepFunctionsWorkflow, execution_arn
from wanflow.callers import uploads_prefix
from wanflow.capabilities import specs_in_region
from wanflow.jobs import Stage
from wanflow.usecases import sweep
from wanflow.wiring import dependencies
from wanflow.wiring import reset as reset_application
from wanflow_tools.emulator import Emulator, EmulatorConfig
from wanflow_tools.moto_stack.stack import MotoStack
from wanflow_tools.testing import image_bytes, image_data_uri
from wanflow_tools.testing import wait_until as _wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EVENT_SCHEMA = json.loads((REPO / "schemas" / "job-event.v1.schema.json").read_text())
API_KEY = "sk-pipeline-test-key"
TIMEOUT = 60.0
FAST_MODEL = {"model": "wan2.2-i2v-flash", "parameters": {"resolution": "480P", "duration": 5}}


class Clock:
    """The emulator's clock, moved forward by tests to expire tasks and URLs without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def emulator(clock: Clock) -> Iterator[Emulator]:
    config = EmulatorConfig(api_key=API_KEY, pending_seconds=0.2, running_seconds=0.3, clock=clock, rate_limits=False)
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
    ) as running:
        reset_application()
        yield running
    reset_application()


@pytest.fixture(autouse=True)
def clean_emulator(emulator: Emulator, clock: Clock) -> None:
    clock.offset = 0.0
    httpx.post(f"{emulator.root_url}/_emulator/reset").raise_for_status()


@pytest.fixture
def api(stack: MotoStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


@contextmanager
def timings(emulator: Emulator, **changes: float) -> Iterator[None]:
    original = emulator.store.timings
    emulator.set_timings(**changes)
    try:
        yield
    finally:
        emulator.set_timings(**{name: getattr(original, name) for name in changes})


def faults(emulator: Emulator, *rules: dict[str, Any]) -> None:
    httpx.post(f"{emulator.root_url}/_emulator/faults", json=list(rules)).raise_for_status()


def emulator_tasks(emulator: Emulator) -> list[dict[str, Any]]:
    return httpx.get(f"{emulator.root_url}/_emulator/tasks").json()["tasks"]


def job_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "model": FAST_MODEL["model"],
        "input": {"prompt": "a lighthouse at dusk", "img_url": image_data_uri(320, 256)},
        "parameters": dict(FAST_MODEL["parameters"]),
        "metadata": {"test": "pipeline"},
    }
    body.update(overrides)
    return body


def wait_until(predicate: Callable[[], Any], what: str = "condition") -> Any:
    return _wait_until(predicate, timeout=TIMEOUT, interval=0.05, what=what)


def notifications_for(stack: MotoStack, job_id: str) -> list[dict[str, Any]]:
    return [n for n in stack.notifications() if n["message"].get("job", {}).get("job_id") == job_id]


def job_notifications(stack: MotoStack) -> list[dict[str, Any]]:
    return [n for n in stack.notifications() if "job" in n["message"]]


def settle(stack: MotoStack) -> None:
    """Wait until everything published so far has reached the sink, by publishing a marker and waiting for it."""
    marker = uuid.uuid4().hex
    stack.boto3_client("sns").publish(TopicArn=stack.env["WANFLOW_TOPIC_ARN"], Message=json.dumps({"marker": marker}))
    wait_until(lambda: any(n["message"].get("marker") == marker for n in stack.notifications()), what="marker")


def wait_for_end(stack: MotoStack, api: httpx.Client, job_id: str) -> dict[str, Any]:
    """Wait for the job's notification (published only once the job has ended) and return the job."""
    wait_until(lambda: notifications_for(stack, job_id), what=f"notification for {job_id}")
    return api.get(f"/v1/jobs/{job_id}").json()


def submit(api: httpx.Client, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return api.post("/v1/jobs", json=body if body is not None else job_body(), headers=headers)


def output_objects(stack: MotoStack) -> list[dict[str, Any]]:
    s3 = stack.boto3_client("s3")
    bucket = stack.env["WANFLOW_OUTPUT_BUCKET"]
    return s3.list_objects_v2(Bucket=bucket).get("Contents", [])


def assert_one_notification(stack: MotoStack, job_id: str, event_type: str) -> dict[str, Any]:
    settle(stack)  # a second publication, if there were one, would have arrived by now
    found = notifications_for(stack, job_id)
    assert len(found) == 1, found
    notification = found[0]
    jsonschema.validate(notification["message"], EVENT_SCHEMA)
    assert notification["message"]["type"] == event_type
    assert notification["attributes"]["type"] == event_type
    return notification


# ------------------------------------------------------------------------------------------------------- tests


def test_a_job_succeeds_with_the_video_in_s3_and_one_notification(stack, api, emulator):
    response = submit(api)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    assert response.json()["status"] == "QUEUED" and response.json()["queued_at"]
    assert "base64" not in json.dumps(response.json()), "a data-URI image must never be echoed"

    job = wait_for_end(stack, api, job_id)
    assert job["status"] == "SUCCEEDED", job
    # The data-URI image is shown from its copy in the intake bucket, never echoed.
    assert httpx.get(job["first_frame_url"]).content == image_bytes(320, 256)
    tasks = emulator_tasks(emulator)
    assert len(tasks) == 1
    assert job["provider"]["task_id"] == tasks[0]["task_id"]
    assert job["provider"]["task_status"] == "SUCCEEDED"
    assert job["provider"]["submit_time"] and job["provider"]["end_time"]
    assert job["usage"]
    assert job["cost_estimate_usd"] == pytest.approx(0.075)
    assert job["request"]["parameters"] == {
        "resolution": "480P",
        "duration": 5,
        "prompt_extend": True,
        "watermark": False,
    }
    assert job["metadata"] == {"test": "pipeline"}

    # The stored video is byte for byte the one the emulator served, and its checksum is right.
    output = job["output"]
    task = httpx.get(
        f"{emulator.base_url}/tasks/{tasks[0]['task_id']}", headers={"Authorization": f"Bearer {API_KEY}"}
    ).json()
    served = httpx.get(task["output"]["video_url"]).content
    stored = httpx.get(output["url"]).content
    assert stored == served
    assert output["bytes"] == len(stored) and output["sha256"] == hashlib.sha256(stored).hexdigest()
    # DashScope got the image itself (through a presigned URL of its S3 copy), not a placeholder.
    assert tasks[0]["video"]["image_is_placeholder"] is False
    assert output["content_type"] == "video/mp4"
    assert output["s3_uri"].endswith(f"/{job_id}.mp4") and "/videos/" in output["s3_uri"]
    s3 = stack.boto3_client("s3")
    bucket, key = output["s3_uri"][5:].split("/", 1)
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "video/mp4"
    assert head["Metadata"] == {"job-id": job_id, "model": "wan2.2-i2v-flash", "task-id": tasks[0]["task_id"]}
    beside = json.loads(s3.get_object(Bucket=bucket, Key=key[:-4] + ".json")["Body"].read())
    assert beside["status"] == "SUCCEEDED" and beside["output"]["sha256"] == output["sha256"]

    notification = assert_one_notification(stack, job_id, "job.succeeded")
    assert notification["attributes"] == {
        "type": "job.succeeded",
        "status": "SUCCEEDED",
        "model": "wan2.2-i2v-flash",
        "source": "api",
        "webhook": "false",  # no webhook asked for it: the webhook queue's subscription does not take it
    }
    assert notification["message"]["job"]["output"]["sha256"] == output["sha256"]


def test_the_signed_video_url_is_never_in_the_execution_history_in_plain_text(stack, api, emulator):
    job_id = submit(api).json()["job_id"]
    assert wait_for_end(stack, api, job_id)["status"] == "SUCCEEDED"
    (task,) = emulator_tasks(emulator)
    video_url = httpx.get(
        f"{emulator.base_url}/tasks/{task['task_id']}", headers={"Authorization": f"Bearer {API_KEY}"}
    ).json()["output"]["video_url"]
    execution_arn = _execution_arn(stack, job_id)
    stack.wait_for_execution(execution_arn, timeout=TIMEOUT)
    events = stack.boto3_client("stepfunctions").get_execution_history(executionArn=execution_arn, maxResults=1000)
    history = json.dumps(events["events"], default=str)
    path = urlsplit(video_url).path
    assert path and path not in history and video_url not in history
    # What the finalizer got instead: a sealed token, in the finalize step's input.
    assert '\\"video\\": \\"v1.' in history or '"video": "v1.' in history


def test_a_failed_task_fails_the_job_with_dashscopes_code(stack, api, emulator):
    faults(emulator, {"on": "task", "fail_code": "DataInspectionFailed"})
    job_id = submit(api).json()["job_id"]
    job = wait_for_end(stack, api, job_id)
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "DataInspectionFailed"
    assert "moderation" in job["error"]["message"]
    assert job["output"] is None
    assert_one_notification(stack, job_id, "job.failed")
    assert not [obj for obj in output_objects(stack) if obj["Key"].endswith(f"{job_id}.mp4")]


def test_an_expired_task_fails_the_job_as_task_expired(stack, api, emulator, clock):
    with timings(emulator, pending_seconds=3600.0):  # keep the task waiting until it expires
        job_id = submit(api).json()["job_id"]
        wait_until(lambda: api.get(f"/v1/jobs/{job_id}").json()["provider"].get("task_status") == "PENDING")
        clock.offset = 2 * 86_400  # two days later, DashScope no longer knows the task
        job = wait_for_end(stack, api, job_id)
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "TaskExpired"
    assert_one_notification(stack, job_id, "job.failed")


def test_cancel_while_pending_cancels_at_dashscope(stack, api, emulator):
    with timings(emulator, pending_seconds=3600.0):
        job_id = submit(api).json()["job_id"]
        wait_until(lambda: api.get(f"/v1/jobs/{job_id}").json()["provider"].get("task_status") == "PENDING")
        response = api.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "CANCELED"
        assert response.json()["provider"]["task_status"] == "CANCELED"
    assert [task["task_status"] for task in emulator_tasks(emulator)] == ["CANCELED"]
    assert_one_notification(stack, job_id, "job.canceled")
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 409
    execution = stack.wait_for_execution(_execution_arn(stack, job_id), timeout=TIMEOUT)
    # Stopped: ABORTED in Step Functions. moto reports an execution stopped during a Lambda call as FAILED ("pop
    # from empty list" inside its interpreter); either way it runs no more and published nothing more (above).
    assert execution["status"] in {"ABORTED", "SUCCEEDED", "FAILED"}


def test_cancel_of_a_running_task_is_refused(stack, api, emulator):
    with timings(emulator, running_seconds=3600.0):
        job_id = submit(api).json()["job_id"]
        wait_until(lambda: api.get(f"/v1/jobs/{job_id}").json()["status"] == "RUNNING")
        response = api.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 409
    assert response.json()["code"] == "Conflict"
    assert wait_for_end(stack, api, job_id)["status"] == "SUCCEEDED"


def test_an_image_with_prompt_metadata_in_incoming_starts_a_job(stack, emulator, api):
    s3 = stack.boto3_client("s3")
    bucket = stack.env["WANFLOW_INTAKE_BUCKET"]
    s3.put_object(
        Bucket=bucket,
        Key="incoming/photos/fox.png",
        Body=image_bytes(320, 256),
        ContentType="image/png",
        Metadata={"prompt": "a fox in snow", "model": "wan2.2-i2v-flash", "resolution": "480P"},
    )
    notification = wait_until(
        lambda: [
            n
            for n in job_notifications(stack)
            if n["message"]["job"]["source"] == "s3" and "fox" in json.dumps(n["message"]["job"]["request"])
        ],
        what="intake notification",
    )[0]
    job = notification["message"]["job"]
    assert job["status"] == "SUCCEEDED"
    assert job["request"]["input"]["prompt"] == "a fox in snow"
    assert job["request"]["input"]["img_url"] == f"s3://{bucket}/incoming/photos/fox.png"
    assert notification["attributes"]["source"] == "s3"


def test_a_manifest_with_a_relative_image_starts_a_job(stack, emulator):
    s3 = stack.boto3_client("s3")
    bucket = stack.env["WANFLOW_INTAKE_BUCKET"]
    s3.put_object(Bucket=bucket, Key="incoming/batch7/frame.png", Body=image_bytes(320, 256), ContentType="image/png")
    manifest = {
        **FAST_MODEL,
        "input": {"prompt": "waves on a pier", "img_url": "frame.png"},
        "metadata": {"batch": "7"},
    }
    s3.put_object(Bucket=bucket, Key="incoming/batch7/job.json", Body=json.dumps(manifest).encode())
    notification = wait_until(
        lambda: [n for n in job_notifications(stack) if n["message"]["job"]["metadata"].get("batch") == "7"],
        what="manifest notification",
    )[0]
    job = notification["message"]["job"]
    assert job["status"] == "SUCCEEDED"
    assert job["request"]["input"]["img_url"] == f"s3://{bucket}/incoming/batch7/frame.png"
    # The image alone had no prompt: it was data for the manifest, not a job of its own.
    assert len(emulator_tasks(emulator)) == 1


def test_poison_input_in_incoming_ends_as_a_failed_job_with_a_notification(stack, emulator):
    s3 = stack.boto3_client("s3")
    bucket = stack.env["WANFLOW_INTAKE_BUCKET"]
    s3.put_object(Bucket=bucket, Key="incoming/broken.json", Body=b"{not json")
    notification = wait_until(
        lambda: [n for n in job_notifications(stack) if "broken.json" in json.dumps(n["message"]["job"]["error"])],
        what="poison notification",
    )[0]
    assert notification["message"]["type"] == "job.failed"
    assert notification["message"]["job"]["error"]["code"] == "InvalidParameter"
    assert emulator_tasks(emulator) == []


def test_duplicate_s3_events_give_one_job(stack, emulator):
    s3 = stack.boto3_client("s3")
    sqs = stack.boto3_client("sqs")
    bucket = stack.env["WANFLOW_INTAKE_BUCKET"]
    version = s3.put_object(
        Bucket=bucket,
        Key="incoming/dup.png",
        Body=image_bytes(320, 256),
        ContentType="image/png",
        Metadata={"prompt": "twice delivered", "model": "wan2.2-i2v-flash", "resolution": "480P"},
    )["VersionId"]
    first = wait_until(
        lambda: [n for n in job_notifications(stack) if "dup.png" in json.dumps(n["message"]["job"]["request"])]
    )[0]
    # S3 delivers at least once: deliver the same object version's event again, twice.
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {"key": "incoming/dup.png", "versionId": version, "eTag": "x"},
                },
            }
        ]
    }
    queue_url = stack.resources["IntakeQueue"]  # Ref of a queue is its URL
    for _ in range(2):
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))
    wait_until(lambda: _queue_drained(sqs, queue_url), what="intake queue drained")
    assert len(emulator_tasks(emulator)) == 1
    settle(stack)
    assert len(notifications_for(stack, first["message"]["job"]["job_id"])) == 1


def test_one_idempotency_key_gives_one_job_and_refuses_a_different_body(stack, api, emulator):
    body = job_body()
    first = submit(api, body, **{"Idempotency-Key": "order-42"})
    second = submit(api, body, **{"Idempotency-Key": "order-42"})
    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] == second.json()["job_id"]
    other = submit(api, {**body, "metadata": {"test": "changed"}}, **{"Idempotency-Key": "order-42"})
    assert other.status_code == 409
    assert other.json()["code"] == "Conflict"
    wait_for_end(stack, api, first.json()["job_id"])
    assert len(emulator_tasks(emulator)) == 1


def test_a_brief_throttle_is_ridden_out_without_a_second_task(stack, api, emulator):
    faults(emulator, {"on": "create", "status": 429, "times": 2})
    response = submit(api)
    assert response.status_code == 202, response.text
    assert wait_for_end(stack, api, response.json()["job_id"])["status"] == "SUCCEEDED"
    assert len(emulator_tasks(emulator)) == 1


def test_persistent_create_throttling_never_refuses_a_job_and_it_succeeds_once_dashscope_recovers(stack, api, emulator):
    faults(emulator, {"on": "create", "status": 429, "times": -1})
    accepted = submit(api, job_body(), **{"Idempotency-Key": "throttled"})
    assert accepted.status_code == 202 and accepted.json()["status"] == "QUEUED"
    job_id = accepted.json()["job_id"]
    # DashScope keeps refusing the create: the job waits in its execution, never fails, makes no task.
    wait_until(lambda: _create_refusals(emulator) >= 2, what="refused creates")
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "PENDING" and emulator_tasks(emulator) == []
    httpx.delete(f"{emulator.root_url}/_emulator/faults").raise_for_status()
    assert wait_for_end(stack, api, job_id)["status"] == "SUCCEEDED"
    assert len(emulator_tasks(emulator)) == 1
    assert_one_notification(stack, job_id, "job.succeeded")


def _create_refusals(emulator: Emulator) -> int:
    log = httpx.get(f"{emulator.root_url}/_emulator/requests").json()["requests"]
    return int(log.get("create", {}).get("throttled", 0))


def test_a_create_dashscope_refuses_ends_the_job_failed_with_dashscopes_code(stack, api, emulator):
    faults(emulator, {"on": "create", "status": 400, "code": "Arrearage", "message": "Access denied, account overdue"})
    response = submit(api)
    assert response.status_code == 202  # accepted: DashScope is asked only when the job's turn comes
    job = wait_for_end(stack, api, response.json()["job_id"])
    assert job["status"] == "FAILED" and job["error"]["code"] == "Arrearage"
    assert job["error"]["message"] == "Access denied, account overdue" and job["error"]["provider_request_id"]
    assert emulator_tasks(emulator) == []
    assert_one_notification(stack, job["job_id"], "job.failed")


def test_queries_answering_500_are_retried(stack, api, emulator):
    faults(emulator, {"on": "query", "status": 500, "times": 3})
    job_id = submit(api).json()["job_id"]
    assert wait_for_end(stack, api, job_id)["status"] == "SUCCEEDED"
    assert_one_notification(stack, job_id, "job.succeeded")


def test_a_throttling_storm_is_waited_out_one_query_per_poll_and_the_job_succeeds(stack, api, emulator, monkeypatch):
    storm = 8  # more refused queries in a row than the client's own retries (4) and Step Functions' used to allow
    monkeypatch.setenv("WANFLOW_THROTTLED_WAIT_CAP_SECONDS", "1")  # waits of 1 s, so the storm passes quickly
    reset_application()
    try:
        faults(emulator, {"on": "query", "status": 429, "times": storm})
        job_id = submit(api).json()["job_id"]
        job = wait_for_end(stack, api, job_id)
    finally:
        monkeypatch.delenv("WANFLOW_THROTTLED_WAIT_CAP_SECONDS")
        reset_application()
    assert job["status"] == "SUCCEEDED"
    assert_one_notification(stack, job_id, "job.succeeded")
    # Every refusal was used up: the storm really happened, and was waited out, not failed.
    assert httpx.get(f"{emulator.root_url}/_emulator/faults").json() == {"faults": []}


def test_a_truncated_download_is_retried_and_leaves_no_partial_object(stack, api, emulator):
    faults(emulator, {"on": "download", "action": "truncate", "fraction": 0.4})
    job_id = submit(api).json()["job_id"]
    job = wait_for_end(stack, api, job_id)
    assert job["status"] == "SUCCEEDED"
    stored = httpx.get(job["output"]["url"]).content
    assert hashlib.sha256(stored).hexdigest() == job["output"]["sha256"]
    s3 = stack.boto3_client("s3")
    uploads = s3.list_multipart_uploads(Bucket=stack.env["WANFLOW_OUTPUT_BUCKET"]).get("Uploads", [])
    assert uploads == [], "the aborted upload must not linger"


def test_an_expired_video_url_fails_the_job_clearly(stack, api, emulator):
    faults(emulator, {"on": "download", "status": 403, "times": -1})
    job_id = submit(api).json()["job_id"]
    job = wait_for_end(stack, api, job_id)
    httpx.delete(f"{emulator.root_url}/_emulator/faults")
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "VideoUrlExpired"
    assert_one_notification(stack, job_id, "job.failed")


def test_a_finalizer_that_runs_twice_publishes_once(stack, api, emulator):
    job_id = submit(api).json()["job_id"]
    job = wait_for_end(stack, api, job_id)
    result = stack.invoke("FinalizeFunction", {"job_id": job_id, "poll": {"next": "finalize"}})
    assert result.ok and result.value()["status"] == "SUCCEEDED"
    assert api.get(f"/v1/jobs/{job_id}").json()["output"]["sha256"] == job["output"]["sha256"]
    assert_one_notification(stack, job_id, "job.succeeded")


def test_an_unanswered_create_is_reconciled_by_the_sweeper_without_a_second_task(stack, api, emulator, monkeypatch):
    faults(emulator, {"on": "create", "action": "drop_after_accept"})
    response = submit(api)
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    # The create step got no answer: wanflow does not know whether DashScope has the task, and waits for the sweeper.
    wait_until(lambda: _stage(job_id) is Stage.CREATE_UNKNOWN, what="an unanswered create")
    assert len(emulator_tasks(emulator)) == 1
    monkeypatch.setenv("WANFLOW_RECONCILE_AFTER_SECONDS", "0")
    reset_application()
    try:
        stack.run_sweeper()
        job = wait_for_end(stack, api, job_id)
    finally:
        monkeypatch.delenv("WANFLOW_RECONCILE_AFTER_SECONDS")
        reset_application()
    assert job["status"] == "SUCCEEDED"
    assert len(emulator_tasks(emulator)) == 1
    assert job["provider"]["task_id"] == emulator_tasks(emulator)[0]["task_id"]


def _stage(job_id: str) -> Stage | None:
    job = dependencies().jobs.get(job_id)
    return job.stage if job is not None else None


def test_api_errors_name_the_field_and_spend_nothing(stack, api, emulator):
    response = submit(api, job_body(parameters={"resolution": "4K", "duration": 99}))
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "InvalidParameter"
    assert {e["field"] for e in body["errors"]} == {"parameters.resolution", "parameters.duration"}
    assert body["request_id"]
    assert api.post("/v1/jobs", content=b"{oops").json()["errors"][0]["field"] == "body"
    assert api.get("/v1/jobs/" + "0" * 32).status_code == 404
    assert api.get("/v1/jobs", params={"status": "DONE"}).status_code == 400
    too_large = api.post(
        "/v1/jobs",
        content=b'{"pad": "' + b"a" * (5 * 1024 * 1024 + 100_000) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert too_large.status_code == 413
    assert "/v1/uploads" in too_large.json()["message"]
    assert emulator_tasks(emulator) == []


def test_uploads_give_a_presigned_post_whose_uri_works_as_img_url(stack, api):
    response = api.post("/v1/uploads", json={"content_type": "image/png"})
    assert response.status_code == 201, response.text
    upload = response.json()
    posted = httpx.post(
        upload["url"], data=upload["fields"], files={"file": ("x.png", image_bytes(320, 256), "image/png")}
    )
    assert posted.status_code in (200, 204), posted.text
    job_id = submit(api, job_body(input={"prompt": "uploaded", "img_url": upload["s3_uri"]})).json()["job_id"]
    job = wait_for_end(stack, api, job_id)
    assert job["status"] == "SUCCEEDED"
    # The console shows the first frame from a short-lived URL of the upload: the very bytes that were uploaded.
    first_frame = httpx.get(job["first_frame_url"])
    assert first_frame.status_code == 200 and first_frame.content == image_bytes(320, 256)
    assert first_frame.headers["content-type"] == "image/png"
    [event] = [n["message"]["job"] for n in notifications_for(stack, job_id)]
    assert "first_frame_url" not in event
    assert api.post("/v1/uploads", json={"content_type": "text/html"}).status_code == 400


def test_the_model_catalog_is_served_with_the_regions_models(stack, api):
    response = api.get("/v1/models")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "private, max-age=300"
    catalog = response.json()
    region = dependencies().settings.dashscope_region  # the API handlers run in this process
    assert [model["name"] for model in catalog["models"]] == [spec.name for spec in specs_in_region(region)]
    flash = next(model for model in catalog["models"] if model["name"] == FAST_MODEL["model"])
    # The form's price for the job every test here submits is the cost estimate that job gets (0.075 USD).
    assert round(flash["price_usd_per_second"]["480P"]["silent"] * 5, 4) == pytest.approx(0.075)


def test_list_is_newest_first_and_paginates(stack, api):
    ids = [submit(api).json()["job_id"] for _ in range(3)]
    for job_id in ids:
        wait_for_end(stack, api, job_id)
    page = api.get("/v1/jobs", params={"limit": 2}).json()
    assert len(page["jobs"]) == 2 and page["next_cursor"]
    created = [job["created_at"] for job in page["jobs"]]
    assert created == sorted(created, reverse=True)
    rest = api.get("/v1/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert {job["job_id"] for job in rest["jobs"]}.isdisjoint(job["job_id"] for job in page["jobs"])
    succeeded = api.get("/v1/jobs", params={"status": "SUCCEEDED", "limit": 100}).json()["jobs"]
    assert set(ids) <= {job["job_id"] for job in succeeded}


def _execution_arn(stack: MotoStack, job_id: str) -> str:
    return execution_arn(stack.env["WANFLOW_STATE_MACHINE_ARN"], job_id)


def _queue_drained(sqs: Any, queue_url: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return (
        attributes["ApproximateNumberOfMessages"] == "0" and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    )


def test_the_sweeper_starts_an_execution_that_never_started(stack, api, monkeypatch):
    def refuse(*_: Any, **__: Any) -> bool:
        raise RuntimeError("Step Functions unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(StepFunctionsWorkflow, "start_job", refuse)
        response = submit(api)
    assert response.status_code == 202  # granted a slot all the same: the job says so and waits for the sweeper
    job_id = response.json()["job_id"]
    workflow = StepFunctionsWorkflow(stack.boto3_client("stepfunctions"), stack.env["WANFLOW_STATE_MACHINE_ARN"])
    assert workflow.execution_status(job_id) is None
    repairs = stack.run_sweeper().value()
    assert repairs.get("execution_started") == 1, repairs
    assert wait_for_end(stack, api, job_id)["status"] == "SUCCEEDED"
    assert_one_notification(stack, job_id, "job.succeeded")


def test_a_notification_lost_to_crashes_is_published_once_by_the_sweeper(stack, api, monkeypatch):
    def broken_publish(*_: Any, **__: Any) -> str:
        raise RuntimeError("SNS unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(SnsNotifier, "publish_job_event", broken_publish)
        job_id = submit(api).json()["job_id"]
        stack.wait_for_execution(_execution_arn(stack, job_id), timeout=TIMEOUT)
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "SUCCEEDED"  # the video is stored and verified
    assert notifications_for(stack, job_id) == []
    stack.run_sweeper()  # too early: the publisher might still be at work
    settle(stack)
    assert notifications_for(stack, job_id) == []
    with monkeypatch.context() as patch:
        patch.setattr(sweep, "UNCONFIRMED_NOTIFICATION", timedelta(0))
        assert stack.run_sweeper().value().get("notification_published") == 1
    assert_one_notification(stack, job_id, "job.succeeded")
    stack.run_sweeper()  # nothing left to repair: no second notification
    assert_one_notification(stack, job_id, "job.succeeded")


SAMPLE_BUCKET = "wanflow-123456789012-ap-southeast-1-intake-1a2b3c4d"  # the intake bucket named in events/
SAMPLE_JOB_ID = "7d1f0c2b9a8e4f6d8c3b2a1908f7e6d5"  # the job the sample get/cancel events name


def sample_event(stack: MotoStack, name: str, job_id: str | None = None) -> dict[str, Any]:
    """A sample event from events/, pointed at this local stack's intake bucket (and at `job_id`)."""
    text = (REPO / "events" / name).read_text()
    if job_id is not None:
        text = text.replace(SAMPLE_JOB_ID, job_id)
    return json.loads(text.replace(SAMPLE_BUCKET, stack.env["WANFLOW_INTAKE_BUCKET"]))


def test_the_sample_api_event_drives_the_real_api_handler(stack, api, emulator):
    s3 = stack.boto3_client("s3")
    # The sample's caller (AIDACKCEVSQ6C2EXAMPLE) uses an image from its own uploads.
    key = uploads_prefix("AIDACKCEVSQ6C2EXAMPLE") + "cat.png"
    s3.put_object(Bucket=stack.env["WANFLOW_INTAKE_BUCKET"], Key=key, Body=image_bytes(320, 256))
    result = stack.invoke("ApiFunction", sample_event(stack, "api-create-job.json"))
    assert result.ok, result.payload
    response = result.value()
    assert response["statusCode"] == 202, response
    job = json.loads(response["body"])
    assert job["request"]["parameters"]["audio"] is False and job["metadata"] == {"campaign": "spring"}
    wait_until(lambda: notifications_for(stack, job["job_id"]), what="the sample job's notification")
    # The job is the sample caller's: the sample GET event (same caller) sees it, the local API's caller does not.
    got = stack.invoke("ApiFunction", sample_event(stack, "api-get-job.json", job_id=job["job_id"])).value()
    assert got["statusCode"] == 200 and json.loads(got["body"])["status"] == "SUCCEEDED"
    assert api.get(f"/v1/jobs/{job['job_id']}").status_code == 404


def test_the_sample_sqs_event_drives_the_real_intake_handler(stack, api, emulator):
    s3 = stack.boto3_client("s3")
    bucket = stack.env["WANFLOW_INTAKE_BUCKET"]
    event = sample_event(stack, "sqs-intake-s3-put.json")
    s3_event = json.loads(event["Records"][0]["body"])
    # The sample names an object version that only exists in its own bucket: put the object, use its version.
    version = s3.put_object(
        Bucket=bucket,
        Key="incoming/cat.png",
        Body=image_bytes(320, 256),
        Metadata={"prompt": "a cat", "model": "wan2.2-i2v-flash", "resolution": "480P"},
    )["VersionId"]
    s3_event["Records"][0]["s3"]["object"]["versionId"] = version
    event["Records"][0]["body"] = json.dumps(s3_event)
    result = stack.invoke("IntakeFunction", event)
    assert result.ok and result.value() == {"batchItemFailures": []}, result.payload

    def cat_jobs() -> list[dict[str, Any]]:
        jobs = [n["message"]["job"] for n in job_notifications(stack)]
        return [job for job in jobs if job["request"].get("input", {}).get("prompt") == "a cat"]

    wait_until(cat_jobs)
    settle(stack)
    assert len(cat_jobs()) == 1  # the upload's own event and the sample name the same object version: one job
