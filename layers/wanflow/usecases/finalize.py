"""Store and verify the video, end the job SUCCEEDED, publish its one notification.

A repeated run (a Step Functions retry, the sweeper) skips whatever an earlier run already finished.
"""

from __future__ import annotations

import logging

from wanflow import sealing
from wanflow.errors import JobErrorCode, JobFailure, RetryLaterError, TransientError
from wanflow.events import StepError
from wanflow.jobs import Job, JobStatus, Output, Stage, TransitionRefused, utc_now
from wanflow.ports import StoredObject
from wanflow.tasks import TaskInfo, TaskStatus
from wanflow.usecases import ending, pacing
from wanflow.usecases.context import Dependencies, require_job
from wanflow.usecases.views import output_key

logger = logging.getLogger(__name__)


def finalize_job(deps: Dependencies, job_id: str, sealed_video_url: str | None = None) -> Job:
    """Finalize, or end the job FAILED with its precise code when nothing a retry could do would help.

    `sealed_video_url` is the URL the poll step saw (wanflow.sealing); without it, or when it no longer works, the
    finalizer asks DashScope for the task's URL itself.
    """
    try:
        return finalize(deps, job_id, sealed_video_url)
    except JobFailure as failure:  # an expired URL, a task DashScope no longer knows
        return ending.record_failure(deps, job_id, StepError(code=failure.code, message=failure.message))


def finalize(deps: Dependencies, job_id: str, sealed_video_url: str | None = None) -> Job:
    """Store the video (unless stored already) and end the job SUCCEEDED; JobFailure if it never can be."""
    job = require_job(deps, job_id)
    if job.status is JobStatus.SUCCEEDED:
        return ending.publish_once(deps, job)
    if job.status.is_final:
        return job
    if job.stage is not Stage.FINALIZING:
        raise JobFailure(JobErrorCode.INTERNAL_ERROR, f"job is {job.status}/{job.stage}, not finalizing")
    if job.output is None:
        stored = _store_video(deps, job, sealed_video_url)
        job = deps.jobs.update(job_id, lambda current: _record_output(current, stored))
    return ending.end(deps, job_id, lambda current: current.advance(JobStatus.SUCCEEDED, Stage.DONE))


def _store_video(deps: Dependencies, job: Job, sealed_video_url: str | None) -> StoredObject:
    key = output_key(job, "mp4")
    bucket = deps.settings.output_bucket
    head = deps.objects.head(bucket, key)
    if head is not None and head.get("Metadata", {}).get("job-id") == job.job_id:
        # An earlier run stored it but died before recording it (multipart uploads appear whole or not at all).
        return StoredObject(f"s3://{bucket}/{key}", head["ContentLength"], deps.objects.sha256_of(bucket, key))
    seen_url = _unsealed(deps, job.job_id, sealed_video_url)
    if seen_url is not None:
        try:
            return _copy(deps, job, seen_url, bucket, key)
        except JobFailure as failure:
            if failure.code != JobErrorCode.VIDEO_URL_EXPIRED:
                raise
            # DashScope may have issued a newer URL: the task itself says whether the video is really gone.
            logger.warning("the video URL the poll saw no longer works; asking DashScope", extra={"job_id": job.job_id})
    task = _task_for_download(deps, job)
    return _copy(deps, job, task.video_url or "", bucket, key)


def _copy(deps: Dependencies, job: Job, url: str, bucket: str, key: str) -> StoredObject:
    return deps.objects.copy_url_to_s3(
        url,
        bucket,
        key,
        content_type="video/mp4",
        metadata={"job-id": job.job_id, "model": job.model, "task-id": job.provider.task_id or ""},
    )


def _unsealed(deps: Dependencies, job_id: str, sealed_video_url: str | None) -> str | None:
    if not sealed_video_url:
        return None
    try:
        key = deps.seal_key()
    except Exception:  # the key cannot be read now: a missing URL is no reason to fail a paid video
        logger.warning("the seal key could not be read; asking DashScope", extra={"job_id": job_id}, exc_info=True)
        return None
    try:
        return sealing.unseal(key, sealed_video_url, context=job_id)
    except sealing.SealError:  # sealed with a key since rotated, or tampered with: the task has the URL too
        logger.warning("the sealed video URL could not be opened; asking DashScope", extra={"job_id": job_id})
        return None


def _task_for_download(deps: Dependencies, job: Job) -> TaskInfo:
    try:
        pacing.query_turn_or_retry_later(deps)
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
