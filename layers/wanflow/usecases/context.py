"""The adapters and settings a use case runs with; `wanflow.wiring` builds the real ones, tests build fakes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from wanflow.callers import Caller
from wanflow.errors import NotFound
from wanflow.jobs import Job
from wanflow.ports import (
    BatchRepository,
    BudgetLedger,
    DashScopeApi,
    JobRepository,
    Notifier,
    ObjectStorage,
    RateLimiter,
    RunningSlots,
    SilentTelemetry,
    Telemetry,
    WebhookPorts,
    WorkflowEngine,
)
from wanflow.settings import Settings


@dataclass(frozen=True)
class Dependencies:
    settings: Settings
    jobs: JobRepository
    objects: ObjectStorage
    workflow: WorkflowEngine
    notifier: Notifier
    # A factory, called on each use: the real client reads its key from Secrets Manager (cached, rotation-aware).
    dashscope_client: Callable[[], DashScopeApi]
    # The key list cursors are signed with (wanflow.cursors); a factory, read from Secrets Manager on first use.
    cursor_key: Callable[[], bytes]
    # Each model's running slots (wanflow.usecases.admission) and the deployment's paced turns (usecases.pacing).
    slots: RunningSlots
    limiter: RateLimiter
    # The key video URLs are sealed with between the poll and finalize steps (wanflow.sealing); a factory too.
    seal_key: Callable[[], bytes]
    # The spend cap's ledger: reservations and usage per UTC day (wanflow.usecases.budget).
    budget: BudgetLedger
    # Batch records (wanflow.usecases.batches); a batch's jobs are in `jobs`.
    batches: BatchRepository
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # Webhook deliveries (wanflow.usecases.webhooks); None where a process has no webhook queue configured.
    webhooks: WebhookPorts | None = None
    # Metrics for the dashboard and the alarms (wanflow.telemetry); silent unless wiring gives the real one.
    telemetry: Telemetry = field(default_factory=SilentTelemetry)

    @property
    def dashscope(self) -> DashScopeApi:
        return self.dashscope_client()


def require_job(deps: Dependencies, job_id: str, caller: Caller | None = None) -> Job:
    """The job; NotFound if it does not exist or belongs to someone `caller` may not see (the same answer)."""
    job = deps.jobs.get(job_id)
    if job is None or (caller is not None and not caller.may_see(job.owner)):
        raise NotFound(f"job {job_id} does not exist")
    return job
