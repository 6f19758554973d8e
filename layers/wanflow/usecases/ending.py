"""Every ending of a job, and its one notification. This is the only module that publishes a job's event (the spend
cap's own events are wanflow.usecases.budget's); a batch job's notification is followed by its batch's bookkeeping
(`wanflow.usecases.batch_completion`, which publishes the batch's one `batch.completed`).

A job ends exactly once (the status machine in `wanflow.jobs` refuses a second ending) and is announced exactly
once: the final job JSON beside the video, then the `wanflow.job.v1` event (docs/product.md section 4).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from wanflow.errors import JobErrorCode
from wanflow.events import CaughtError, StepError
from wanflow.jobs import Job, JobStatus, Notification, Stage, TransitionRefused, model_of
from wanflow.usecases import admission, batch_completion, budget
from wanflow.usecases.context import Dependencies, require_job
from wanflow.usecases.views import job_view, output_key


def record_failure(deps: Dependencies, job_id: str, error: StepError | None, caught: CaughtError | None = None) -> Job:
    """End a job that cannot succeed (the state machine's failure path); idempotent.

    `error` is what the status step decided; `caught` is a Step Functions Catch result when a step failed for good
    instead.
    """
    job = require_job(deps, job_id)
    if job.status.is_final:
        return publish_once(deps, job)
    if job.stage is Stage.FINALIZING and job.output is not None:
        # The video is stored and verified; only a later step failed. Finish the success.
        return end(deps, job_id, lambda current: current.advance(JobStatus.SUCCEEDED, Stage.DONE))
    if error is None and caught is not None:
        error = _error_from_caught(job, caught)
    if error is not None and error.outcome == "canceled":
        return end(deps, job_id, lambda current: current.advance(JobStatus.CANCELED, Stage.DONE))
    return end_failed(
        deps,
        job_id,
        (error.code if error else "") or JobErrorCode.INTERNAL_ERROR,
        (error.message if error else "") or "the job failed",
        error.provider_request_id if error else None,
    )


def end_failed(deps: Dependencies, job_id: str, code: str, message: str, provider_request_id: str | None = None) -> Job:
    return end(deps, job_id, lambda current: current.fail(code, message, provider_request_id))


def end(deps: Dependencies, job_id: str, change: Callable[[Job], None]) -> Job:
    """Apply an ending `change` and publish the job's notification (once, whoever ended it)."""
    try:
        job = deps.jobs.update(job_id, change)
    except TransitionRefused:
        job = require_job(deps, job_id)  # it ended some other way meanwhile
    else:
        deps.telemetry.job_ended(job)  # this write ended it: counted once per job
        # Its reservation is kept (succeeded) or given back; what that gives back may let held jobs go.
        budget_freed = budget.settle(deps, job)
        admission.job_ended(deps, job)  # a slot it still held goes to the next queued job
        if budget_freed:
            admission.dispatch_quietly(deps, model_of(job))
    return publish_once(deps, job)


def publish_once(deps: Dependencies, job: Job) -> Job:
    """Write the final job JSON and publish its event, exactly once per job.

    The claim is a conditional write: of two concurrent finishers only one publishes. A process that died
    between its claim and its confirmation leaves the claim for the sweeper, which publishes it.
    """
    if job.notification is Notification.PUBLISHED or not job.status.is_final:
        return job

    def claim(current: Job) -> None:
        if current.notification is not Notification.NONE:
            raise TransitionRefused("already claimed")
        current.notification = Notification.CLAIMED

    try:
        job = deps.jobs.update(job.job_id, claim)
    except TransitionRefused:
        return require_job(deps, job.job_id)
    return publish_claimed(deps, job)


def publish_claimed(deps: Dependencies, job: Job) -> Job:
    """Publish for a job whose notification this process (or a dead one, for the sweeper) has claimed."""
    view = job_view(deps, job, with_url=False)
    deps.objects.put_json(deps.settings.output_bucket, output_key(job, "json"), view)
    deps.notifier.publish_job_event(job, view)

    def confirm(current: Job) -> None:
        current.notification = Notification.PUBLISHED

    job = deps.jobs.update(job.job_id, confirm)
    batch_completion.job_ended(deps, job)  # a batch job: its batch's one batch.completed, after its last job's event
    return job


def _error_from_caught(job: Job, caught: CaughtError) -> StepError:
    """A job error for a step that failed after its retries (the Lambda error type and message)."""
    try:
        cause: Any = json.loads(caught.cause or "{}")
    except ValueError:
        cause = {}
    if not isinstance(cause, dict):
        cause = {}
    detail = str(cause.get("errorMessage") or caught.error or "a step of the job failed")[:500]
    if caught.error == "JobFailure" and ": " in detail:
        code, message = detail.split(": ", 1)
        return StepError(code=code, message=message)
    if job.stage is Stage.FINALIZING:
        return StepError(code=JobErrorCode.DOWNLOAD_FAILED, message=f"the video could not be stored: {detail}")
    return StepError(code=JobErrorCode.INTERNAL_ERROR, message=detail)
