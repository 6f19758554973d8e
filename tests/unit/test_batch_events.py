"""The wanflow.batch.v1 event: its schema, the sample in events/, and what the SNS adapter publishes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pytest
from moto import mock_aws

from wanflow.adapters.notifier import SnsNotifier
from wanflow.batches import Batch
from wanflow.jobs import Source

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "schemas" / "batch-event.v1.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_the_schema_is_valid_and_the_sample_notification_matches() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    sample = json.loads((REPO / "events" / "notification-batch-completed.json").read_text())
    VALIDATOR.validate(sample)
    open_batch = {**sample, "batch": {**sample["batch"], "status": "open"}}
    assert list(VALIDATOR.iter_errors(open_batch))  # a batch.completed is never about an open batch
    no_counts = {**sample, "batch": {**sample["batch"], "counts": {"SUCCEEDED": 3}}}
    assert list(VALIDATOR.iter_errors(no_counts))


def ended_batch() -> Batch:
    batch = Batch(batch_id="0" * 32, owner="alice", source=Source.API, items=2, job_indexes=[0, 1], metadata={"p": "1"})
    batch.endings = {job_id: status for job_id, status in zip(batch.job_ids, ["SUCCEEDED", "FAILED"], strict=True)}
    return batch


@pytest.fixture
def sns_queue(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="wanflow")["TopicArn"]
        queue = sqs.create_queue(QueueName="events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        yield sns, sqs, topic, queue


def test_the_sns_adapter_publishes_a_schema_valid_event_with_its_type_attribute(sns_queue: Any) -> None:
    sns, sqs, topic, queue = sns_queue
    batch = ended_batch()
    SnsNotifier(sns, topic).publish_batch_event("batch.completed", batch.public_view({}))
    (message,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    envelope = json.loads(message["Body"])
    event = json.loads(envelope["Message"])
    assert envelope["MessageAttributes"]["type"]["Value"] == "batch.completed"
    assert envelope["MessageAttributes"]["status"]["Value"] == "completed"
    event["batch"]["completed_at"] = event["time"]  # claimed in the batch table, not here
    VALIDATOR.validate(event)
    assert event["batch"]["counts"]["SUCCEEDED"] == event["batch"]["counts"]["FAILED"] == 1
