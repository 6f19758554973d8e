"""Finalize step: store the video in S3, publish the one notification, mark the job SUCCEEDED."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from wanflow.errors import JobFailure
from wanflow.observability import logger, metrics, tracer
from wanflow.service import application


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    job_id = event["job_id"]
    logger.set_correlation_id(job_id)
    try:
        job = application().finalize(job_id)
    except JobFailure as failure:
        # Nothing a retry could fix (an expired URL): end the job here, with its precise code.
        job = application().record_failure(job_id, {"code": failure.code, "message": failure.message})
    metrics.add_metric(name=f"Jobs{job.status.value.title()}", unit="Count", value=1)
    return {"job_id": job_id, "status": job.status.value}
