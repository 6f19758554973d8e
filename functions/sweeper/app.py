"""Sweeper (every 5 minutes): repairs jobs that lost their way. It never submits a second task for a job."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from wanflow.observability import inject_lambda_context, logger, metrics, tracer
from wanflow.usecases.sweep import sweep
from wanflow.wiring import dependencies


@inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    repairs = sweep(dependencies())
    for repair, count in repairs.items():
        metrics.add_metric(name=f"Sweeper_{repair}", unit="Count", value=count)
    logger.info("sweep done", extra={"repairs": repairs})
    return repairs
