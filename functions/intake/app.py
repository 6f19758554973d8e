"""S3 intake (docs/product.md section 3): SQS batches of S3 ObjectCreated events under incoming/ start jobs.

Every valid object becomes a QUEUED job at once (the admission queue submits it when its model has room); poison
input ends as a FAILED job with a notification. A record that fails (the job table unavailable) is reported as a
batch item failure: SQS hands it back after the visibility timeout, so nothing is dropped.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from wanflow.observability import inject_lambda_context, logger, metrics, tracer
from wanflow.s3_events import IntakeRecord
from wanflow.usecases.intake import objects_in_notification, start_intake_job
from wanflow.wiring import dependencies

processor = BatchProcessor(event_type=EventType.SQS, model=IntakeRecord)


def record_handler(record: IntakeRecord) -> None:
    deps = dependencies()
    receive_count = int(record.attributes.ApproximateReceiveCount)
    for created in objects_in_notification(record.body):
        job = start_intake_job(deps, created, receive_count=receive_count)
        if job is not None:
            logger.info("intake job", extra={"job_id": job.job_id, "status": job.status, "key": created.key})


@inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
