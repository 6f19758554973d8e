"""The local AWS runtime (wanflow_tools.moto_stack) with stand-in handlers: what it builds from template.yaml and how
it runs Step Functions, SQS, SNS and the HTTP API around the handlers.

The handlers here are test doubles registered per test, so these tests pin down the runtime, not the domain
(tests/integration/test_pipeline.py runs the real handlers). Waiting is on conditions with deadlines.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from wanflow_tools.moto_stack import MotoStack, SamTemplate

# Real servers: a moto server and the HTTP API on loopback ports (about 10 s for the module).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0
FUNCTIONS = (
    "ApiFunction",
    "IntakeFunction",
    "StatusFunction",
    "CreateTaskFunction",
    "FinalizeFunction",
    "RecordFailureFunction",
    "SweeperFunction",
)


class TransientError(Exception):
    """Named like the domain's retryable error: the state machine retries errors of this name."""


class JobBroken(Exception):
    """An error the state machine does not retry."""


class Calls:
    """Invocations of the stand-in handlers, with a condition to wait on."""

    def __init__(self) -> None:
        self._calls: list[tuple[str, Any, Any]] = []
        self._changed = threading.Condition()

    def add(self, function: str, event: Any, context: Any) -> None:
        with self._changed:
            self._calls.append((function, event, context))
            self._changed.notify_all()

    def of(self, function: str) -> list[Any]:
        with self._changed:
            return [event for name, event, _ in self._calls if name == function]

    def contexts(self, function: str) -> list[Any]:
        with self._changed:
            return [context for name, _, context in self._calls if name == function]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        with self._changed:
            assert self._changed.wait_for(predicate, timeout=timeout), f"not met within {timeout} s: {self._calls}"

    def clear(self) -> None:
        with self._changed:
            self._calls.clear()


