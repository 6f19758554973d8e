"""The spend cap (docs/product.md section 8): each job's list price is reserved against the UTC day's budget before
its DashScope task is created; a job that would pass the cap waits, QUEUED, instead of being refused or lost.

- The reservation is made where a queued job is granted its running slot (wanflow.usecases.admission), before its
  execution starts: against the deployment's cap (`DailyBudgetUsd`) and its owner's (`CallerBudgetsUsd`), both or
  neither, atomically (`BudgetLedger.reserve`). It belongs to the job, not to a task: a job granted again, or
  whose task is submitted again, keeps its one reservation.
- A job that ends SUCCEEDED keeps it (spent); FAILED or CANCELED gives it back. Each exactly once (`settle`).
- A job the cap holds stays QUEUED with `queue.reason` "budget", beside its model's queue (`Job.queue_key`), so it
  does not stand in the way of jobs that still fit (another caller's, or a cheaper one). The sweeper lets held
  jobs that fit again back into the queue (`release_held`): after midnight UTC, or once the cap was raised.
- `budget.threshold` events: once per day and scope at 80% and at 100% of the cap; 100% also when the first job
  of the day is held. A threshold is claimed on the day's item before it is published, so it is published once
  (if publishing then fails, it is logged and not repeated: a second announcement would be worse than a lost one).
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from wanflow.callers import ANONYMOUS, Caller
from wanflow.capabilities import MODELS
from wanflow.errors import FieldError, InvalidRequest
from wanflow.jobs import HELD_FOR_BUDGET, BudgetState, Job, JobBudget, JobStatus, model_of, rfc3339, utc_now
from wanflow.ports import KEEP_USAGE_DAYS, DayUsage, Reservation, ReserveOutcome
from wanflow.usecases.context import Dependencies

logger = logging.getLogger(__name__)

SCHEMA = "wanflow.budget.v1"
THRESHOLDS = ("0.8", "1.0")
FULL = "1.0"
# The sweeper lets at most this many held jobs of a model back into the queue per pass (a bound on its work).
MAX_RELEASES_PER_PASS = 100
# Above every queue rank: "all of a queue" for JobRepository.queued_ranks_before.
_LAST_RANK = "\U0010ffff"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def today() -> str:
    return utc_now().date().isoformat()


def seconds_to_next_day() -> int:
    now = utc_now()
    midnight = datetime.combine(now.date() + timedelta(days=1), time.min, tzinfo=now.tzinfo)
    return max(1, int((midnight - now).total_seconds()))


def reserve_for_grant(deps: Dependencies, job: Job) -> JobBudget | None:
    """Reserve the job's list price against today's budget; its reservation, or None if the cap holds it.

    A job that holds a reservation already (granted before, or a grant repeated after a crash) keeps it.
    """
    if job.budget is not None:
        return job.budget
    settings = deps.settings
    day = today()
    usd = _estimate(job)
    principal = job.owner or ANONYMOUS
    cap = settings.daily_budget_usd or None
    principal_cap = settings.caller_budget_for(principal, job.owner_arn)
    reservation = Reservation(
        job_id=job.job_id,
        day=day,
        usd=usd,
        model=model_of(job),
        video_seconds=int(job.request.get("parameters", {}).get("duration") or 0),
        principal=principal,
    )
    # A job that alone passes a cap can never fit: no need to ask (its condition would pass on an empty day).
    if cap is not None and usd > cap:
        outcome = ReserveOutcome.OVER_DEPLOYMENT
    elif principal_cap is not None and usd > principal_cap:
        outcome = ReserveOutcome.OVER_PRINCIPAL
    else:
        outcome = deps.budget.reserve(reservation, cap_usd=cap, principal_cap_usd=principal_cap)
    if outcome is ReserveOutcome.RESERVED:
        _announce_reached(deps, day, None, cap)
        _announce_reached(deps, day, principal, principal_cap)
    if outcome in (ReserveOutcome.RESERVED, ReserveOutcome.ALREADY):
        return JobBudget(day=day, usd=float(usd))
    if outcome is ReserveOutcome.OVER_DEPLOYMENT:
        _announce(deps, day, None, cap, FULL, reserved_at_least=None)
    else:
        _announce(deps, day, principal, principal_cap, FULL, reserved_at_least=None)
    return None


def hold(deps: Dependencies, job_id: str) -> Job | None:
    """Park a QUEUED job the cap holds beside its model's queue (`queue.reason` "budget"); None if it moved on (or
    was held already: a dispatch that saw it in the queue index a moment after it left)."""

    def held(current: Job) -> None:
        if current.status is not JobStatus.QUEUED or current.queue_reason == HELD_FOR_BUDGET:
            raise _NotQueued
        current.queue_reason = HELD_FOR_BUDGET

    try:
        return deps.jobs.update(job_id, held)
    except _NotQueued:
        return None


def release_held(deps: Dependencies, model: str) -> int:
    """Let held jobs of `model` back into its queue while today's budget has room for them (in queue order; a job
    that does not fit is passed over for one that does). The dispatch that follows reserves atomically and holds
    again whatever does not fit after all. Returns how many were let back."""
    held = deps.jobs.queued(f"{model}#{HELD_FOR_BUDGET}", limit=MAX_RELEASES_PER_PASS)
    if not held:
        return 0
    settings = deps.settings
    day = today()
    cap = settings.daily_budget_usd or None
    reserved: dict[str | None, Decimal] = {}

    def room(scope: str | None, limit: Decimal | None, usd: Decimal) -> bool:
        if limit is None:
            return True
        if scope not in reserved:
            reserved[scope] = deps.budget.usage(day, scope).reserved_usd
        return reserved[scope] + usd <= limit

    released = 0
    for job in held:
        usd = _estimate(job)
        principal = job.owner or ANONYMOUS
        principal_cap = settings.caller_budget_for(principal, job.owner_arn)
        if not (room(None, cap, usd) and room(principal, principal_cap, usd)):
            continue
        for scope in (None, principal):
            if scope in reserved:
                reserved[scope] += usd
        if _let_back(deps, job.job_id):
            released += 1
    return released


def settle(deps: Dependencies, job: Job) -> bool:
    """The job ended: a success keeps its reservation (spent), a failure or cancel gives it back, exactly once.

    Returns True when held jobs were let back into the queue (a reservation given back made room): the caller
    dispatches. Never raises: the sweeper settles a job whose reservation is still open.
    """
    spent = job.status is JobStatus.SUCCEEDED
    try:
        settled = deps.budget.settle(job.job_id, spent=spent)
        if job.budget is not None and job.budget.state is BudgetState.RESERVED:
            state = BudgetState.SPENT if spent else BudgetState.RELEASED

            def record(current: Job) -> None:
                if current.budget is not None:
                    current.budget = current.budget.model_copy(update={"state": state})

            deps.jobs.update(job.job_id, record)
        return settled is not None and not spent and release_held(deps, settled.model) > 0
    except Exception:
        logger.exception("could not settle the job's reservation; the sweeper will", extra={"job_id": job.job_id})
        return False


def needs_settling(job: Job) -> bool:
    """A job that ended with its reservation still open (its ending's settle failed): for the sweeper."""
    return job.status.is_final and job.budget is not None and job.budget.state is BudgetState.RESERVED


def queue_length(deps: Dependencies, queue_key: str) -> int:
    """How many jobs wait in one queue: a model's (`model`) or its jobs held by the cap (`model#budget`)."""
    return len(deps.jobs.queued_ranks_before(queue_key, _LAST_RANK))


def usage(deps: Dependencies, caller: Caller, day_text: str | None) -> dict[str, Any]:
    """`GET /v1/usage`: an admin sees the deployment's day, anyone else their own (and their own cap)."""
    day = _parse_day(day_text)
    settings = deps.settings
    if caller.is_admin:
        counters = deps.budget.usage(day)
        cap = _money(settings.daily_budget_usd or None)
        view: dict[str, Any] = {"date": day, "scope": "deployment", "cap_usd": cap}
        view.update(_counters(counters))
        if day == today():
            view["held_jobs"] = sum(queue_length(deps, f"{model}#{HELD_FOR_BUDGET}") for model in MODELS)
        return view
    counters = deps.budget.usage(day, caller.principal)
    view = {
        "date": day,
        "scope": "principal",
        "principal": caller.principal,
        "cap_usd": _money(settings.caller_budget_for(caller.principal, caller.arn)),
    }
    view.update(_counters(counters))
    return view


def budget_event(day: str, scope: str | None, cap: Decimal, counters: DayUsage, threshold: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "type": "budget.threshold",
        "time": rfc3339(utc_now()),
        "budget": {
            "date": day,
            "scope": scope or "deployment",
            "threshold": float(threshold),
            "cap_usd": float(cap),
            "reserved_usd": float(counters.reserved_usd),
            "spent_usd": float(counters.spent_usd),
        },
    }


class _NotQueued(Exception):
    pass


def _let_back(deps: Dependencies, job_id: str) -> bool:
    def back(current: Job) -> None:
        if current.status is not JobStatus.QUEUED or current.queue_reason != HELD_FOR_BUDGET:
            raise _NotQueued
        current.queue_reason = None

    try:
        deps.jobs.update(job_id, back)
    except _NotQueued:
        return False
    return True


def _announce_reached(deps: Dependencies, day: str, scope: str | None, cap: Decimal | None) -> None:
    """After a reservation: announce each threshold of the scope's cap that reservations have reached."""
    if cap is None:
        return
    try:
        counters = deps.budget.usage(day, scope)
    except Exception:
        logger.exception("could not read the day's budget", extra={"day": day})
        return
    for threshold in THRESHOLDS:
        at_least = cap * Decimal(threshold)
        if threshold not in counters.announced and counters.reserved_usd >= at_least:
            _announce(deps, day, scope, cap, threshold, reserved_at_least=at_least)


def _announce(
    deps: Dependencies,
    day: str,
    scope: str | None,
    cap: Decimal | None,
    threshold: str,
    *,
    reserved_at_least: Decimal | None,
) -> None:
    """Publish the threshold event once per day and scope: whoever marks the day's item publishes."""
    if cap is None:
        return
    try:
        counters = deps.budget.claim_threshold(day, scope, threshold, reserved_at_least=reserved_at_least)
        if counters is not None:
            deps.notifier.publish_budget_event(budget_event(day, scope, cap, counters, threshold))
    except Exception:
        logger.exception("could not announce a budget threshold", extra={"day": day, "threshold": threshold})


def _estimate(job: Job) -> Decimal:
    """The job's list price (the capability table's estimate); a job without a price reserves nothing."""
    return Decimal(str(job.cost_estimate_usd or 0))


def _counters(counters: DayUsage) -> dict[str, Any]:
    return {
        "reserved_usd": float(counters.reserved_usd),
        "spent_usd": float(counters.spent_usd),
        "models": {
            model: {
                "jobs": usage.jobs,
                "video_seconds": usage.video_seconds,
                "reserved_usd": float(usage.reserved_usd),
                "spent_usd": float(usage.spent_usd),
            }
            for model, usage in counters.models.items()
        },
    }


def _money(amount: Decimal | None) -> float | None:
    return float(amount) if amount is not None else None


def _parse_day(text: str | None) -> str:
    """The `date` query parameter: a UTC day from KEEP_USAGE_DAYS ago to today; default today."""
    if text is None:
        return today()
    try:
        day = date.fromisoformat(text) if _DAY.match(text) else None
    except ValueError:  # e.g. 2026-02-30
        day = None
    if day is None:
        raise InvalidRequest([FieldError("date", "must be a date as YYYY-MM-DD (UTC)")])
    current = utc_now().date()
    if day > current:
        raise InvalidRequest([FieldError("date", f"must not be after today ({current.isoformat()}, UTC)")])
    if day < current - timedelta(days=KEEP_USAGE_DAYS):
        raise InvalidRequest([FieldError("date", f"usage is kept for {KEEP_USAGE_DAYS} days")])
    return day.isoformat()
