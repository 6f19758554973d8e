"""Failure path of the poll loop: end the job FAILED or CANCELED and publish its one notification."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from wanflow.events import FailureInput
from wanflow.observability import inject_lambda_context, logger, metrics, tracer
from wanflow.usecases.ending import record_failure
from wanflow.wiring import dependencies


@inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = FailureInput.model_validate(event)
    logger.set_correlation_id(state.job_id)
    job = record_failure(dependencies(), state.job_id, state.poll.error, caught=state.error)
    return {"job_id": job.job_id, "status": job.status.value}
