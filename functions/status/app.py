"""CheckStatus step of the poll loop: query the DashScope task, record it, say what the state machine does next."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from wanflow.events import ExecutionInput
from wanflow.observability import inject_lambda_context, logger, metrics, tracer
from wanflow.usecases.poll import check_status
from wanflow.wiring import dependencies


@inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = ExecutionInput.model_validate(event)
    logger.set_correlation_id(state.job_id)
    result = check_status(dependencies(), state.job_id, state.poll)
    logger.info("polled", extra={"next": result.next, "polls": result.polls})
    return result.as_state()
