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
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import Counter
from datetime import datetime

from wanflow.capabilities import MODELS
from wanflow.jobs import Job, JobStatus, Stage, TransitionRefused, model_of, utc_now
from wanflow.tasks import TaskStatus
from wanflow.usecases.context import Dependencies

logger = logging.getLogger(__name__)

# Until a model's first run is observed, a queued job's ETA assumes this run time (DashScope: 1 to 5 minutes).
DEFAULT_RUN_SECONDS = 180
_ENDED_TASK_STATUSES = frozenset(status.value for status in TaskStatus if status.is_terminal)
# One dispatch grants at most this many jobs: a bound on one invocation's work (the rest go on the next release).
MAX_GRANTS_PER_DISPATCH = 100


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
    granted = 0
    seen: set[str] = set()
    while granted < MAX_GRANTS_PER_DISPATCH:
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
            progressed = True
        if not progressed:
            break
    return granted


def grant(deps: Dependencies, job_id: str, model: str, slots: int) -> str:
    """Give one queued job a slot and start its execution: "granted", "full", or "skipped" (no longer queued)."""
    job = deps.jobs.get(job_id)
    if job is None or job.status is not JobStatus.QUEUED:
        return "skipped"  # the index lagged: it was granted or canceled meanwhile
    if not deps.slots.claim(model, job_id, slots):
        return "full"
    return "granted" if _complete_grant(deps, job_id, model) else "skipped"


def _complete_grant(deps: Dependencies, job_id: str, model: str) -> bool:
    """The job holds a slot: record the grant and start its execution. False if it is not queued any more."""

    def granted(current: Job) -> None:
        current.advance(JobStatus.PENDING, Stage.ACCEPTED)
        current.granted_at = utc_now()

    try:
        job = deps.jobs.update(job_id, granted)
    except TransitionRefused:
        current = deps.jobs.get(job_id)
        if current is None or current.status.is_final:
            deps.slots.release(model, job_id)  # canceled between our read and our grant
        # Otherwise another dispatcher granted it (the same slot) and starts its execution: nothing to do twice.
        return False
    start_execution(deps, job)
    return True


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


def queue_positions(deps: Dependencies, jobs: list[Job]) -> dict[str, dict[str, int]]:
    """`{position, ahead, eta_seconds}` of each QUEUED job in `jobs`, by job id: its place among its model's queued
    jobs, and when it should get a slot if runs last as long as the model's recent ones did.

    With `free` slots free and `ahead` jobs before it, a job starts at once if `ahead < free`; otherwise it waits
    for `(ahead - free) // slots + 1` rounds of runs. One read of each model's queue serves a whole page of jobs.
    """
    positions: dict[str, dict[str, int]] = {}
    by_model: dict[str, list[Job]] = {}
    for job in jobs:
        if job.status is JobStatus.QUEUED:
            by_model.setdefault(model_of(job), []).append(job)
    for model, queued in by_model.items():
        ranks = deps.jobs.queued_ranks_before(model, max(job.queue_rank for job in queued))
        slots = deps.settings.slots_for(model)
        free = max(0, slots - len(deps.slots.holders(model)))
        run_seconds = deps.slots.typical_run_seconds(model) or DEFAULT_RUN_SECONDS
        for job in queued:
            ahead = bisect.bisect_left(ranks, job.queue_rank)
            eta = 0 if ahead < free else math.ceil(((ahead - free) // slots + 1) * run_seconds)
            positions[job.job_id] = {"position": ahead + 1, "ahead": ahead, "eta_seconds": eta}
    return positions


def repair(deps: Dependencies, now: datetime) -> dict[str, int]:
    """The sweeper's part: free slots held by jobs that ended, complete lost grants, then grant free slots."""
    counts: Counter[str] = Counter()
    for model in MODELS:
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
        return "grant_repaired" if _complete_grant(deps, job_id, model) else None
    return None


def _task_over(job: Job) -> bool:
    """The job's task ended at DashScope (e.g. the video is being stored): its slot was due back already."""
    return job.stage is Stage.FINALIZING or job.provider.task_status in _ENDED_TASK_STATUSES
