"""Store and verify the video, end the job SUCCEEDED, publish its one notification.

A repeated run (a Step Functions retry, the sweeper) skips whatever an earlier run already finished.
"""

from __future__ import annotations

from wanflow.errors import JobErrorCode, JobFailure, RetryLaterError, TransientError
from wanflow.events import StepError
from wanflow.jobs import Job, JobStatus, Output, Stage, TransitionRefused, utc_now
from wanflow.ports import StoredObject
from wanflow.tasks import TaskInfo, TaskStatus
from wanflow.usecases import ending
from wanflow.usecases.context import Dependencies, require_job
from wanflow.usecases.views import output_key


def finalize_job(deps: Dependencies, job_id: str) -> Job:
    """Finalize, or end the job FAILED with its precise code when nothing a retry could do would help."""
    try:
        return finalize(deps, job_id)
    except JobFailure as failure:  # an expired URL, a task DashScope no longer knows
        return ending.record_failure(deps, job_id, StepError(code=failure.code, message=failure.message))


def finalize(deps: Dependencies, job_id: str) -> Job:
    """Store the video (unless stored already) and end the job SUCCEEDED; JobFailure if it never can be."""
    job = require_job(deps, job_id)
    if job.status is JobStatus.SUCCEEDED:
        return ending.publish_once(deps, job)
    if job.status.is_final:
        return job
    if job.stage is not Stage.FINALIZING:
        raise JobFailure(JobErrorCode.INTERNAL_ERROR, f"job is {job.status}/{job.stage}, not finalizing")
    if job.output is None:
        stored = _store_video(deps, job)
        job = deps.jobs.update(job_id, lambda current: _record_output(current, stored))
    return ending.end(deps, job_id, lambda current: current.advance(JobStatus.SUCCEEDED, Stage.DONE))


def _store_video(deps: Dependencies, job: Job) -> StoredObject:
    key = output_key(job, "mp4")
    bucket = deps.settings.output_bucket
    head = deps.objects.head(bucket, key)
    if head is not None and head.get("Metadata", {}).get("job-id") == job.job_id:
        # An earlier run stored it but died before recording it (multipart uploads appear whole or not at all).
        return StoredObject(f"s3://{bucket}/{key}", head["ContentLength"], deps.objects.sha256_of(bucket, key))
    task = _task_for_download(deps, job)
    return deps.objects.copy_url_to_s3(
        task.video_url or "",
        bucket,
        key,
        content_type="video/mp4",
        metadata={"job-id": job.job_id, "model": job.model, "task-id": job.provider.task_id or ""},
    )


def _task_for_download(deps: Dependencies, job: Job) -> TaskInfo:
    try:
        task = deps.dashscope.get_task(job.provider.task_id or "")
    except RetryLaterError as exc:
        raise TransientError(f"DashScope query failed: {exc.code}") from None
    if task.status is TaskStatus.UNKNOWN:
        raise JobFailure(JobErrorCode.VIDEO_URL_EXPIRED, "DashScope no longer knows the task; its video is gone")
    if task.status is not TaskStatus.SUCCEEDED or not task.video_url:
        raise JobFailure(JobErrorCode.INTERNAL_ERROR, f"task is {task.status}, expected SUCCEEDED with a video")
    return task


def _record_output(job: Job, stored: StoredObject) -> None:
    if job.stage is not Stage.FINALIZING:
        raise TransitionRefused(f"job {job.job_id} is no longer finalizing")
    job.output = Output(s3_uri=stored.s3_uri, bytes=stored.bytes, sha256=stored.sha256)
    job.updated_at = utc_now()
