"""CheckStatus step of the poll loop: query the DashScope task, record it, say what the state machine does next."""

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
    result = application().poll(job_id, int(event.get("poll", {}).get("polls", 0)))
    logger.info("polled", extra={"next": result.next, "polls": result.polls})
    return result.as_state()
