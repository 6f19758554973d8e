"""SNS adapter: the `wanflow.job.v1` event (schemas/job-event.v1.schema.json), one per job when it ends, the
spend cap's `wanflow.budget.v1` events (schemas/budget-event.v1.schema.json), and the
`wanflow.batch.v1` event (schemas/batch-event.v1.schema.json), one per batch when its last job ended."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from wanflow.batches import BATCH_EVENT_SCHEMA
from wanflow.jobs import Job, JobStatus, rfc3339, utc_now

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

SCHEMA = "wanflow.job.v1"
EVENT_TYPES = {
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELED: "job.canceled",
}


def batch_event(event_type: str, batch_view: dict[str, Any]) -> dict[str, Any]:
    """A `wanflow.batch.v1` event (schemas/batch-event.v1.schema.json)."""
    return {"schema": BATCH_EVENT_SCHEMA, "type": event_type, "time": rfc3339(utc_now()), "batch": batch_view}


def job_event(job: Job, job_view: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "type": EVENT_TYPES[job.status], "time": rfc3339(utc_now()), "job": job_view}


class SnsNotifier:
    """The `Notifier` of a deployed stack; `sns` is a boto3 SNS client."""

    def __init__(self, sns: SNSClient, topic_arn: str) -> None:
        self._sns = sns
        self._topic_arn = topic_arn

    def publish_job_event(self, job: Job, job_view: dict[str, Any]) -> str:
        event = job_event(job, job_view)
        attributes = {
            "type": event["type"],
            "status": job.status.value,
            "model": job.model,
            "source": job.source.value,
            # The webhook queue's subscription takes only events a webhook asked for (template.yaml, FilterPolicy):
            # most jobs have none, and their endings should not cost a webhook invocation each.
            "webhook": _flag(job.webhook is not None and event["type"] in job.webhook.events),
        }
        return self._publish(event, attributes)

    def publish_batch_event(self, event_type: str, batch_view: dict[str, Any]) -> str:
        event = batch_event(event_type, batch_view)
        attributes = {
            "type": event_type,
            "status": str(batch_view["status"]),
            "source": str(batch_view["source"]),
            "webhook": _flag(bool(batch_view.get("webhook"))),
        }
        return self._publish(event, attributes)

    def _publish(self, event: dict[str, Any], attributes: dict[str, str]) -> str:
        response = self._sns.publish(
            TopicArn=self._topic_arn,
            Message=json.dumps(event),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
            },
        )
        return str(response["MessageId"])

    def publish_budget_event(self, event: dict[str, Any]) -> str:
        response = self._sns.publish(
            TopicArn=self._topic_arn,
            Message=json.dumps(event),
            MessageAttributes={"type": {"DataType": "String", "StringValue": str(event["type"])}},
        )
        return str(response["MessageId"])


def _flag(value: bool) -> str:
    return "true" if value else "false"
