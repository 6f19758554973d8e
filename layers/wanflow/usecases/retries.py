"""Automatic retry of provider-side task failures (docs/product.md section 2, "attempts").

A task that DashScope itself failed (an internal error, a timeout: `wanflow.errors.is_provider_side_failure`) is
not the request's fault, and a failed task is not billed, so the job gets a new task for the same request instead of
ending: up to `Settings.provider_retries` more attempts (the `ProviderRetries` parameter; 0 turns retries off),
after a backoff. The job stays the same job: it keeps its running slot (the admission queue does not see it end),
goes back to PENDING/accepted and returns to its execution's create step, which creates the new task at most once,
exactly as for a first attempt. Each task is kept in `Job.attempts`. Only the job's end is notified, once, with the
last attempt's error if every attempt failed (wanflow.usecases.ending).
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta

from wanflow.errors import is_provider_side_failure
from wanflow.events import PollState
from wanflow.jobs import Job, Stage, TransitionRefused, utc_now
from wanflow.tasks import TaskInfo
from wanflow.usecases.context import Dependencies

logger = logging.getLogger(__name__)

# Each backoff is this many times the one before (30 s, 2 min, 8 min with the default base), at most MAX_BACKOFF.
BACKOFF_FACTOR = 4
MAX_BACKOFF = timedelta(minutes=15)
# Spread retries of jobs that failed together (a DashScope incident) so that they do not come back together.
JITTER = 0.2
# A retry is only worth it if its task has time to run before the job's deadline (tasks take 1 to 5 minutes).
MIN_TIME_LEFT = timedelta(hours=1)


def retry_wait(failed_attempts: int, base_seconds: int) -> int:
    """Seconds before the create of the next attempt after `failed_attempts` attempts failed: the base (30 s by
    default), then four times longer each time, at most 15 minutes, give or take 20% at random."""
    nominal = min(MAX_BACKOFF.total_seconds(), base_seconds * BACKOFF_FACTOR ** max(0, failed_attempts - 1))
    return max(0, round(nominal * random.uniform(1 - JITTER, 1 + JITTER)))


def retry_failed_task(deps: Dependencies, job: Job, task: TaskInfo, polls: int) -> PollState | None:
    """If `job`'s task ended FAILED for DashScope's own reason and the job may try again, record the failed attempt,
    send the job back to its create step and return that step ("submit" after the backoff). None when the failure
    ends the job as before: not provider-side, no attempts left, too close to its deadline, or it ended meanwhile.
    """
    settings = deps.settings
    if not is_provider_side_failure(task.status.value, task.code):
        return None
    attempts_made = max(1, len(job.attempts))  # a job stored before attempts were kept has made one
    if attempts_made > settings.provider_retries:
        return None
    wait = retry_wait(attempts_made, settings.provider_retry_backoff_seconds)
    if job.deadline_at is not None and utc_now() + timedelta(seconds=wait) + MIN_TIME_LEFT > job.deadline_at:
        return None
    # The failed task stays the job's for the sweeper, which must never take it for a create it reconciles.
    deps.jobs.remember_task(job.job_id, task.task_id)

    def retry(current: Job) -> None:
        if current.provider.task_id != task.task_id:
            raise TransitionRefused(f"job {current.job_id} moved on from task {task.task_id}")
        current.polls = polls
        current.record_task_status(task.status.value, task.code, task.message)
        current.retry_with_new_task()

    try:
        deps.jobs.update(job.job_id, retry)
    except TransitionRefused:
        current = deps.jobs.get(job.job_id)
        if current is not None and current.stage is Stage.ACCEPTED:
            # A repeated run of this step (a Lambda retry) got there first: same retry, same backoff.
            return PollState(next="submit", wait_seconds=wait, polls=polls)
        return None  # it ended meanwhile (canceled): the failure step sees the ending
    logger.warning(
        "DashScope failed the task (%s); a new task in %d s",
        task.code,
        wait,
        extra={"job_id": job.job_id, "task_id": task.task_id, "attempt": attempts_made + 1},
    )
    return PollState(next="submit", wait_seconds=wait, polls=polls)
