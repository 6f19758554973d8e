"""The admission queue: wanflow, not DashScope, holds the jobs an account has no room for yet.

A valid job is stored QUEUED at once, whatever the load. A job is granted one of its model's running slots
(`Settings.slots_for`: the capability table's `max_running`, or the deployment's override) when one is free,
high priority first, then oldest first; only then does its execution start and create its DashScope task. A slot is
freed the moment its task ends (the poll step sees it) or its job ends, and the next queued job of that model is
granted at once, without waiting for a timer. While queued, a job costs nothing: no execution, no DashScope query.

Why it cannot go wrong twice:
- a slot is held by a job id (`RunningSlots`), so two dispatchers granting the same job hold one slot;
- the grant itself is the job's QUEUED -> PENDING transition, which the status machine allows once;
- the execution is named after the job, so it starts once; its first step creates the task at most once.
A dispatcher that dies between those steps leaves a slot held by a QUEUED job, or a granted job without an
execution: the sweeper repairs both (`repair`), and frees slots held by jobs that ended.

The spend cap (wanflow.usecases.budget) has its say at the grant: the job's list price is reserved before the grant
is recorded, so before its task can be created. A job the cap holds gives its slot back and waits beside the queue
(`queue.reason` "budget") until the sweeper lets it back in.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import Counter
from datetime import datetime
from typing import Any

from wanflow.capabilities import MODELS
from wanflow.jobs import HELD_FOR_BUDGET, Job, JobStatus, Stage, TransitionRefused, model_of, utc_now
from wanflow.tasks import TaskStatus
from wanflow.usecases import budget
from wanflow.usecases.context import Dependencies

logger = logging.getLogger(__name__)

# Until a model's first run is observed, a queued job's ETA assumes this run time (DashScope: 1 to 5 minutes).
DEFAULT_RUN_SECONDS = 180
_ENDED_TASK_STATUSES = frozenset(status.value for status in TaskStatus if status.is_terminal)
# One dispatch grants at most this many jobs: a bound on one invocation's work (the rest go on the next release).
MAX_GRANTS_PER_DISPATCH = 100
# ... and holds at most this many for the spend cap (held jobs leave the queue, so the next dispatch sees others).
MAX_HOLDS_PER_DISPATCH = 100


def admit(deps: Dependencies, job: Job) -> None:
    """Try to grant a just-queued job (and any older one) a slot now. Never raises: the sweeper catches up."""
    try:
        dispatch(deps, model_of(job), newcomer=job)
    except Exception:
        logger.exception("could not dispatch the queue; the sweeper will", extra={"job_id": job.job_id})


def admit_many(deps: Dependencies, jobs: list[Job]) -> None:
    """Try to grant many just-queued jobs (a batch's) slots now, without one dispatch per job: per model, only the
    first jobs in queue order, as many as the model has slots, can be granted now; each of them is offered as the
    dispatch's newcomer (the queue index may not show it yet). The rest wait in the queue for released slots."""
    by_model: dict[str, list[Job]] = {}
    for job in jobs:
        by_model.setdefault(model_of(job), []).append(job)
    for model, queued in by_model.items():
        for job in sorted(queued, key=lambda job: job.queue_rank)[: deps.settings.slots_for(model)]:
            admit(deps, job)


def dispatch(deps: Dependencies, model: str, *, newcomer: Job | None = None) -> int:
    """Grant free slots of `model` to its queued jobs in queue order; returns how many were granted.

    `newcomer` is a job queued a moment ago, which the queue index may not show yet.
    """
    slots = deps.settings.slots_for(model)
    granted = held = 0
    seen: set[str] = set()
    while granted < MAX_GRANTS_PER_DISPATCH and held < MAX_HOLDS_PER_DISPATCH:
        free = slots - len(deps.slots.holders(model))
        if free <= 0:
            break
        found = {job.job_id: job for job in deps.jobs.queued(model, limit=free + len(seen))}
        if newcomer is not None:
            found.setdefault(newcomer.job_id, newcomer)
        candidates = sorted((job for job in found.values() if job.job_id not in seen), key=lambda job: job.queue_rank)
        if not candidates:
            break
        progressed = False
        for candidate in candidates[:free]:
            seen.add(candidate.job_id)
            outcome = grant(deps, candidate.job_id, model, slots)
            if outcome == "full":
                return granted
            if outcome == "granted":
                granted += 1
            elif outcome == "held":
                held += 1  # its slot is free again: the next candidate may have it
                if held >= MAX_HOLDS_PER_DISPATCH:
                    return granted
            progressed = True
        if not progressed:
            break
    return granted


def grant(deps: Dependencies, job_id: str, model: str, slots: int) -> str:
    """Give one queued job a slot and start its execution: "granted", "full", "held" (by the spend cap) or
    "skipped" (no longer queued)."""
    job = deps.jobs.get(job_id)
    if job is None or job.status is not JobStatus.QUEUED:
        return "skipped"  # the index lagged: it was granted or canceled meanwhile
    if not deps.slots.claim(model, job_id, slots):
        return "full"
    return _complete_grant(deps, job_id, model, job)


def _complete_grant(deps: Dependencies, job_id: str, model: str, job: Job | None = None) -> str:
    """The job holds a slot: reserve its price, record the grant and start its execution. "granted"; "held" if the
    spend cap holds it (its slot is given back); "skipped" if it is not queued any more."""
    job = job or deps.jobs.get(job_id)
    if job is None:
        deps.slots.release(model, job_id)
        return "skipped"
    try:
        reservation = budget.reserve_for_grant(deps, job)
    except Exception:
        deps.slots.release(model, job_id)  # not granted: the slot must not wait for the sweeper
        raise
    if reservation is None:
        deps.slots.release(model, job_id)
        budget.hold(deps, job_id)
        return "held"

    def granted(current: Job) -> None:
        current.advance(JobStatus.PENDING, Stage.ACCEPTED)
        current.granted_at = utc_now()
        current.queue_reason = None
        current.budget = current.budget or reservation

    try:
        job = deps.jobs.update(job_id, granted)
    except TransitionRefused:
        current = deps.jobs.get(job_id)
        if current is None or current.status.is_final:
            deps.slots.release(model, job_id)  # canceled between our read and our grant
            if current is not None:
                budget.settle(deps, current)  # its ending may have come before our reservation: give it back
        # Otherwise another dispatcher granted it (the same slot) and starts its execution: nothing to do twice.
        return "skipped"
    start_execution(deps, job)
    return "granted"


def start_execution(deps: Dependencies, job: Job) -> None:
    try:
        deps.workflow.start_job(job.job_id)
    except Exception:
        # The job holds its slot and says so: the sweeper starts the missing execution.
        logger.exception("could not start the job's execution; the sweeper will", extra={"job_id": job.job_id})


def task_ended(deps: Dependencies, job: Job, *, succeeded: bool) -> None:
    """The job's DashScope task ended: free its slot for the next queued job (before storing the video)."""
    model = model_of(job)
    released = deps.slots.release(model, job.job_id)
    if released and succeeded and job.submitted_at is not None:
        try:
            deps.slots.record_run(model, (utc_now() - job.submitted_at).total_seconds())
        except Exception:  # only an estimate: never worth failing a poll for
            logger.warning("could not record the run time", extra={"job_id": job.job_id}, exc_info=True)
    dispatch_quietly(deps, model)


def job_ended(deps: Dependencies, job: Job) -> None:
    """The job ended (any way): its slot, if it still held one, goes to the next queued job."""
    model = model_of(job)
    try:
        released = deps.slots.release(model, job.job_id)
    except Exception:  # never in the way of an ending: the sweeper frees slots held by ended jobs
        logger.exception("could not free the job's slot; the sweeper will", extra={"job_id": job.job_id})
        return
    if released:
        dispatch_quietly(deps, model)


def dispatch_quietly(deps: Dependencies, model: str) -> None:
    try:
        dispatch(deps, model)
    except Exception:
        logger.exception("could not dispatch the queue; the sweeper will", extra={"model": model})


def queue_positions(deps: Dependencies, jobs: list[Job]) -> dict[str, dict[str, Any]]:
    """`{position, ahead, eta_seconds, reason}` of each QUEUED job in `jobs`, by job id: its place among its model's
    queued jobs, when it should get a slot if runs last as long as the model's recent ones did, and what it waits
    for: "slots", or "budget" (held by the spend cap: its place is among the held jobs, its ETA is at least the
    next UTC day, the earliest the cap lets it go unless it is raised).

    With `free` slots free and `ahead` jobs before it, a job starts at once if `ahead < free`; otherwise it waits
    for `(ahead - free) // slots + 1` rounds of runs. One read of each model's queue serves a whole page of jobs.
    """
    positions: dict[str, dict[str, Any]] = {}
    by_queue: dict[str, list[Job]] = {}
    for job in jobs:
        if job.status is JobStatus.QUEUED:
            by_queue.setdefault(job.queue_key, []).append(job)
    for queue_key, queued in by_queue.items():
        model = model_of(queued[0])
        ranks = deps.jobs.queued_ranks_before(queue_key, max(job.queue_rank for job in queued))
        slots = deps.settings.slots_for(model)
        free = max(0, slots - len(deps.slots.holders(model)))
        run_seconds = deps.slots.typical_run_seconds(model) or DEFAULT_RUN_SECONDS
        for job in queued:
            ahead = bisect.bisect_left(ranks, job.queue_rank)
            eta = 0 if ahead < free else math.ceil(((ahead - free) // slots + 1) * run_seconds)
            reason = "slots"
            if job.queue_reason == HELD_FOR_BUDGET:
                reason, eta = HELD_FOR_BUDGET, max(eta, budget.seconds_to_next_day())
            positions[job.job_id] = {"position": ahead + 1, "ahead": ahead, "eta_seconds": eta, "reason": reason}
    return positions


def repair(deps: Dependencies, now: datetime) -> dict[str, int]:
    """The sweeper's part: free slots held by jobs that ended, complete lost grants, then grant free slots."""
    counts: Counter[str] = Counter()
    for model in MODELS:
        try:
            # After midnight UTC, or once the cap was raised, held jobs that fit go back into the queue.
            released = budget.release_held(deps, model)
        except Exception:
            logger.exception("could not release jobs held for the budget", extra={"model": model})
            counts["error"] += 1
        else:
            if released:
                counts["budget_released"] += released
        for job_id in sorted(deps.slots.holders(model)):
            try:
                outcome = _repair_holder(deps, model, job_id)
            except Exception:
                logger.exception("could not repair a slot", extra={"job_id": job_id, "model": model})
                outcome = "error"
            if outcome:
                counts[outcome] += 1
        try:
            granted = dispatch(deps, model)
        except Exception:
            logger.exception("could not dispatch the queue", extra={"model": model})
            counts["error"] += 1
        else:
            if granted:
                counts["granted"] += granted
    return dict(counts)


def _repair_holder(deps: Dependencies, model: str, job_id: str) -> str | None:
    job = deps.jobs.get(job_id)
    if job is None or job.status.is_final or _task_over(job):
        deps.slots.release(model, job_id)
        return "slot_released"
    if job.status is JobStatus.QUEUED:
        # A dispatcher claimed the slot and died before recording the grant: finish it.
        outcome = _complete_grant(deps, job_id, model, job)
        return {"granted": "grant_repaired", "held": "budget_held"}.get(outcome)
    return None


def _task_over(job: Job) -> bool:
    """The job's task ended at DashScope (e.g. the video is being stored): its slot was due back already."""
    return job.stage is Stage.FINALIZING or job.provider.task_status in _ENDED_TASK_STATUSES
