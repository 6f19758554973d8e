"""S3 intake (PRODUCT.md section 3): SQS batches of S3 ObjectCreated events under incoming/ start jobs.

Throttled submissions are reported as batch item failures: SQS hands them back after the visibility timeout,
so nothing is dropped. Everything else ends as a job (FAILED with a notification for poison input).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from wanflow.intake import objects_in_message, submit_paced
from wanflow.observability import logger, metrics, tracer

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    for created in objects_in_message(record.body):
        job = submit_paced(created)
        if job is not None:
            logger.info("intake job", extra={"job_id": job.job_id, "status": job.status, "key": created.key})
            metrics.add_metric(name="IntakeJobs", unit="Count", value=1)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
