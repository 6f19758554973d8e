"""wanflow's CloudWatch metrics: every name, unit and dimension set the code emits, in one place.

The code emits them (`wanflow.observability.EmfTelemetry` for the domain's events through the `Telemetry` port,
`wanflow.observability.emit` for the handlers' own), the dashboard and the alarms in template.yaml read them, and
tests/unit/test_operations_template.py checks that every metric the template names is one of these. Plain data, no
Powertools: the domain may import it. Runbooks per alarm: docs/operations.md.

Dimensions are few and small on purpose (CloudWatch bills each distinct combination as a custom metric): `service`
(always "wanflow", as Powertools sets it), `model` (canonical model names, about ten), `outcome` (a handful of
values), `operation` (create or query).
"""

from __future__ import annotations

from typing import Final

from wanflow.jobs import Job, JobStatus

NAMESPACE: Final = "wanflow"
SERVICE: Final = "wanflow"

# Jobs stored QUEUED (API, S3 intake, batches), per model.
JOBS_SUBMITTED: Final = "JobsSubmitted"
# Jobs that ended, exactly once per job (wanflow.usecases.ending), per model and outcome (the final status), and per
# outcome alone for the failure-ratio alarm.
JOBS_FINISHED: Final = "JobsFinished"
# Seconds from a job's creation (its request) to its SUCCEEDED ending (the video stored), per model.
TIME_TO_VIDEO: Final = "TimeToVideo"
# DashScope answers that were no verdict, per operation ("create", "query"): throttled (HTTP 429), or another
# failure worth trying again (5xx, no answer, a create whose outcome is unknown). Neither ever fails a job.
DASHSCOPE_THROTTLED: Final = "DashScopeThrottled"
DASHSCOPE_ERRORS: Final = "DashScopeErrors"
# Webhook delivery attempts by outcome (delivered, retry, given_up); given_up is what the dead-letter alarm watches.
WEBHOOK_DELIVERIES: Final = "WebhookDeliveries"
# Gauges the sweeper measures every 5 minutes: queued jobs per model (waiting for a slot or held by the spend cap),
# and the deployment's spend today (UTC) in list-price USD, the part counted against DailyBudgetUsd and its
# succeeded part.
QUEUE_DEPTH: Final = "QueueDepth"
SPEND_RESERVED_USD: Final = "SpendReservedUsd"
SPEND_SPENT_USD: Final = "SpendSpentUsd"
# Jobs the sweeper found past their 25-hour deadline and ended FAILED (DeadlineExceeded): each was stuck.
JOBS_PAST_DEADLINE: Final = "JobsPastDeadline"
# Batches stored (API and .jsonl intake).
BATCHES_SUBMITTED: Final = "BatchesSubmitted"
# Every repair the sweeper made, by its name in wanflow.usecases.sweep: Sweeper_<repair>.
SWEEPER_PREFIX: Final = "Sweeper_"
SWEEPER_NOTIFICATION_UNDELIVERABLE: Final = f"{SWEEPER_PREFIX}notification_undeliverable"

# Dimension values.
CREATE: Final = "create"
QUERY: Final = "query"
DELIVERED: Final = "delivered"
RETRY: Final = "retry"
GIVEN_UP: Final = "given_up"

_SERVICE_ONLY: Final = frozenset({("service",)})
_PER_MODEL: Final = frozenset({("model", "service")})

# Each metric's dimension sets (names sorted): a metric is stored once per set, and CloudWatch finds a data point
# only by its exact set.
DIMENSION_SETS: Final[dict[str, frozenset[tuple[str, ...]]]] = {
    JOBS_SUBMITTED: _PER_MODEL,
    JOBS_FINISHED: frozenset({("model", "outcome", "service"), ("outcome", "service")}),
    TIME_TO_VIDEO: _PER_MODEL,
    DASHSCOPE_THROTTLED: frozenset({("operation", "service")}),
    DASHSCOPE_ERRORS: frozenset({("operation", "service")}),
    WEBHOOK_DELIVERIES: frozenset({("outcome", "service")}),
    QUEUE_DEPTH: _PER_MODEL,
    SPEND_RESERVED_USD: _SERVICE_ONLY,
    SPEND_SPENT_USD: _SERVICE_ONLY,
    JOBS_PAST_DEADLINE: _SERVICE_ONLY,
    BATCHES_SUBMITTED: _SERVICE_ONLY,
}


def dimension_sets_of(name: str) -> frozenset[tuple[str, ...]]:
    """The dimension sets `name` is emitted with; a Sweeper_<repair> count has the service alone."""
    if name.startswith(SWEEPER_PREFIX):
        return _SERVICE_ONLY
    return DIMENSION_SETS[name]


def time_to_video_seconds(job: Job) -> float | None:
    """From the request to the stored video, for a job that SUCCEEDED; None for any other."""
    if job.status is not JobStatus.SUCCEEDED or job.completed_at is None:
        return None
    return max(0.0, (job.completed_at - job.created_at).total_seconds())
