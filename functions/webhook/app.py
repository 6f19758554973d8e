"""Webhook deliveries (docs/product.md, "Webhooks"): one SQS message per delivery, from the job topic (raw SNS
delivery) or queued directly (job.started, redeliveries). A failed attempt is reported as a batch item failure after
its message was made visible again at its next attempt's time; the last failed attempt is dead-lettered.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from wanflow import telemetry
from wanflow.observability import emit, inject_lambda_context, metrics, tracer
from wanflow.usecases.webhooks import Outcome, deliver
from wanflow.wiring import dependencies

processor = BatchProcessor(event_type=EventType.SQS)
# The `outcome` of metric WebhookDeliveries; given_up is what WebhookDeadLetteredAlarm watches.
_OUTCOMES = {
    Outcome.DELIVERED: telemetry.DELIVERED,
    Outcome.RETRY: telemetry.RETRY,
    Outcome.GIVEN_UP: telemetry.GIVEN_UP,
}


class DeliveryFailed(Exception):
    """This attempt failed; the message comes back for the next one (reported as a batch item failure)."""


def record_handler(record: SQSRecord) -> None:
    outcome = deliver(
        dependencies(),
        record.body,
        attempt=int(record.attributes.approximate_receive_count),
        receipt_handle=record.receipt_handle,
    )
    if outcome in _OUTCOMES:
        emit(telemetry.WEBHOOK_DELIVERIES, 1, outcome=_OUTCOMES[outcome])
    if outcome is Outcome.RETRY:
        raise DeliveryFailed(record.message_id)


@inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
