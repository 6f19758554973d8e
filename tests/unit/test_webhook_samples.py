"""events/ samples of webhooks: the job.started event follows the event schema, and the sample delivery's signature
is what standardwebhooks computes for its id, timestamp and body with the sample secret."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
from standardwebhooks import Webhook

from wanflow.webhooks import redacted_url

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "schemas" / "job-event.v1.schema.json").read_text())


def test_the_job_started_sample_follows_the_schema() -> None:
    sample = json.loads((REPO / "events" / "notification-job-started.json").read_text())
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    validator.validate(sample)
    assert sample["type"] == "job.started" and sample["job"]["status"] == "RUNNING"
    assert list(validator.iter_errors({**sample, "job": {**sample["job"], "status": "SUCCEEDED"}}))


def test_the_sample_delivery_is_signed_as_standard_webhooks_sign() -> None:
    delivery = json.loads((REPO / "events" / "webhook-delivery.json").read_text())
    headers = delivery["headers"]
    event = json.loads(delivery["body"])
    assert headers["webhook-id"] == f"msg_{event['job']['job_id']}_job_started"
    moment = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    expected = Webhook(delivery["sample_secret"]).sign(headers["webhook-id"], moment, delivery["body"])
    assert headers["webhook-signature"] == expected
    # The event shows only the origin of the webhook URL (its path and query may be its secret).
    assert event["job"]["webhook"]["url"] == redacted_url(delivery["url"]) == "https://hooks.example.com/..."


def test_the_webhook_function_sample_carries_one_event() -> None:
    event = json.loads((REPO / "events" / "sqs-webhook-delivery.json").read_text())
    (record,) = event["Records"]
    assert record["eventSource"] == "aws:sqs" and ":wanflow-WebhookQueue-" in record["eventSourceARN"]
    jsonschema.validate(json.loads(record["body"]), SCHEMA)
