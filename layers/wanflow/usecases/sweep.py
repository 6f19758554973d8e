"""The sweeper (every few minutes): repairs jobs that lost their way. It never submits a second task for a job.

What it repairs, each counted under its name in the returned dict (and as a metric):
- `deadline`: a job past its deadline ends FAILED (DeadlineExceeded);
- `execution_started` for a job holding a running slot whose execution never started (it creates the task);
- `create_found` / `create_not_found` / `waiting`: a create that got no answer is reconciled through DashScope's
  task list, by model and creation time, never by creating again;
- `execution_started` / `driven`: a submitted job without a running poll loop gets one, or is driven here;
- `notification_published`: a finished job whose notification was never confirmed is published;
- `notification_undeliverable`: one that failed MAX_PUBLISH_ATTEMPTS sweeps is given up on, loudly, once;
- the admission queue (wanflow.usecases.admission.repair): `slot_released` for a slot held by a job that ended,
  `grant_repaired` for a queued job whose grant was lost halfway, `granted` for queued jobs given free slots;
- the spend cap (wanflow.usecases.budget): `budget_released` for held jobs let back into the queue (a new UTC
  day, a raised cap), `budget_held` for a lost grant the cap holds now, `budget_settled` for a finished job whose
  reservation was still open;
- batches (wanflow.usecases.batch_completion.repair): `batch_ending_recorded` for a batch job whose ending its
  batch missed, `batch_completed_published` for a `batch.completed` that was never published or confirmed;
  `batch_jobs_canceled` for jobs of a canceled batch whose cancel did not fit in its request (usecases.batches);
- `error`: a job that could not be repaired this time (logged; tried again next time).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from wanflow.capabilities import MODELS
from wanflow.errors import JobErrorCode
from wanflow.events import PollState
from wanflow.jobs import HELD_FOR_BUDGET, Job, Notification, Stage, model_of, rfc3339, utc_now
from wanflow.tasks import TaskSummary
from wanflow.usecases import admission, batch_completion, batches, budget, ending, finalize, pacing, poll, submit
from wanflow.usecases.context import Dependencies

logger = logging.getLogger(__name__)

# A create whose Lambda died mid-call leaves the job "creating"; after this long it is treated as unknown.
STALE_CREATE = timedelta(minutes=5)
# How far after a create DashScope's task list is searched for the task it may have made.
CREATE_MATCH_WINDOW = timedelta(minutes=2)
MAX_LIST_PAGES = 20
# A finished job whose notification is still unconfirmed this long after its last change lost its publisher.
UNCONFIRMED_NOTIFICATION = timedelta(minutes=10)
UNCONFIRMED_LOOKBACK = timedelta(days=2)
# After this many sweeps that could not publish a job's notification, it is recorded as undeliverable (an error
# log and a metric the alarm watches) instead of being retried forever.
MAX_PUBLISH_ATTEMPTS = 5
# DashScope's list API filters on wall-clock times in a zone it does not document: search this much wider.
LIST_ZONE_MARGIN = timedelta(hours=14)

Repair = Callable[[Dependencies, Job, datetime], str | None]


def sweep(deps: Dependencies) -> dict[str, int]:
    """Repair jobs that lost their way; returns counts by repair, for metrics and logs.

    One job's failure to be repaired never stops the others: it is logged, counted and tried next time.
    """
    counts: Counter[str] = Counter()
    now = utc_now()

    def repair(action: Repair, job: Job) -> None:
        try:
            outcome = action(deps, job, now)
        except Exception:
            logger.exception("sweeper could not repair job", extra={"job_id": job.job_id})
            outcome = "error"
        if outcome is not None:
            counts[outcome] += 1

    for job in deps.jobs.unfinished():
        repair(_sweep_unfinished, job)
    counts.update(admission.repair(deps, now))
    finished = deps.jobs.finished_since(rfc3339(now - UNCONFIRMED_LOOKBACK))
    for job in finished:
        unconfirmed = job.notification in (Notification.NONE, Notification.CLAIMED)
        if unconfirmed and now - job.updated_at > UNCONFIRMED_NOTIFICATION:
            repair(_publish_unconfirmed, job)
        if budget.needs_settling(job):
            repair(_settle_budget, job)
    counts.update(batches.resume_cancels(deps, finished))
    counts.update(batch_completion.repair(deps, finished, now))
    return dict(counts)


@dataclass
class Gauges:
    """What the sweeper measures for the dashboard on every run (metrics QueueDepth, SpendReservedUsd,
    SpendSpentUsd): queued jobs per model in use (waiting for a slot or held by the spend cap), and the deployment's
    spend today (UTC, list prices; `reserved_usd` is what DailyBudgetUsd counts). None: could not be read this time."""

    queue_depths: dict[str, int] = field(default_factory=dict)
    reserved_usd: Decimal | None = None
    spent_usd: Decimal | None = None


def gauges(deps: Dependencies) -> Gauges:
    """Measure the queue and today's spend. A model with no queued job and no running one is left out (its graph
    shows a gap, not a custom metric per idle model). Never raises: a failed reading is logged and left out."""
    measured = Gauges()
    for model in MODELS:
        try:
            depth = budget.queue_length(deps, model) + budget.queue_length(deps, f"{model}#{HELD_FOR_BUDGET}")
            if depth or deps.slots.holders(model):
                measured.queue_depths[model] = depth
        except Exception:
            logger.warning("could not measure the queue", extra={"model": model}, exc_info=True)
    try:
        today = deps.budget.usage(budget.today())
    except Exception:
        logger.warning("could not read today's spend", exc_info=True)
    else:
        measured.reserved_usd, measured.spent_usd = today.reserved_usd, today.spent_usd
    return measured


def _settle_budget(deps: Dependencies, job: Job, now: datetime) -> str:
    """A job ended but its reservation is still open (its ending could not settle it): settle it now, once."""
    if budget.settle(deps, job):
        admission.dispatch_quietly(deps, model_of(job))
    current = deps.jobs.get(job.job_id)
    return "error" if current is not None and budget.needs_settling(current) else "budget_settled"


def _publish_unconfirmed(deps: Dependencies, job: Job, now: datetime) -> str:
    """A job ended but its notification was never confirmed: its publisher died. Publish it now.

    If that process died after publishing but before confirming, subscribers see this event twice; they can
    tell by `job.job_id`. Losing the only notification would be worse.
    """
    if job.notification_attempts >= MAX_PUBLISH_ATTEMPTS:

        def give_up(current: Job) -> None:
            current.notification = Notification.UNDELIVERABLE

        deps.jobs.update(job.job_id, give_up)
        logger.error(
            "the job's notification could not be published; giving up",
            extra={"job_id": job.job_id, "attempts": job.notification_attempts},
        )
        return "notification_undeliverable"

    def count_attempt(current: Job) -> None:
        current.notification_attempts += 1

    job = deps.jobs.update(job.job_id, count_attempt)
    if job.notification is Notification.CLAIMED:
        ending.publish_claimed(deps, job)
    else:
        ending.publish_once(deps, job)
    return "notification_published"


def _sweep_unfinished(deps: Dependencies, job: Job, now: datetime) -> str | None:
    # Not while a create is in flight or unanswered (a job retrying a failed task has a deadline then): ending it
    # would leave the task its create may have made to nobody. Its create step checks the deadline first.
    past_deadline = job.deadline_at is not None and now > job.deadline_at
    if past_deadline and job.stage not in (Stage.FINALIZING, Stage.CREATING, Stage.CREATE_UNKNOWN):
        ending.end_failed(deps, job.job_id, JobErrorCode.DEADLINE_EXCEEDED, "the job did not finish within 25 hours")
        return "deadline"
    stale_create = job.stage is Stage.CREATING and now - (job.create_attempted_at or job.updated_at) > STALE_CREATE
    if job.stage is Stage.CREATE_UNKNOWN or stale_create:
        return _reconcile_create(deps, job, now)
    if job.stage in (Stage.ACCEPTED, Stage.SUBMITTED, Stage.FINALIZING):
        return _revive_execution(deps, job)
    return None


def _revive_execution(deps: Dependencies, job: Job) -> str | None:
    status = deps.workflow.execution_status(job.job_id)
    if status == "RUNNING":
        return None
    if status is None:
        admission.start_execution(deps, job)
        return "execution_started"
    # The execution ended without ending the job (it should not happen): drive the job here.
    if job.stage is Stage.ACCEPTED:
        result = submit.create_task_step(deps, job.job_id, PollState(next="submit", polls=job.polls))
    elif job.stage is Stage.SUBMITTED:
        result = poll.check_status(deps, job.job_id, PollState(next="wait", polls=job.polls))
    else:
        result = PollState(next="finalize")
    if result.next == "finalize":
        finalize.finalize_job(deps, job.job_id, result.video)
    elif result.next == "fail":
        ending.record_failure(deps, job.job_id, result.error)
    return "driven"


def _reconcile_create(deps: Dependencies, job: Job, now: datetime) -> str:
    """Find the task an unanswered create may have made, by model and time, using DashScope's list API."""
    attempted = job.create_attempted_at or job.created_at
    if now - attempted < timedelta(seconds=deps.settings.reconcile_after_seconds):
        return "waiting"  # DashScope's list may lag a create by a little
    start, end = attempted - timedelta(minutes=1), attempted + CREATE_MATCH_WINDOW
    # A task another job already records is that job's, however long ago that job was queued.
    candidates = [
        task
        for task in _tasks_created_between(deps, job.model, start, end)
        if deps.jobs.holding_task(task.task_id) is None
    ]
    if not candidates:
        ending.end_failed(
            deps,
            job.job_id,
            JobErrorCode.CREATE_OUTCOME_UNKNOWN,
            "the create request got no answer and DashScope has no task for it",
        )
        return "create_not_found"
    # The unclaimed task created closest to our attempt is ours; jobs reconciled later take the others.
    chosen = min(candidates, key=lambda task: abs((task.created_at or attempted) - attempted))
    pacing.query_turn_or_retry_later(deps)
    task = deps.dashscope.get_task(chosen.task_id)
    job = deps.jobs.update(job.job_id, lambda current: submit.record_created(current, task))
    admission.start_execution(deps, job)  # a no-op when its execution is still waiting for this
    return "create_found"


def _tasks_created_between(deps: Dependencies, model: str, start: datetime, end: datetime) -> list[TaskSummary]:
    """DashScope's tasks for `model` created in [start, end], by their exact creation time.

    The list API filters on wall-clock times in a zone DashScope does not document (the client assumes UTC+8),
    so the query is widened by LIST_ZONE_MARGIN either way and the exact `gmt_create` of each entry decides.
    """
    tasks: list[TaskSummary] = []
    for page_no in range(1, MAX_LIST_PAGES + 1):
        pacing.query_turn_or_retry_later(deps)
        page = deps.dashscope.list_tasks(
            start_time=start - LIST_ZONE_MARGIN,
            end_time=end + LIST_ZONE_MARGIN,
            model_name=model,
            page_no=page_no,
            page_size=100,
        )
        tasks.extend(task for task in page.tasks if task.created_at is None or start <= task.created_at <= end)
        if page_no >= page.total_page:
            break
    return tasks
