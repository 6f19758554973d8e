"""One status query of the poll loop (the state machine's CheckStatus step), and what the loop does next."""

from __future__ import annotations

import logging
import math
import random
from datetime import timedelta

from wanflow import sealing
from wanflow.errors import JobErrorCode, RetryLaterError, ThrottledError, failure_reason_for_task
from wanflow.events import PollState, StepError
from wanflow.jobs import Job, JobStatus, Stage, utc_now
from wanflow.tasks import TaskInfo, TaskStatus
from wanflow.telemetry import QUERY
from wanflow.usecases import admission, pacing, retries, webhooks
from wanflow.usecases.context import Dependencies, require_job

logger = logging.getLogger(__name__)

# A task DashScope does not know (UNKNOWN) within this many poll intervals of its create is not yet a verdict
# that it expired: its task store may lag the create.
UNKNOWN_GRACE_POLLS = 2
# How long a poll waits in-Lambda for a turn under the query budget before the loop waits instead.
MAX_QUERY_TURN_WAIT = 3.0


def next_poll_wait(elapsed: timedelta, base_seconds: int) -> int:
    """Seconds until the next status query: the base interval (15 s) at first, backing off for long tasks.

    Keeps a task that runs until its 24-hour expiry far below Step Functions' 25,000-event history limit
    (about 520 polls, see bench/poll_budget.py) while short tasks are seen within one interval of finishing.
    """
    minutes = elapsed.total_seconds() / 60
    if minutes < 15:
        factor = 1
    elif minutes < 60:
        factor = 2
    elif minutes < 180:
        factor = 4
    else:
        factor = 20
    return base_seconds * factor


def throttled_wait(throttled: int, base_seconds: int, retry_after: float | None, cap_seconds: int = 300) -> int:
    """Seconds to wait after `throttled` queries in a row got no verdict: doubling from the base interval (at
    least 1 s), at most `cap_seconds`, at least what DashScope's Retry-After asked for."""
    wait = min(cap_seconds, max(1, base_seconds) * 2 ** min(throttled - 1, 16))
    return max(wait, math.ceil(retry_after or 0))


def check_status(deps: Dependencies, job_id: str, previous: PollState) -> PollState:
    """Record what DashScope says of the job's task and decide the next step.

    Throttling is never a failure: a query DashScope throttled, or did not answer, is asked once (a refused query
    still counts against the account) and the loop waits longer before the next one, for as long as the job has
    time. When the deployment's query budget has no turn free, the loop waits without asking. Only a verdict
    (FAILED, CANCELED, UNKNOWN) or the job's deadline sends it down the failure path.
    """
    polls = previous.polls + 1
    job = require_job(deps, job_id)
    if job.status.is_final:
        return PollState(next="fail", polls=polls)  # canceled meanwhile: the failure step sees it is done
    if job.stage is Stage.FINALIZING:
        return PollState(next="finalize", polls=polls, video=previous.video)
    if job.stage is Stage.ACCEPTED:
        return PollState(next="submit", polls=polls)  # holds its slot, not created yet: back to the create step
    if job.provider.task_id is None:
        # A create whose outcome is unknown: the sweeper reconciles it through DashScope's task list.
        return PollState(next="wait", wait_seconds=deps.settings.poll_interval_seconds, polls=polls)
    if not pacing.query_turn(deps, max_wait_seconds=MAX_QUERY_TURN_WAIT):
        return PollState(
            next="wait",
            wait_seconds=budget_wait(deps.settings.poll_interval_seconds),
            polls=polls,
            throttled=previous.throttled,
        )
    try:
        task = deps.dashscope.get_task(job.provider.task_id, attempts=1)
    except RetryLaterError as exc:
        deps.telemetry.dashscope_no_verdict(QUERY, throttled=isinstance(exc, ThrottledError))
        if job.deadline_at is not None and utc_now() > job.deadline_at:
            return _past_deadline(polls)
        throttled = previous.throttled + 1
        settings = deps.settings
        wait = throttled_wait(
            throttled, settings.poll_interval_seconds, exc.retry_after_seconds, settings.throttled_wait_cap_seconds
        )
        logger.warning(
            "DashScope query got no verdict (%s); waiting %d s", exc.code, wait, extra={"throttled": throttled}
        )
        return PollState(next="wait", wait_seconds=wait, polls=polls, throttled=throttled)
    if task.status is TaskStatus.UNKNOWN and _just_submitted(job, deps.settings.poll_interval_seconds):
        # DashScope's task store may not know a task for a moment after its create: a verdict only after that.
        return PollState(next="wait", wait_seconds=max(1, deps.settings.poll_interval_seconds), polls=polls)
    if task.status is TaskStatus.FAILED:
        retrying = retries.retry_failed_task(deps, job, task, polls)
        if retrying is not None:
            return retrying  # a new task for the same job, which keeps its running slot
    job = deps.jobs.update(job_id, lambda current: record_task(current, task, polls))
    if task.status is TaskStatus.RUNNING:
        webhooks.announce_started(deps, job)  # once per job, and only if its webhook asks for job.started
    if task.status.is_terminal:
        admission.task_ended(deps, job, succeeded=task.status is TaskStatus.SUCCEEDED)
    if task.status is TaskStatus.SUCCEEDED:
        return PollState(next="finalize", polls=polls, video=_sealed_video_url(deps, job_id, task))
    if task.status.is_terminal:
        reason = failure_reason_for_task(task.status.value, task.code, task.message)
        error = StepError(
            code=reason.code,
            message=reason.message,
            outcome="canceled" if task.status is TaskStatus.CANCELED else "failed",
            provider_request_id=task.request_id,
        )
        return PollState(next="fail", polls=polls, error=error)
    if job.deadline_at is not None and utc_now() > job.deadline_at:
        return _past_deadline(polls)
    wait = next_poll_wait(utc_now() - (job.submitted_at or job.created_at), deps.settings.poll_interval_seconds)
    return PollState(next="wait", wait_seconds=wait, polls=polls)


