"""CreateTask step, the first of a job's execution: create the DashScope task of a job granted a running slot."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from wanflow.events import ExecutionInput
from wanflow.observability import inject_lambda_context, logger, metrics, tracer
from wanflow.usecases.submit import create_task_step
from wanflow.wiring import dependencies


@inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = ExecutionInput.model_validate(event)
    logger.set_correlation_id(state.job_id)
    result = create_task_step(dependencies(), state.job_id, state.poll)
    logger.info("create step", extra={"next": result.next})
    return result.as_state()
