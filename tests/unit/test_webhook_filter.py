"""The webhook queue's subscription takes only the events a webhook asked for: the SNS adapter's `webhook` message
attribute against the FilterPolicy in template.yaml, on moto's SNS -> SQS delivery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from samtranslator.yaml_helper import yaml_parse

from wanflow.adapters.notifier import SnsNotifier
from wanflow.batches import Batch
from wanflow.jobs import Job, JobStatus, Provider, Source, Stage
from wanflow.webhooks import JobWebhook

REPO = Path(__file__).resolve().parents[2]


def filter_policy() -> dict[str, Any]:
    template = yaml_parse((REPO / "template.yaml").read_text())
    policy: dict[str, Any] = template["Resources"]["WebhookSubscription"]["Properties"]["FilterPolicy"]
    return policy


def ended_job(job_id: str, webhook: JobWebhook | None) -> Job:
    job = Job(
        job_id=job_id,
        source=Source.API,
        model="wan2.6-i2v-flash",
        request={"input": {"prompt": "p"}},
        provider=Provider(region="ap-southeast-1"),
        webhook=webhook,
    )
    job.status, job.stage = JobStatus.FAILED, Stage.DONE
    return job


@pytest.fixture
def webhook_queue(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="wanflow")["TopicArn"]
        queue = sqs.create_queue(QueueName="webhooks")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes = {"RawMessageDelivery": "true", "FilterPolicy": json.dumps(filter_policy())}
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes=attributes)
        yield SnsNotifier(sns, topic), sqs, queue


def received(sqs: Any, queue: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def test_only_events_a_webhook_asked_for_reach_the_webhook_queue(webhook_queue: Any) -> None:
    notifier, sqs, queue = webhook_queue
    hook = "https://hooks.example.com/x"
    asked = ended_job("a" * 32, JobWebhook(url=hook, events=["job.failed"]))
    other_events = ended_job("b" * 32, JobWebhook(url=hook, events=["job.succeeded"]))
    no_webhook = ended_job("c" * 32, None)
    for job in (asked, other_events, no_webhook):
        notifier.publish_job_event(job, {"job_id": job.job_id})
    with_hook = Batch(batch_id="d" * 32, owner="o", source=Source.API, items=1, job_indexes=[0], webhook={"url": hook})
    without = Batch(batch_id="e" * 32, owner="o", source=Source.API, items=1, job_indexes=[0])
    for batch in (with_hook, without):
        batch.endings = {batch.job_ids[0]: "SUCCEEDED"}
        notifier.publish_batch_event("batch.completed", batch.public_view({}))
    notifier.publish_budget_event({"schema": "wanflow.budget.v1", "type": "budget.threshold", "budget": {}})

    events = received(sqs, queue)
    ids = sorted(event["job"]["job_id"] if "job" in event else event["batch"]["batch_id"] for event in events)
    assert ids == ["a" * 32, "d" * 32]