def _just_submitted(job: Job, poll_interval_seconds: int) -> bool:
    grace = timedelta(seconds=UNKNOWN_GRACE_POLLS * poll_interval_seconds)
    return job.submitted_at is not None and utc_now() - job.submitted_at < grace


def budget_wait(base_seconds: int) -> int:
    """Seconds to wait when the query budget had no turn: about one interval, jittered so that the polls that
    found it full spread out instead of coming back together."""
    return max(1, round(max(1, base_seconds) * random.uniform(0.5, 1.5)))


def _sealed_video_url(deps: Dependencies, job_id: str, task: TaskInfo) -> str | None:
    """The finalizer downloads what the poll saw, without querying again; sealed, because the state machine keeps
    its state in the execution history long after the URL's use. None if it cannot be sealed now (the finalizer
    then queries for it)."""
    if not task.video_url:
        return None
    try:
        return sealing.seal(deps.seal_key(), task.video_url, context=job_id)
    except Exception:
        logger.warning("could not seal the video URL; the finalizer will query for it", exc_info=True)
        return None


def _past_deadline(polls: int) -> PollState:
    error = StepError(code=JobErrorCode.DEADLINE_EXCEEDED, message="the task did not finish within 25 hours")
    return PollState(next="fail", polls=polls, error=error)


def record_task(job: Job, task: TaskInfo, polls: int) -> None:
    """What a status query learned, into the job (moving it to RUNNING or FINALIZING as the task did)."""
    provider = job.provider
    job.record_task_status(task.status.value, task.code, task.message)
    for name in ("submit_time", "scheduled_time", "end_time", "orig_prompt", "actual_prompt"):
        value = getattr(task, name)
        if value is not None:
            setattr(provider, name, value)
    job.polls = polls
    if task.status is TaskStatus.RUNNING and job.status is JobStatus.PENDING:
        job.advance(JobStatus.RUNNING, Stage.SUBMITTED)
    elif task.status is TaskStatus.SUCCEEDED:
        job.usage = task.usage or None
        job.advance(JobStatus.RUNNING, Stage.FINALIZING)
    else:
        job.updated_at = utc_now()
