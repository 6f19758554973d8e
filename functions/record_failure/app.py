"""Failure path of the poll loop: end the job FAILED or CANCELED and publish its one notification."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from wanflow.observability import logger, metrics, tracer
from wanflow.service import application


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    job_id = event["job_id"]
    logger.set_correlation_id(job_id)
    job = application().record_failure(job_id, event.get("poll", {}).get("error"), caught=event.get("error"))
    metrics.add_metric(name=f"Jobs{job.status.value.title()}", unit="Count", value=1)
    return {"job_id": job_id, "status": job.status.value}
