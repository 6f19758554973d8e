"""Sweeper (every 5 minutes): repairs jobs that lost their way. It never submits a second task for a job."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from wanflow import telemetry
from wanflow.observability import emit, inject_lambda_context, logger, metrics, tracer
from wanflow.usecases.sweep import gauges, sweep
from wanflow.wiring import dependencies


@inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    deps = dependencies()
    repairs = sweep(deps)
    for repair, count in repairs.items():
        metrics.add_metric(name=f"{telemetry.SWEEPER_PREFIX}{repair}", unit="Count", value=count)
    # Every sweep, 0 included: the stuck-job alarm then sees data, not a gap.
    metrics.add_metric(name=telemetry.JOBS_PAST_DEADLINE, unit="Count", value=repairs.get("deadline", 0))
    measured = gauges(deps)
    for model, depth in measured.queue_depths.items():
        emit(telemetry.QUEUE_DEPTH, depth, model=model)
    if measured.reserved_usd is not None and measured.spent_usd is not None:
        emit(telemetry.SPEND_RESERVED_USD, float(measured.reserved_usd), "None")
        emit(telemetry.SPEND_SPENT_USD, float(measured.spent_usd), "None")
    logger.info("sweep done", extra={"repairs": repairs, "queue_depths": measured.queue_depths})
    return repairs
