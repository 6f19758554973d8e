"""Webhook deliveries (docs/product.md, "Webhooks"): one SQS message per delivery, signed per Standard Webhooks.

The job's ending events reach the webhook queue through the SNS topic (a raw-delivery subscription), so the body of
a delivery is exactly the `wanflow.job.v1` event SNS carries; `job.started` and redeliveries are queued directly
(SNS subscribers keep one event per job). Nothing here runs inside a job's own steps except queueing job.started,
which never fails the job: a slow or dead receiver only ever holds its own message.

An attempt that is not answered 2xx is tried again after the next wait of `Settings.webhook_retry_seconds` (the
message is made visible again then, and reported as a batch item failure); after the last one the delivery is given
up: the job's webhook state becomes "failed", and the handler logs and counts it (metric WebhookDeliveries with
outcome given_up, which WebhookDeadLetteredAlarm in template.yaml watches). The message is then consumed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from wanflow.adapters.notifier import EVENT_TYPES as ENDING_EVENT_OF_STATUS
from wanflow.adapters.notifier import SCHEMA
from wanflow.batches import BATCH_COMPLETED
from wanflow.callers import Caller
from wanflow.errors import Conflict, WanflowError
from wanflow.jobs import Job, TransitionRefused, rfc3339, utc_now
from wanflow.ports import WebhookPorts
from wanflow.usecases.context import Dependencies, require_job
from wanflow.usecases.views import job_view
from wanflow.webhooks import (
    JOB_STARTED,
    Delivery,
    DeliveryState,
    delivery_headers,
    event_id,
    retry_delay,
)

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    DELIVERED = "delivered"
    DROPPED = "dropped"  # no webhook wants this event: consumed quietly
    RETRY = "retry"  # the attempt failed; the message comes back after the next wait
    GIVEN_UP = "given_up"  # the last attempt failed: dead-lettered (recorded, logged, counted) and consumed


@dataclass(frozen=True)
class WebhookTarget:
    """Where one event goes, and how an attempt is recorded on whatever owns the webhook (a job)."""

    url: str
    event_id: str
    record: Callable[[Delivery, DeliveryState], None]


def webhook_target(deps: Dependencies, event: dict[str, Any]) -> WebhookTarget | None:
    """The webhook an event goes to, by its type (None: nobody asked for it). The one place that decides it."""
    choose = _TARGETS.get(str(event.get("type")))
    return choose(deps, event) if choose is not None else None


def _job_webhook_target(deps: Dependencies, event: dict[str, Any]) -> WebhookTarget | None:
    job_id = str((event.get("job") or {}).get("job_id") or "")
    job = deps.jobs.get(job_id) if job_id else None
    event_type = str(event["type"])
    if job is None or job.webhook is None or event_type not in job.webhook.events:
        return None

    def record(delivery: Delivery, state: DeliveryState) -> None:
        record_job_delivery(deps, job_id, delivery, state)

    return WebhookTarget(url=job.webhook.url, event_id=event_id(job_id, event_type), record=record)


def _batch_webhook_target(deps: Dependencies, event: dict[str, Any]) -> WebhookTarget | None:
    """`batch.completed` goes to the batch's shared webhook (whatever job events it lists: it is the batch's own
    event, and a batch with a webhook asked for it)."""
    batch_id = str((event.get("batch") or {}).get("batch_id") or "")
    batch = deps.batches.get(batch_id) if batch_id else None
    if batch is None or not batch.webhook or not batch.webhook.get("url"):
        return None

    def record(delivery: Delivery, state: DeliveryState) -> None:
        deps.batches.record_webhook_delivery(batch_id, delivery, state)

    return WebhookTarget(url=str(batch.webhook["url"]), event_id=event_id(batch_id, BATCH_COMPLETED), record=record)


# Event type -> how its target is found; events of other types (budget.threshold) have no webhook.
_TARGETS: dict[str, Callable[[Dependencies, dict[str, Any]], WebhookTarget | None]] = {
    **dict.fromkeys(ENDING_EVENT_OF_STATUS.values(), _job_webhook_target),
    JOB_STARTED: _job_webhook_target,
    BATCH_COMPLETED: _batch_webhook_target,
}


def record_job_delivery(deps: Dependencies, job_id: str, delivery: Delivery, state: DeliveryState) -> None:
    """Keep an attempt on the job (its latest ones only), and the webhook's state after it."""

    def change(job: Job) -> None:
        if job.webhook is not None:
            job.webhook.record(delivery, state)

    deps.jobs.update(job_id, change)


