"""SNS adapter: the `wanflow.job.v1` event (schemas/job-event.v1.schema.json), one per job when it ends."""

from __future__ import annotations

import json
from typing import Any

from wanflow.aws import client
from wanflow.jobs import Job, JobStatus, rfc3339, utc_now

SCHEMA = "wanflow.job.v1"
EVENT_TYPES = {
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELED: "job.canceled",
}


def job_event(job: Job, job_view: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "type": EVENT_TYPES[job.status], "time": rfc3339(utc_now()), "job": job_view}


def publish_job_event(topic_arn: str, job: Job, job_view: dict[str, Any]) -> str:
    """Publish the event for a finished job; returns the SNS message id."""
    event = job_event(job, job_view)
    attributes = {
        "type": event["type"],
        "status": job.status.value,
        "model": job.model,
        "source": job.source.value,
    }
    response = client("sns").publish(
        TopicArn=topic_arn,
        Message=json.dumps(event),
        MessageAttributes={name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()},
    )
    return response["MessageId"]
