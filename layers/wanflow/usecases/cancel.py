"""`POST /v1/jobs/{id}/cancel`: a job not yet at DashScope (queued, or holding a slot before its create) ends at
once without any DashScope call; a PENDING task is canceled there first."""

from __future__ import annotations

from wanflow.callers import Caller
from wanflow.errors import Conflict, RejectedError
from wanflow.jobs import Job, JobStatus, Stage
from wanflow.tasks import TaskStatus
from wanflow.usecases import ending
from wanflow.usecases.context import Dependencies, require_job


def cancel_job(deps: Dependencies, job_id: str, caller: Caller) -> Job:
    job = require_job(deps, job_id, caller)
    if job.status.is_final:
        raise Conflict(f"job {job_id} already ended as {job.status.value}")
    if job.stage in (Stage.QUEUED, Stage.ACCEPTED):
        ended = ending.end(deps, job_id, lambda current: current.advance(JobStatus.CANCELED, Stage.DONE))
        if ended.status is not JobStatus.CANCELED:
            return cancel_job(deps, job_id, caller)  # it moved on meanwhile (granted, or created): cancel it there
        if job.stage is Stage.ACCEPTED:
            # Its execution was about to create the task (its create step would see the job ended and stop).
            deps.workflow.stop_polling(job_id, "canceled by the user")
        return ended
    if job.stage is not Stage.SUBMITTED or job.status is not JobStatus.PENDING or not job.provider.task_id:
        raise Conflict(
            f"job {job_id} can no longer be canceled: its task is being created or is already running at DashScope "
            "(a job can be canceled while it is QUEUED, or while its DashScope task is PENDING)"
        )
    try:
        deps.dashscope.cancel_task(job.provider.task_id)
    except RejectedError as exc:
        raise Conflict(f"DashScope refused to cancel the task: {exc.message}") from None
    deps.workflow.stop_polling(job_id, "canceled by the user")

    def canceled(current: Job) -> None:
        current.advance(JobStatus.CANCELED, Stage.DONE)
        current.record_task_status(TaskStatus.CANCELED.value)

    return ending.end(deps, job_id, canceled)