def deliver(deps: Dependencies, body: str, *, attempt: int, receipt_handle: str) -> Outcome:
    """One attempt to deliver the event `body` (the queue message's body, sent byte for byte); `attempt` counts
    from 1 (the message's receive count)."""
    ports = _ports(deps)
    try:
        event = json.loads(body)
    except ValueError:
        logger.error("a webhook queue message is not JSON; dropped")
        return Outcome.DROPPED
    target = webhook_target(deps, event) if isinstance(event, dict) else None
    if target is None:
        return Outcome.DROPPED
    sent_at = utc_now()
    headers = delivery_headers(ports.secrets(), target.event_id, sent_at, body)
    response = ports.sender.post(
        target.url, body.encode(), headers, allow_loopback=deps.settings.webhook_allow_loopback
    )
    delay = None if response.ok else retry_delay(attempt, deps.settings.webhook_retry_seconds)
    state: DeliveryState = "delivered" if response.ok else ("retrying" if delay is not None else "failed")
    target.record(
        Delivery(
            event_id=target.event_id,
            type=str(event["type"]),
            attempt=attempt,
            at=sent_at,
            status_code=response.status_code,
            error=response.error,
            duration_ms=response.duration_ms,
            response=response.body or None,
        ),
        state,
    )
    if response.ok:
        return Outcome.DELIVERED
    if delay is None:
        logger.error(
            "webhook delivery given up after its last attempt",
            extra={"event_id": target.event_id, "attempts": attempt, "status_code": response.status_code},
        )
        return Outcome.GIVEN_UP
    ports.queue.postpone(receipt_handle, delay)
    return Outcome.RETRY


def announce_started(deps: Dependencies, job: Job) -> None:
    """Queue `job.started` for a job whose task the poll step has just seen RUNNING, once per job, if its webhook
    asks for it. Never raises: a webhook problem must not fail the job."""
    if deps.webhooks is None or job.webhook is None or JOB_STARTED not in job.webhook.events:
        return
    if job.webhook.started_sent:
        return

    def claim(current: Job) -> None:
        if current.webhook is None or current.webhook.started_sent:
            raise TransitionRefused("job.started already queued")
        current.webhook.started_sent = True

    try:
        job = deps.jobs.update(job.job_id, claim)
    except TransitionRefused:
        return
    try:
        deps.webhooks.queue.send(json.dumps(_event(deps, job, JOB_STARTED)))
    except Exception:
        # At most once: the flag is set, so this job's job.started is lost rather than risking a second one.
        logger.exception("could not queue job.started for the webhook", extra={"job_id": job.job_id})


def redeliver(deps: Dependencies, job_id: str, caller: Caller | None) -> dict[str, str]:
    """`POST /v1/jobs/{id}/webhook/redeliver`: queue the job's latest event again, with its webhook-id."""
    job = require_job(deps, job_id, caller)
    if job.webhook is None:
        raise Conflict(f"job {job_id} has no webhook; add one when you create a job")
    event_type = last_event_type(job)
    if event_type is None:
        raise Conflict(f"job {job_id} has no event for its webhook yet (it asked for {', '.join(job.webhook.events)})")
    _ports(deps).queue.send(json.dumps(_event(deps, job, event_type)))
    return {"job_id": job_id, "event_id": event_id(job_id, event_type), "type": event_type}


def last_event_type(job: Job) -> str | None:
    """The latest event of the job that its webhook asked for: its ending, or job.started once queued."""
    if job.webhook is None:
        return None
    if job.status.is_final:
        ending = ENDING_EVENT_OF_STATUS.get(job.status)
        if ending in job.webhook.events:
            return ending
    if job.webhook.started_sent and JOB_STARTED in job.webhook.events:
        return JOB_STARTED
    return None


def _event(deps: Dependencies, job: Job, event_type: str) -> dict[str, Any]:
    """A `wanflow.job.v1` event of `event_type`, shaped as the SNS notifier shapes the endings."""
    return {
        "schema": SCHEMA,
        "type": event_type,
        "time": rfc3339(utc_now()),
        "job": job_view(deps, job, with_url=False),
    }


def _ports(deps: Dependencies) -> WebhookPorts:
    if deps.webhooks is None:
        raise WanflowError("webhooks are not configured in this process", code="ConfigurationError")
    return deps.webhooks