class Handlers:
    """Per-test behaviour of each function; the stack's handlers dispatch here."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.behaviour: dict[str, Callable[[Any, Any], Any]] = {}

    def dispatcher(self, function: str) -> Callable[[Any, Any], Any]:
        def handler(event: Any, context: Any) -> Any:
            self.calls.add(function, event, context)
            behaviour = self.behaviour.get(function)
            if behaviour is not None:
                return behaviour(event, context)
            if function == "CreateTaskFunction":  # created at once: on to the poll loop
                return {"next": "wait", "wait_seconds": 0, "polls": event["poll"].get("polls", 0)}
            return {"handled_by": function}

        return handler


@pytest.fixture(scope="module")
def handlers() -> Handlers:
    return Handlers(Calls())


@pytest.fixture(scope="module")
def stack(handlers: Handlers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoStack]:
    with MotoStack(
        state_dir=tmp_path_factory.mktemp("state"),
        api_port=0,
        dashscope_base_url="http://127.0.0.1:9/api/v1",
        dashscope_api_key="sk-local-runtime-test",
        poll_interval_seconds=0,
        handlers={name: handlers.dispatcher(name) for name in FUNCTIONS},
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_handlers(request: pytest.FixtureRequest) -> Iterator[None]:
    if "stack" not in request.fixturenames:
        yield
        return
    handlers: Handlers = request.getfixturevalue("handlers")
    handlers.behaviour.clear()
    handlers.calls.clear()
    yield
    handlers.behaviour.clear()


def start_job(stack: MotoStack, job_id: str) -> str:
    state = {"job_id": job_id, "poll": {"next": "submit"}}
    return stack.boto3_client("stepfunctions").start_execution(
        stateMachineArn=stack.resources["JobStateMachine"], name=job_id, input=json.dumps(state)
    )["executionArn"]


def polls_then(final_next: str, after: int = 2) -> Callable[[Any, Any], Any]:
    """A status handler that says "wait" until its `after`-th poll, then `final_next`."""

    def status(event: Any, context: Any) -> dict[str, Any]:
        polls = event["poll"]["polls"] + 1
        return {"next": final_next if polls >= after else "wait", "wait_seconds": 0, "polls": polls}

    return status


# ------------------------------------------------------------------------------------------- lifecycle


def test_stop_undoes_the_process_wide_changes(tmp_path: Path) -> None:
    from moto.awslambda.models import LambdaFunction
    from moto.s3 import notifications

    original_invoke = LambdaFunction._invoke_lambda
    original_s3_event = notifications._get_s3_event
    environ_before = dict(os.environ)
    # Stand-ins everywhere: the intake gets S3's s3:TestEvent as soon as the notification is configured.
    stand_ins = {name: (lambda event, context: {}) for name in FUNCTIONS}
    stack = MotoStack(state_dir=tmp_path, dashscope_base_url=None, dashscope_api_key="sk-x", handlers=stand_ins)
    with stack:
        assert LambdaFunction._invoke_lambda is not original_invoke
        assert notifications._get_s3_event is not original_s3_event
        assert os.environ["AWS_ENDPOINT_URL"] == stack.aws_endpoint
        assert os.environ["WANFLOW_JOBS_TABLE"] == "wanflow-local-jobs"
        assert "DASHSCOPE_BASE_URL" not in stack.env
        with pytest.raises(RuntimeError, match="already running"):
            MotoStack(state_dir=tmp_path, dashscope_base_url=None, dashscope_api_key="sk-y").start()
        endpoint = stack.aws_endpoint
    assert LambdaFunction._invoke_lambda is original_invoke
    assert notifications._get_s3_event is original_s3_event
    assert dict(os.environ) == environ_before
    with pytest.raises(httpx.TransportError):
        httpx.get(endpoint, timeout=2)


# ------------------------------------------------------------------------------------------- resources


def test_every_template_resource_exists_with_its_settings(stack: MotoStack) -> None:
    template = SamTemplate.load(REPO / "template.yaml")
    resources = stack.resources
    s3 = stack.boto3_client("s3")
    for logical_id in template.resources_of_type("AWS::S3::Bucket"):
        assert s3.get_bucket_versioning(Bucket=resources[logical_id])["Status"] == "Enabled"
    assert resources["IntakeBucket"] == "wanflow-local-intake"
    assert resources["OutputBucket"] == "wanflow-local-output"
    queue_configs = s3.get_bucket_notification_configuration(Bucket=resources["IntakeBucket"])["QueueConfigurations"]
    assert [(c["QueueArn"], c["Events"], c["Filter"]["Key"]["FilterRules"]) for c in queue_configs] == [
        (stack.attribute("IntakeQueue", "Arn"), ["s3:ObjectCreated:*"], [{"Name": "prefix", "Value": "incoming/"}])
    ]

    table = stack.boto3_client("dynamodb").describe_table(TableName=resources["JobsTable"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]
    indexes = {
        index["IndexName"]: [key["AttributeName"] for key in index["KeySchema"]]
        for index in table["GlobalSecondaryIndexes"]
    }
    assert indexes == {
        "by_status": ["status", "created_at"],
        "by_created": ["record_type", "created_at"],
        "by_owner": ["owner", "created_at"],
        "by_owner_status": ["owner_status", "created_at"],
        "by_queue": ["queue_model", "queue_rank"],
        "by_task": ["task_id"],
        "by_batch": ["batch_id", "batch_index"],
    }
    ttl = stack.boto3_client("dynamodb").describe_time_to_live(TableName=resources["JobsTable"])
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
    admission = stack.boto3_client("dynamodb").describe_table(TableName=resources["AdmissionTable"])["Table"]
    assert admission["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    batches = stack.boto3_client("dynamodb").describe_table(TableName=resources["BatchesTable"])["Table"]
    assert batches["KeySchema"] == [{"AttributeName": "batch_id", "KeyType": "HASH"}]

    sqs = stack.boto3_client("sqs")
    intake = sqs.get_queue_attributes(QueueUrl=resources["IntakeQueue"], AttributeNames=["All"])["Attributes"]
    assert intake["VisibilityTimeout"] == "360"
    assert json.loads(intake["RedrivePolicy"]) == {
        "deadLetterTargetArn": stack.attribute("IntakeDeadLetterQueue", "Arn"),
        "maxReceiveCount": 5,
    }

    topics = [topic["TopicArn"] for topic in stack.boto3_client("sns").list_topics()["Topics"]]
    assert resources["JobTopic"] in topics

    secret = stack.boto3_client("secretsmanager").get_secret_value(SecretId=resources["DashScopeSecret"])
    assert json.loads(secret["SecretString"]) == {"api_key": "sk-local-runtime-test"}

    functions = {f["FunctionName"]: f for f in stack.boto3_client("lambda").list_functions()["Functions"]}
    for spec in template.functions():
        assert functions[resources[spec.logical_id]]["Handler"] == "app.lambda_handler"
        assert stack.lambdas.function(spec.logical_id).handler_ref == f"{spec.handler_module}.lambda_handler"
    assert stack.lambdas.function("StatusFunction").handler_ref == "functions.status.app.lambda_handler"
    assert functions["wanflow-local-finalize"]["Timeout"] == 900
    assert functions["wanflow-local-finalize"]["MemorySize"] == 1024

    machine = stack.boto3_client("stepfunctions").describe_state_machine(stateMachineArn=resources["JobStateMachine"])
    expected = (REPO / "statemachine" / "job.asl.json").read_text()
    for name in ("CreateTask", "Status", "Finalize", "RecordFailure"):
        expected = expected.replace(f"${{{name}FunctionArn}}", stack.attribute(f"{name}Function", "Arn"))
    assert json.loads(machine["definition"]) == json.loads(expected)
    assert machine["name"] == "wanflow-local-job"


def test_the_lambda_environment_is_the_templates_globals_resolved_locally(stack: MotoStack) -> None:
    template = SamTemplate.load(REPO / "template.yaml")
    declared = set(template.global_environment())
    env = stack.env
    assert declared <= set(env)
    assert env["WANFLOW_JOBS_TABLE"] == stack.resources["JobsTable"]
    assert env["WANFLOW_INTAKE_BUCKET"] == stack.resources["IntakeBucket"]
    assert env["WANFLOW_OUTPUT_BUCKET"] == stack.resources["OutputBucket"]
    assert env["WANFLOW_TOPIC_ARN"] == stack.resources["JobTopic"]
    assert env["WANFLOW_STATE_MACHINE_ARN"] == stack.resources["JobStateMachine"]
    assert env["WANFLOW_DASHSCOPE_SECRET_ARN"] == stack.resources["DashScopeSecret"]
    assert env["WANFLOW_POLL_INTERVAL_SECONDS"] == "0"
    assert env["DASHSCOPE_BASE_URL"] == "http://127.0.0.1:9/api/v1"
    assert env["AWS_ENDPOINT_URL"] == stack.aws_endpoint
    assert env["POWERTOOLS_SERVICE_NAME"] == "wanflow"
    for name in declared:
        assert os.environ[name] == env[name]
    assert all(function_env.keys() == declared for function_env in stack.function_env.values())


# ------------------------------------------------------------------------------------------- state machine


def test_the_state_machine_waits_then_finalizes(stack: MotoStack, handlers: Handlers) -> None:
    handlers.behaviour["StatusFunction"] = polls_then("finalize", after=3)
    handlers.behaviour["FinalizeFunction"] = lambda event, context: {"status": "SUCCEEDED"}
    execution = stack.wait_for_execution(start_job(stack, "job-finalize"), TIMEOUT)

    assert execution["status"] == "SUCCEEDED"
    assert [event["poll"]["polls"] for event in handlers.calls.of("StatusFunction")] == [0, 1, 2]
    (finalize_event,) = handlers.calls.of("FinalizeFunction")
    assert finalize_event == {"job_id": "job-finalize", "poll": {"next": "finalize", "wait_seconds": 0, "polls": 3}}
    assert handlers.calls.of("RecordFailureFunction") == []
    assert json.loads(execution["output"])["finalize"] == {"status": "SUCCEEDED"}
    (context,) = handlers.calls.contexts("FinalizeFunction")
    assert context.function_name == "wanflow-local-finalize"
    assert context.memory_limit_in_mb == 1024
    assert 0 < context.get_remaining_time_in_millis() <= 900_000


def test_a_throttled_create_waits_and_creates_again_before_polling(stack: MotoStack, handlers: Handlers) -> None:
    creates: list[dict[str, Any]] = []

    def create(event: Any, context: Any) -> dict[str, Any]:
        creates.append(event["poll"])
        if len(creates) < 3:
            return {"next": "submit", "wait_seconds": 0, "polls": 0, "throttled": len(creates)}
        return {"next": "wait", "wait_seconds": 0, "polls": 0}

    handlers.behaviour["CreateTaskFunction"] = create
    handlers.behaviour["StatusFunction"] = polls_then("finalize", after=1)
    handlers.behaviour["FinalizeFunction"] = lambda event, context: {"status": "SUCCEEDED"}
    execution = stack.wait_for_execution(start_job(stack, "job-throttled-create"), TIMEOUT)
    assert execution["status"] == "SUCCEEDED"
    assert [poll.get("throttled", 0) for poll in creates] == [0, 1, 2]  # each create saw the last one's state
    assert len(handlers.calls.of("FinalizeFunction")) == 1


def test_a_fail_decision_goes_to_record_failure(stack: MotoStack, handlers: Handlers) -> None:
    handlers.behaviour["StatusFunction"] = polls_then("fail", after=2)
    execution = stack.wait_for_execution(start_job(stack, "job-fail"), TIMEOUT)

    assert execution["status"] == "SUCCEEDED"
    (failure_event,) = handlers.calls.of("RecordFailureFunction")
    assert failure_event["poll"]["next"] == "fail"
    assert "error" not in failure_event
    assert handlers.calls.of("FinalizeFunction") == []


def test_a_handler_error_is_caught_into_record_failure_with_its_name(stack: MotoStack, handlers: Handlers) -> None:
    def broken(event: Any, context: Any) -> Any:
        raise JobBroken("the video is not an MP4")

    handlers.behaviour["StatusFunction"] = polls_then("finalize", after=1)
    handlers.behaviour["FinalizeFunction"] = broken
    execution = stack.wait_for_execution(start_job(stack, "job-caught"), TIMEOUT)

    assert execution["status"] == "SUCCEEDED"
    assert len(handlers.calls.of("FinalizeFunction")) == 1  # JobBroken is not retried
    (failure_event,) = handlers.calls.of("RecordFailureFunction")
    assert failure_event["error"]["Error"] == "JobBroken"
    cause = json.loads(failure_event["error"]["Cause"])
    assert cause["errorType"] == "JobBroken"
    assert cause["errorMessage"] == "the video is not an MP4"


def test_a_transient_error_is_retried(stack: MotoStack, handlers: Handlers) -> None:
    attempts: list[int] = []

    def flaky(event: Any, context: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise TransientError("DashScope query failed: InternalError")
        return {"next": "finalize", "wait_seconds": 0, "polls": 1}

    handlers.behaviour["StatusFunction"] = flaky
    execution = stack.wait_for_execution(start_job(stack, "job-retry"), TIMEOUT)

    assert execution["status"] == "SUCCEEDED"
    assert len(attempts) == 2
    assert len(handlers.calls.of("FinalizeFunction")) == 1
    assert handlers.calls.of("RecordFailureFunction") == []


def test_when_recording_the_failure_fails_the_execution_fails(stack: MotoStack, handlers: Handlers) -> None:
    def broken(event: Any, context: Any) -> Any:
        raise JobBroken("table is gone")

    handlers.behaviour["StatusFunction"] = polls_then("fail", after=1)
    handlers.behaviour["RecordFailureFunction"] = broken
    execution = stack.wait_for_execution(start_job(stack, "job-unrecorded"), TIMEOUT)

    assert execution["status"] == "FAILED"
    assert execution["error"] == "RecordFailureFailed"


# ------------------------------------------------------------------------------------------- S3 intake


def test_an_upload_under_incoming_reaches_the_intake_handler_once(stack: MotoStack, handlers: Handlers) -> None:
    def s3_records(event: dict[str, Any]) -> list[dict[str, Any]]:
        records = []
        for record in event["Records"]:
            body = json.loads(record["body"])
            records.extend(body.get("Records", []))  # S3's s3:TestEvent has none
        return records

    def intake_keys() -> list[str]:
        return [r["s3"]["object"]["key"] for e in handlers.calls.of("IntakeFunction") for r in s3_records(e)]

    s3 = stack.boto3_client("s3")
    bucket = stack.resources["IntakeBucket"]
    s3.put_object(Bucket=bucket, Key="uploads/not-a-job.png", Body=b"\x89PNG")
    put = s3.put_object(Bucket=bucket, Key="incoming/cat.png", Body=b"\x89PNG", Metadata={"prompt": "a cat"})
    handlers.calls.wait_for(lambda: "incoming/cat.png" in intake_keys())
    source = stack.sqs_event_source("IntakeFunction")
    # The handler has seen the message; wait until the poller has also deleted it.
    source.wait_until(lambda stats: stats.in_flight == 0, timeout=TIMEOUT)

    assert intake_keys() == ["incoming/cat.png"]
    (event,) = [e for e in handlers.calls.of("IntakeFunction") if s3_records(e)]
    (record,) = event["Records"]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == stack.attribute("IntakeQueue", "Arn")
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    (s3_record,) = s3_records(event)
    assert s3_record["eventName"] == "ObjectCreated:Put"
    assert s3_record["s3"]["bucket"]["name"] == bucket
    assert s3_record["s3"]["object"]["versionId"] == put["VersionId"]
    assert s3_record["s3"]["object"]["sequencer"]
    attributes = stack.boto3_client("sqs").get_queue_attributes(
        QueueUrl=stack.resources["IntakeQueue"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_batch_item_failures_keep_only_the_failed_messages(stack: MotoStack, handlers: Handlers) -> None:
    def fail_the_second(event: dict[str, Any], context: Any) -> dict[str, Any]:
        failed = [record["messageId"] for record in event["Records"] if json.loads(record["body"]).get("n") == 2]
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}

    handlers.behaviour["IntakeFunction"] = fail_the_second
    sqs = stack.boto3_client("sqs")
    queue = stack.resources["IntakeQueue"]
    source = stack.sqs_event_source("IntakeFunction")
    before = source.stats
    for n in (1, 2, 3):
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"n": n}))
    after = source.wait_until(
        lambda stats: stats.received >= before.received + 3 and stats.in_flight == 0, timeout=TIMEOUT
    )
    try:
        assert after.deleted - before.deleted == 2
        assert after.failed - before.failed == 1
        attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
        assert attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    finally:
        sqs.purge_queue(QueueUrl=queue)


# ------------------------------------------------------------------------------------------- HTTP API


def test_a_post_becomes_an_http_api_v2_event_and_the_reply_goes_back(stack: MotoStack, handlers: Handlers) -> None:
    handlers.behaviour["ApiFunction"] = lambda event, context: {
        "statusCode": 202,
        "headers": {"content-type": "application/json", "location": "/v1/jobs/j1"},
        "cookies": ["seen=1"],
        "body": json.dumps({"job_id": "j1"}),
    }
    body = {"input": {"prompt": "a cat", "img_url": "https://example.com/cat.png"}}
    response = httpx.post(
        f"{stack.api_url}/v1/jobs?dry=1&tag=a&tag=b",
        json=body,
        headers={"Idempotency-Key": "k-1", "Cookie": "a=1; b=2"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 202
    assert response.json() == {"job_id": "j1"}
    assert response.headers["location"] == "/v1/jobs/j1"
    assert response.headers["set-cookie"] == "seen=1"
    assert response.headers["apigw-requestid"]
    (event,) = handlers.calls.of("ApiFunction")
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /v1/jobs"
    assert event["rawPath"] == "/v1/jobs"
    assert event["rawQueryString"] == "dry=1&tag=a&tag=b"
    assert event["queryStringParameters"] == {"dry": "1", "tag": "a,b"}
    assert "pathParameters" not in event
    assert event["headers"]["idempotency-key"] == "k-1"
    assert event["headers"]["content-type"] == "application/json"
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["a=1", "b=2"]
    assert json.loads(event["body"]) == body
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["http"]["method"] == "POST"
    assert context["http"]["path"] == "/v1/jobs"
    assert context["http"]["sourceIp"] == "127.0.0.1"
    assert context["stage"] == "$default"
    assert context["routeKey"] == "POST /v1/jobs"
    assert context["requestId"] == response.headers["apigw-requestid"]
    assert context["authorizer"]["iam"]["userArn"].startswith("arn:aws:iam::")
    # The same shape as the sample event used by tests and `sam local invoke`.
    sample = json.loads((REPO / "events" / "api-create-job.json").read_text())
    assert set(event) == set(sample) | {"cookies", "queryStringParameters"}
    assert set(context) == set(sample["requestContext"])
    assert set(context["http"]) == set(sample["requestContext"]["http"])


def test_path_parameters_binary_bodies_and_api_gateway_defaults(stack: MotoStack, handlers: Handlers) -> None:
    handlers.behaviour["ApiFunction"] = lambda event, context: {"echo": event.get("pathParameters")}
    response = httpx.get(f"{stack.api_url}/v1/jobs/job%2D7", timeout=TIMEOUT)
    assert response.status_code == 200  # no statusCode: API Gateway answers 200 with the JSON result
    assert response.json() == {"echo": {"job_id": "job-7"}}
    assert handlers.calls.of("ApiFunction")[-1]["routeKey"] == "GET /v1/jobs/{job_id}"

    response = httpx.post(f"{stack.api_url}/v1/jobs/j9/cancel", timeout=TIMEOUT)
    assert handlers.calls.of("ApiFunction")[-1]["routeKey"] == "POST /v1/jobs/{job_id}/cancel"
    assert "body" not in handlers.calls.of("ApiFunction")[-1]

    httpx.post(
        f"{stack.api_url}/v1/uploads", content=b"\x00\x01", headers={"content-type": "image/png"}, timeout=TIMEOUT
    )
    binary = handlers.calls.of("ApiFunction")[-1]
    assert binary["isBase64Encoded"] is True
    assert binary["body"] == "AAE="

    calls_before = len(handlers.calls.of("ApiFunction"))
    response = httpx.get(f"{stack.api_url}/v1/nothing", timeout=TIMEOUT)
    assert (response.status_code, response.json()) == (404, {"message": "Not Found"})
    for method, path, allowed in (("DELETE", "/v1/jobs/j1", "GET"), ("GET", "/v1/jobs/j1/cancel", "POST")):
        response = httpx.request(method, f"{stack.api_url}{path}", timeout=TIMEOUT)
        assert (response.status_code, response.json()) == (405, {"message": "Method Not Allowed"})
        assert response.headers["allow"] == allowed
    assert len(handlers.calls.of("ApiFunction")) == calls_before

    def crash(event: Any, context: Any) -> Any:
        raise RuntimeError("boom")

    handlers.behaviour["ApiFunction"] = crash
    response = httpx.get(f"{stack.api_url}/v1/jobs", timeout=TIMEOUT)
    assert (response.status_code, response.json()) == (500, {"message": "Internal Server Error"})


# ------------------------------------------------------------------------------------------- SNS and schedule


def test_notifications_land_in_the_jsonl_file(stack: MotoStack, handlers: Handlers) -> None:
    def finalize(event: dict[str, Any], context: Any) -> dict[str, Any]:
        # Like the real handler: a plain boto3 client, configured only by the Lambda environment.
        message = {"schema": "wanflow.job.v1", "type": "job.succeeded", "job": {"job_id": event["job_id"]}}
        boto3.client("sns").publish(
            TopicArn=os.environ["WANFLOW_TOPIC_ARN"],
            Message=json.dumps(message),
            MessageAttributes={
                "type": {"DataType": "String", "StringValue": "job.succeeded"},
                "status": {"DataType": "String", "StringValue": "SUCCEEDED"},
            },
        )
        return {"status": "SUCCEEDED"}

    handlers.behaviour["StatusFunction"] = polls_then("finalize", after=1)
    handlers.behaviour["FinalizeFunction"] = finalize
    already = len(stack.notifications())
    stack.wait_for_execution(start_job(stack, "job-notified"), TIMEOUT)
    received = stack.wait_for_notifications(already + 1, TIMEOUT)

    notification = received[already]
    assert notification["message"]["job"]["job_id"] == "job-notified"
    assert notification["attributes"] == {"type": "job.succeeded", "status": "SUCCEEDED"}
    assert notification["topic_arn"] == stack.resources["JobTopic"]
    lines = stack.notifications_path.read_text().splitlines()
    assert json.loads(lines[already]) == notification
    with pytest.raises(TimeoutError):
        stack.wait_for_notifications(already + 2, timeout=0.2)


def test_run_sweeper_invokes_the_sweeper_with_the_schedule_input(stack: MotoStack, handlers: Handlers) -> None:
    handlers.behaviour["SweeperFunction"] = lambda event, context: {"repaired": 0}
    result = stack.run_sweeper()

    assert result.ok
    assert result.value() == {"repaired": 0}
    (event,) = handlers.calls.of("SweeperFunction")
    assert event["source"] == "aws.scheduler"
    assert not event["scheduled_time"].startswith("<")
    assert not event["execution_id"].startswith("<")


def test_handler_errors_and_unserialisable_results_look_like_lambdas(stack: MotoStack, handlers: Handlers) -> None:
    def broken(event: Any, context: Any) -> Any:
        raise TransientError("try later")

    handlers.behaviour["SweeperFunction"] = broken
    result = stack.invoke("SweeperFunction", {})
    assert result.function_error == "Unhandled"
    assert result.error_type == "TransientError"
    assert result.value()["errorMessage"] == "try later"

    handlers.behaviour["SweeperFunction"] = lambda event, context: {"when": object()}
    assert stack.invoke("wanflow-local-sweeper", {}).error_type == "Runtime.MarshalError"

    # Through moto's Lambda API too, as Step Functions calls it.
    handlers.behaviour["SweeperFunction"] = broken
    response = stack.boto3_client("lambda").invoke(FunctionName="wanflow-local-sweeper", Payload=b"{}")
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read())["errorType"] == "TransientError"


# ------------------------------------------------------------------------------------------- malformed HTTP


def raw_exchange(url: str, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes to the local HTTP API; the status and body of its answer (never a hang: a deadline)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            assert chunk, f"the connection closed without an answer: {received!r}"
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
        while len(body) < int(lengths[0]):
            chunk = connection.recv(65536)
            assert chunk, "the answer was cut short"
            body += chunk
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", 400),
        (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
        (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"BREW /v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"TRACE /v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"TRACE /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v1/jobs HTTP/9.9\r\nHost: x\r\n\r\n", 505),
        (b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Wanflow-Principal: bad name!\r\n\r\n", 400),
    ],
)
def test_malformed_http_gets_a_json_answer_and_no_function_call(
    stack: MotoStack, handlers: Handlers, request_bytes: bytes, status: int
) -> None:
    calls_before = len(handlers.calls.of("ApiFunction"))
    answered, body = raw_exchange(stack.api_url, request_bytes)
    assert answered == status and isinstance(json.loads(body).get("message"), str)
    assert len(handlers.calls.of("ApiFunction")) == calls_before


def test_chunked_bodies_arrive_whole(stack: MotoStack, handlers: Handlers) -> None:
    handlers.behaviour["ApiFunction"] = lambda event, context: {"statusCode": 200, "body": event.get("body")}
    request = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
    )
    assert raw_exchange(stack.api_url, request) == (200, b'{"a": 1}')


def test_a_body_no_lambda_can_receive_gets_the_documented_413(stack: MotoStack, handlers: Handlers) -> None:
    calls_before = len(handlers.calls.of("ApiFunction"))
    response = httpx.post(
        f"{stack.api_url}/v1/jobs",
        content=b"x" * (7 * 1024 * 1024),
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 413 and response.json()["code"] == "PayloadTooLarge"
    assert "/v1/uploads" in response.json()["message"]
    assert len(handlers.calls.of("ApiFunction")) == calls_before


def test_a_principal_header_names_another_local_caller(stack: MotoStack, handlers: Handlers) -> None:
    handlers.behaviour["ApiFunction"] = lambda event, context: {"statusCode": 200, "body": "{}"}
    httpx.get(f"{stack.api_url}/v1/jobs", headers={"X-Wanflow-Principal": "bob"}, timeout=TIMEOUT)
    iam = handlers.calls.of("ApiFunction")[-1]["requestContext"]["authorizer"]["iam"]
    assert (iam["userId"], iam["userArn"]) == ("bob", "arn:aws:iam::123456789012:user/bob")
    httpx.get(f"{stack.api_url}/v1/jobs", timeout=TIMEOUT)
    assert handlers.calls.of("ApiFunction")[-1]["requestContext"]["authorizer"]["iam"]["userId"] == (
        "AIDALOCALWANFLOW0000"  # the implicit caller: the same principal local S3 uploads are made by
    )


def test_a_405_names_the_methods_routed_at_the_path(stack: MotoStack) -> None:
    response = httpx.request("TRACE", f"{stack.api_url}/v1/jobs", timeout=TIMEOUT)
    assert response.status_code == 405 and response.headers["allow"] == "GET, POST"
