"""Finalize step: store the video in S3, publish the one notification, mark the job SUCCEEDED."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from wanflow.events import ExecutionInput
from wanflow.observability import inject_lambda_context, logger, metrics, tracer
from wanflow.usecases.finalize import finalize_job
from wanflow.wiring import dependencies


@inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = ExecutionInput.model_validate(event)
    logger.set_correlation_id(state.job_id)
    job = finalize_job(dependencies(), state.job_id, state.poll.video)
    return {"job_id": job.job_id, "status": job.status.value}
