"""The domain services the handlers call: submit, poll, finalize, fail, cancel, sweep.

Promises kept here (PRODUCT.md): bad input is refused before any money is spent; a job never gets a second
DashScope task (a create whose outcome is unknown is only ever reconciled, never repeated); a job ends with exactly
one notification; a partial video never appears in S3.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import mimetypes
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from wanflow import notify, storage, workflow
from wanflow.capabilities import IMAGE_MIME_TYPES, ModelSpec, estimate_cost_usd
from wanflow.dashscope import (
    DashScopeClient,
    TaskInfo,
    TaskStatus,
    TaskSummary,
    base_url_for_region,
    shared_client,
)
from wanflow.errors import (
    Conflict,
    FieldError,
    InvalidRequest,
    JobErrorCode,
    JobFailure,
    NotFound,
    OutcomeUnknownError,
    RejectedError,
    RetryLaterError,
    TransientError,
    WanflowError,
    job_error_for_task,
)
from wanflow.jobs import (
    TASK_VALIDITY,
    Job,
    JobStatus,
    Notification,
    Output,
    Provider,
    Source,
    Stage,
    TransitionRefused,
    derived_job_id,
    fingerprint,
    new_job_id,
    rfc3339,
    utc_now,
)
from wanflow.request import JobRequest, check_image_bytes, parse_job_request
from wanflow.settings import Settings, get_settings
from wanflow.store import JobStore

logger = logging.getLogger(__name__)

UPLOAD_CONTENT_TYPES = (*IMAGE_MIME_TYPES, "audio/wav", "audio/x-wav", "audio/mpeg", "audio/mp3")
JOB_DEADLINE = TASK_VALIDITY + timedelta(hours=1)
# A create whose Lambda died mid-call leaves the job "creating"; after this long it is treated as unknown.
STALE_CREATE = timedelta(minutes=5)
# How far after a create DashScope's task list is searched for the task it may have made.
CREATE_MATCH_WINDOW = timedelta(minutes=2)
MAX_LIST_PAGES = 20
# A finished job whose notification is still unconfirmed this long after its last change lost its publisher.
UNCONFIRMED_NOTIFICATION = timedelta(minutes=10)
UNCONFIRMED_LOOKBACK = timedelta(days=2)
LIST_ZONE_MARGIN = timedelta(hours=14)
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<payload>.*)$", re.DOTALL)


Pace = Callable[[ModelSpec], None]


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


@dataclass(frozen=True)
class PollResult:
    next: str  # "wait" | "finalize" | "fail"
    wait_seconds: int
    polls: int
    error: dict[str, Any] | None = None

    def as_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"next": self.next, "wait_seconds": self.wait_seconds, "polls": self.polls}
        if self.error is not None:
            state["error"] = self.error
        return state


class Wanflow:
    """The application: settings plus adapters, built once per Lambda container."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: JobStore | None = None,
        dashscope: Callable[[], DashScopeClient] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.store = store or JobStore(settings.jobs_table)
        self._dashscope = dashscope or self._shared_dashscope
        self._clock, self._sleep = clock, sleep

    # ---------------------------------------------------------------------------------------------- DashScope

    def _shared_dashscope(self) -> DashScopeClient:
        from aws_lambda_powertools.utilities.parameters import get_secret

        # Cached for five minutes: a rotated key is picked up without a redeploy.
        secret = get_secret(self.settings.dashscope_secret_arn, max_age=300)
        api_key = _api_key_from_secret(secret)
        base_url = self.settings.dashscope_base_url or base_url_for_region(
            self.settings.dashscope_region, self.settings.dashscope_workspace_id or None
        )
        return shared_client(base_url, api_key)

    @property
    def dashscope(self) -> DashScopeClient:
        return self._dashscope()

    # ------------------------------------------------------------------------------------------------- submit

    def submit_from_api(self, body: Any, *, idempotency_key: str | None, principal: str) -> tuple[Job, bool]:
        """Validate, store and submit a job from `POST /v1/jobs`; returns (job, created now).

        DashScope refusing or throttling the create raises its error and leaves no job behind, so that the
        caller's retry (with the same Idempotency-Key) starts clean.
        """
        job_id = derived_job_id("api", principal, idempotency_key) if idempotency_key else new_job_id()
        if idempotency_key:
            existing = self.store.get(job_id)
            if existing is not None:
                _check_same_request(existing, body)
                return existing, False
        request = self._validate(body)
        job = self._new_job(job_id, request, body, Source.API)
        if not self.store.create(job):  # a concurrent request with the same key won
            existing = self.store.get(job_id)
            if existing is None:
                raise Conflict("a request with this Idempotency-Key is being processed; retry shortly")
            _check_same_request(existing, body)
            return existing, False
        try:
            return self._submit(job, request), True
        except (RetryLaterError, RejectedError):
            self.store.delete(self.store.get(job_id) or job)
            raise

    def submit_from_s3(
        self, bucket: str, key: str, version_id: str | None, etag: str | None, *, pace: Pace | None = None
    ) -> Job | None:
        """Start the job for one uploaded object under incoming/; None for objects that are only data.

        One object version gives one job, however often S3 delivers its event. Input that can never work ends
        as a FAILED job with a notification. Throttling raises RetryLaterError: the message goes back to SQS.
        """
        job_id = derived_job_id("s3", bucket, key, version_id or etag or "")
        existing = self.store.get(job_id)
        if existing is not None:
            if existing.stage is not Stage.ACCEPTED:
                return existing  # a duplicate event
            return self._submit(existing, JobRequest.model_validate(existing.request), pace)
        origin = f"s3://{bucket}/{key}" + (f"#{version_id}" if version_id else "")
        try:
            body = self._intake_body(bucket, key, version_id)
            if body is None:
                return None
            request = self._validate(body)
        except InvalidRequest as exc:
            return self._record_rejected_intake(job_id, origin, exc)
        job = self._new_job(job_id, request, body, Source.S3, origin=origin)
        if not self.store.create(job):
            return self.store.get(job_id)
        return self._submit(job, request, pace)

    def _validate(self, body: Any) -> JobRequest:
        settings = self.settings
        request = parse_job_request(
            body,
            region=settings.dashscope_region,
            default_model=settings.default_model,
            intake_bucket=settings.intake_bucket,
        )
        self._check_s3_sources(request)
        return request

    def _check_s3_sources(self, request: JobRequest) -> None:
        """s3:// sources must exist (and an image must be one DashScope takes) before anything is paid for."""
        errors: list[FieldError] = []
        image_url = request.input.img_url
        if image_url.startswith("s3://"):
            bucket, key = storage.parse_s3_uri(image_url)
            try:
                data = storage.get_bytes(bucket, key, max_bytes=request.spec.image_max_bytes)
            except ValueError as exc:
                errors.append(FieldError("input.img_url", str(exc)))
            except Exception:
                errors.append(FieldError("input.img_url", f"{image_url} does not exist or cannot be read"))
            else:
                problem = check_image_bytes(data, request.spec)
                if problem:
                    errors.append(FieldError("input.img_url", problem))
        audio_url = request.input.audio_url
        if audio_url and audio_url.startswith("s3://"):
            bucket, key = storage.parse_s3_uri(audio_url)
            if storage.head(bucket, key) is None:
                errors.append(FieldError("input.audio_url", f"{audio_url} does not exist"))
        if errors:
            raise InvalidRequest(errors)

    def _new_job(
        self, job_id: str, request: JobRequest, body: Any, source: Source, *, origin: str | None = None
    ) -> Job:
        self._stash_data_uri_image(job_id, request)
        spec = request.spec
        parameters = request.parameters
        now = utc_now()
        return Job(
            job_id=job_id,
            source=source,
            model=request.model or spec.name,
            request=request.public_dict(),
            provider=Provider(region=self.settings.dashscope_region),
            cost_estimate_usd=estimate_cost_usd(
                spec, parameters.resolution or "", parameters.duration or 0, request.has_audio
            ),
            metadata=request.metadata,
            created_at=now,
            updated_at=now,
            request_fingerprint=fingerprint(body),
            origin=origin,
            deadline_at=now + JOB_DEADLINE,
        )

    def _stash_data_uri_image(self, job_id: str, request: JobRequest) -> None:
        """Keep a data-URI image in the intake bucket: jobs store and show its s3:// copy, never the data."""
        match = _DATA_URI.match(request.input.img_url)
        if match is None:
            return
        extension = mimetypes.guess_extension(match["mime"]) or ".img"
        key = f"uploads/{job_id}/image{extension}"
        storage.put_bytes(self.settings.intake_bucket, key, base64.b64decode(match["payload"]), match["mime"])
        request.input.img_url = f"s3://{self.settings.intake_bucket}/{key}"

    def _submit(self, job: Job, request: JobRequest, pace: Pace | None = None) -> Job:
        """Create the DashScope task for an accepted job (at most once) and start its poll loop.

        `pace` waits for this model's turn under DashScope's submit rate (or raises RetryLaterError) before
        anything is claimed.
        """
        if pace is not None:
            pace(request.spec)

        def claim(current: Job) -> None:
            current.advance(JobStatus.PENDING, Stage.CREATING)
            current.create_attempted_at = utc_now()

        try:
            job = self.store.update(job.job_id, claim)
        except TransitionRefused:
            return self.store.get(job.job_id) or job  # another delivery owns (or finished) the create
        body = request.dashscope_body(
            img_url=self._fetchable_url(request.input.img_url),
            audio_url=self._fetchable_url(request.input.audio_url) if request.input.audio_url else None,
        )
        try:
            task = self._create_task(body)
        except RetryLaterError:
            self.store.update(job.job_id, lambda current: current.advance(JobStatus.PENDING, Stage.ACCEPTED))
            raise
        except RejectedError as exc:
            if job.source is Source.API:
                raise
            return self._end_failed(job.job_id, exc.code, exc.message, exc.request_id)
        except OutcomeUnknownError:
            logger.warning("create outcome unknown; the sweeper will reconcile", extra={"job_id": job.job_id})
            return self.store.update(
                job.job_id, lambda current: current.advance(JobStatus.PENDING, Stage.CREATE_UNKNOWN)
            )
        job = self.store.update(job.job_id, lambda current: _record_created(current, task))
        self._start_polling(job)
        return job

    def _create_task(self, body: dict[str, Any]) -> TaskInfo:
        """Create the task, riding out brief throttling.

        A throttled or refused-before-sending create made no task, so repeating it is safe; DashScope's per-second
        limits usually clear within a second or two. Only when that budget is spent does the caller see the
        error (the API answers 429, the intake hands the message back to SQS). An outcome-unknown create is never
        repeated.
        """
        deadline = self._clock() + self.settings.create_retry_seconds
        delay = 0.25
        while True:
            try:
                return self.dashscope.create_task(body)
            except RetryLaterError as exc:
                wait = max(delay, exc.retry_after_seconds or 0.0) * random.uniform(1.0, 1.5)
                if self._clock() + wait > deadline:
                    raise
                self._sleep(wait)
                delay *= 2

    def _start_polling(self, job: Job) -> None:
        try:
            workflow.start_polling(self.settings.state_machine_arn, job.job_id, self.settings.poll_interval_seconds)
        except Exception:
            # The task exists and the job records it: the sweeper starts the missing execution.
            logger.exception("could not start the poll loop; the sweeper will", extra={"job_id": job.job_id})

    def _fetchable_url(self, url: str) -> str:
        """An s3:// source becomes a presigned URL DashScope can fetch; other sources pass through."""
        if not url.startswith("s3://"):
            return url
        bucket, key = storage.parse_s3_uri(url)
        return storage.presigned_get(bucket, key, self.settings.input_url_ttl_seconds)

    def _intake_body(self, bucket: str, key: str, version_id: str | None) -> dict[str, Any] | None:
        if key.lower().endswith(".json"):
            try:
                body = json.loads(storage.get_bytes(bucket, key, version_id=version_id, max_bytes=1024 * 1024))
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidRequest([FieldError("manifest", f"is not valid JSON: {exc}")]) from None
            return _resolve_manifest_paths(body, bucket, key)
        head = storage.head(bucket, key, version_id=version_id)
        metadata = (head or {}).get("Metadata", {})
        if "prompt" not in metadata:
            return None  # an image without a prompt is data for a manifest
        return _body_from_object_metadata(bucket, key, metadata)

    def _record_rejected_intake(self, job_id: str, origin: str, exc: InvalidRequest) -> Job | None:
        now = utc_now()
        job = Job(
            job_id=job_id,
            source=Source.S3,
            model=self.settings.default_model,
            request={},
            provider=Provider(region=self.settings.dashscope_region),
            created_at=now,
            updated_at=now,
            origin=origin,
        )
        if not self.store.create(job):
            return self.store.get(job_id)
        details = "; ".join(f"{error.field}: {error.message}" for error in exc.errors)
        return self._end_failed(job_id, exc.code, f"{origin} was not a valid job: {details}")

    # --------------------------------------------------------------------------------------------------- poll

    def poll(self, job_id: str, previous_polls: int) -> PollResult:
        """One status check (the state machine's CheckStatus step): record what DashScope says, decide next."""
        polls = previous_polls + 1
        job = self._require(job_id)
        if job.status.is_final:
            return PollResult("fail", 0, polls)  # canceled meanwhile: the failure step sees it is done
        if job.stage is Stage.FINALIZING:
            return PollResult("finalize", 0, polls)
        if job.provider.task_id is None:
            raise JobFailure(JobErrorCode.INTERNAL_ERROR, "the job has no DashScope task to poll")
        try:
            task = self.dashscope.get_task(job.provider.task_id)
        except RetryLaterError as exc:
            raise TransientError(f"DashScope query failed: {exc.code}") from None
        job = self.store.update(job_id, lambda current: _record_task(current, task, polls))
        if task.status is TaskStatus.SUCCEEDED:
            return PollResult("finalize", 0, polls)
        if task.status.is_terminal:
            error = job_error_for_task(task.status.value, task.code, task.message)
            outcome = "canceled" if task.status is TaskStatus.CANCELED else "failed"
            return PollResult(
                "fail",
                0,
                polls,
                {
                    "code": error.code,
                    "message": error.message,
                    "outcome": outcome,
                    "provider_request_id": task.request_id,
                },
            )
        if job.deadline_at is not None and utc_now() > job.deadline_at:
            return PollResult(
                "fail",
                0,
                polls,
                {"code": JobErrorCode.DEADLINE_EXCEEDED, "message": "the task did not finish within 25 hours"},
            )
        wait = next_poll_wait(utc_now() - job.created_at, self.settings.poll_interval_seconds)
        return PollResult("wait", wait, polls)

    # ----------------------------------------------------------------------------------------------- finalize

    def finalize(self, job_id: str) -> Job:
        """Store and verify the video, mark the job SUCCEEDED and publish its one notification.

        A repeated run (a retry, the sweeper) skips whatever an earlier run already finished.
        """
        job = self._require(job_id)
        if job.status is JobStatus.SUCCEEDED:
            return self._publish_once(job)
        if job.status.is_final:
            return job
        if job.stage is not Stage.FINALIZING:
            raise JobFailure(JobErrorCode.INTERNAL_ERROR, f"job is {job.status}/{job.stage}, not finalizing")
        if job.output is None:
            stored = self._store_video(job)
            job = self.store.update(job_id, lambda current: _record_output(current, stored))
        return self._end(job_id, lambda current: current.advance(JobStatus.SUCCEEDED, Stage.DONE))

    def _store_video(self, job: Job) -> storage.StoredObject:
        key = self._output_key(job, "mp4")
        bucket = self.settings.output_bucket
        head = storage.head(bucket, key)
        if head is not None and head.get("Metadata", {}).get("job-id") == job.job_id:
            # An earlier run stored it but died before recording it (multipart uploads appear whole or not at all).
            return storage.StoredObject(f"s3://{bucket}/{key}", head["ContentLength"], storage.sha256_of(bucket, key))
        task = self._task_for_download(job)
        return storage.copy_url_to_s3(
            task.video_url or "",
            bucket,
            key,
            content_type="video/mp4",
            metadata={"job-id": job.job_id, "model": job.model, "task-id": job.provider.task_id or ""},
        )

    def _task_for_download(self, job: Job) -> TaskInfo:
        try:
            task = self.dashscope.get_task(job.provider.task_id or "")
        except RetryLaterError as exc:
            raise TransientError(f"DashScope query failed: {exc.code}") from None
        if task.status is TaskStatus.UNKNOWN:
            raise JobFailure(JobErrorCode.VIDEO_URL_EXPIRED, "DashScope no longer knows the task; its video is gone")
        if task.status is not TaskStatus.SUCCEEDED or not task.video_url:
            raise JobFailure(JobErrorCode.INTERNAL_ERROR, f"task is {task.status}, expected SUCCEEDED with a video")
        return task

    def _output_key(self, job: Job, extension: str) -> str:
        created = job.created_at
        return f"videos/{created:%Y/%m/%d}/{job.job_id}.{extension}"

    # ---------------------------------------------------------------------------------------- fail and cancel

    def record_failure(self, job_id: str, error: dict[str, Any] | None, *, caught: dict[str, Any] | None = None) -> Job:
        """End a job that cannot succeed (the state machine's failure path); idempotent.

        `error` is what the status step decided (`{"code", "message", "outcome"}`); `caught` is a Step Functions
        Catch result (`{"Error", "Cause"}`) when a step failed for good instead.
        """
        job = self._require(job_id)
        if job.status.is_final:
            return self._publish_once(job)
        if job.stage is Stage.FINALIZING and job.output is not None:
            # The video is stored and verified; only a later step failed. Finish the success.
            return self._end(job_id, lambda current: current.advance(JobStatus.SUCCEEDED, Stage.DONE))
        if not error and caught:
            error = _error_from_caught(job, caught)
        error = error or {}
        if error.get("outcome") == "canceled":
            return self._end(job_id, lambda current: current.advance(JobStatus.CANCELED, Stage.DONE))
        return self._end_failed(
            job_id,
            str(error.get("code") or JobErrorCode.INTERNAL_ERROR),
            str(error.get("message") or "the job failed"),
            error.get("provider_request_id"),
        )

    def cancel(self, job_id: str) -> Job:
        job = self._require(job_id)
        if job.status.is_final:
            raise Conflict(f"job {job_id} already ended as {job.status.value}")
        if job.stage is Stage.ACCEPTED:
            return self._end(job_id, lambda current: current.advance(JobStatus.CANCELED, Stage.DONE))
        if job.stage is not Stage.SUBMITTED or job.status is not JobStatus.PENDING or not job.provider.task_id:
            raise Conflict(f"job {job_id} can no longer be canceled: DashScope is already working on it")
        try:
            self.dashscope.cancel_task(job.provider.task_id)
        except RejectedError as exc:
            raise Conflict(f"DashScope refused to cancel the task: {exc.message}") from None
        workflow.stop_polling(self.settings.state_machine_arn, job_id, "canceled by the user")

        def canceled(current: Job) -> None:
            current.advance(JobStatus.CANCELED, Stage.DONE)
            current.provider.task_status = TaskStatus.CANCELED.value

        return self._end(job_id, canceled)

    def _end_failed(self, job_id: str, code: str, message: str, provider_request_id: str | None = None) -> Job:
        return self._end(job_id, lambda current: current.fail(code, message, provider_request_id))

    def _end(self, job_id: str, change: Callable[[Job], None]) -> Job:
        try:
            job = self.store.update(job_id, change)
        except TransitionRefused:
            job = self._require(job_id)  # it ended some other way meanwhile
        return self._publish_once(job)

    # ------------------------------------------------------------------------------------------- notification

    def _publish_once(self, job: Job) -> Job:
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
            job = self.store.update(job.job_id, claim)
        except TransitionRefused:
            return self._require(job.job_id)
        return self._publish_claimed(job)

    def _publish_claimed(self, job: Job) -> Job:
        self._announce(job)

        def confirm(current: Job) -> None:
            current.notification = Notification.PUBLISHED

        return self.store.update(job.job_id, confirm)

    def _announce(self, job: Job) -> None:
        """The final job JSON beside the video, and the event: the two things subscribers rely on."""
        view = self.job_view(job, with_url=False)
        storage.put_json(self.settings.output_bucket, self._output_key(job, "json"), view)
        notify.publish_job_event(self.settings.topic_arn, job, view)

    # -------------------------------------------------------------------------------------------------- reads

    def get(self, job_id: str) -> dict[str, Any]:
        return self.job_view(self._require(job_id))

    def list(self, *, status: JobStatus | None, limit: int, cursor: str | None) -> dict[str, Any]:
        try:
            jobs, next_cursor = self.store.list(status=status, limit=limit, cursor=cursor)
        except ValueError as exc:
            raise InvalidRequest([FieldError("cursor", str(exc))]) from None
        return {"jobs": [self.job_view(job) for job in jobs], "next_cursor": next_cursor}

    def job_view(self, job: Job, *, with_url: bool = True) -> dict[str, Any]:
        url = None
        if with_url and job.output is not None:
            bucket, key = storage.parse_s3_uri(job.output.s3_uri)
            url = storage.presigned_get(bucket, key, self.settings.output_url_ttl_seconds)
        return job.public_view(output_url=url)

    def create_upload(self, content_type: str) -> dict[str, Any]:
        if content_type not in UPLOAD_CONTENT_TYPES:
            raise InvalidRequest([FieldError("content_type", f"must be one of {', '.join(UPLOAD_CONTENT_TYPES)}")])
        extension = mimetypes.guess_extension(content_type) or ""
        key = f"uploads/{uuid.uuid4().hex}{extension}"
        settings = self.settings
        post = storage.presigned_post(
            settings.intake_bucket, key, content_type, settings.upload_max_bytes, settings.upload_url_ttl_seconds
        )
        return {
            "url": post["url"],
            "fields": post["fields"],
            "s3_uri": f"s3://{settings.intake_bucket}/{key}",
            "expires_in": settings.upload_url_ttl_seconds,
            "max_bytes": settings.upload_max_bytes,
        }

    def _require(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        return job

    # ------------------------------------------------------------------------------------------------- sweeper

    def sweep(self) -> dict[str, int]:
        """Repair jobs that lost their way; returns counts by repair, for metrics and logs.

        One job's failure to be repaired never stops the others: it is logged, counted and tried next time.
        """
        counts: Counter[str] = Counter()
        now = utc_now()
        for job in self.store.unfinished():
            counts[self._sweep_safely(self._sweep_job, job, now)] += 1
        since = rfc3339(now - UNCONFIRMED_LOOKBACK)
        for job in self.store.finished_since(since):
            if job.notification is not Notification.PUBLISHED and now - job.updated_at > UNCONFIRMED_NOTIFICATION:
                counts[self._sweep_safely(self._publish_unconfirmed, job, now)] += 1
        counts.pop(None, None)
        return dict(counts)

    def _sweep_safely(self, repair: Callable[[Job, datetime], str | None], job: Job, now: datetime) -> str | None:
        try:
            return repair(job, now)
        except Exception:
            logger.exception("sweeper could not repair job", extra={"job_id": job.job_id})
            return "error"

    def _publish_unconfirmed(self, job: Job, now: datetime) -> str:
        """A job ended but its notification was never confirmed: its publisher died. Publish it now.

        If that process died after publishing but before confirming, subscribers see this event twice; they can
        tell by `job.job_id`. Losing the only notification would be worse.
        """
        if job.notification is Notification.CLAIMED:
            self._publish_claimed(job)
        else:
            self._publish_once(job)
        return "notification_published"

    def _sweep_job(self, job: Job, now: datetime) -> str | None:
        if job.deadline_at is not None and now > job.deadline_at and job.stage is not Stage.FINALIZING:
            self._end_failed(job.job_id, JobErrorCode.DEADLINE_EXCEEDED, "the job did not finish within 25 hours")
            return "deadline"
        if job.stage is Stage.ACCEPTED and now - job.updated_at > STALE_CREATE:
            # Nothing was ever created for it (throttled, then its retries ran out): safe to submit now.
            self._submit(job, JobRequest.model_validate(job.request))
            return "resubmitted"
        stale_create = job.stage is Stage.CREATING and now - (job.create_attempted_at or job.updated_at) > STALE_CREATE
        if job.stage is Stage.CREATE_UNKNOWN or stale_create:
            return self._reconcile_create(job, now)
        if job.stage in (Stage.SUBMITTED, Stage.FINALIZING):
            return self._revive_execution(job)
        return None

    def _revive_execution(self, job: Job) -> str | None:
        status = workflow.execution_status(self.settings.state_machine_arn, job.job_id)
        if status == "RUNNING":
            return None
        if status is None:
            self._start_polling(job)
            return "execution_started"
        # The execution ended without ending the job (it should not happen): drive the job here.
        result = self.poll(job.job_id, job.polls) if job.stage is Stage.SUBMITTED else PollResult("finalize", 0, 0)
        if result.next == "finalize":
            try:
                self.finalize(job.job_id)
            except JobFailure as failure:
                self._end_failed(job.job_id, failure.code, failure.message)
        elif result.next == "fail":
            self.record_failure(job.job_id, result.error)
        return "driven"

    def _reconcile_create(self, job: Job, now: datetime) -> str:
        """Find the task an unanswered create may have made, by model and time, using DashScope's list API."""
        attempted = job.create_attempted_at or job.created_at
        if now - attempted < timedelta(seconds=self.settings.reconcile_after_seconds):
            return "waiting"  # DashScope's list may lag a create by a little
        start, end = attempted - timedelta(minutes=1), attempted + CREATE_MATCH_WINDOW
        claimed = {
            other.provider.task_id
            for other in self.store.created_between(rfc3339(start - JOB_DEADLINE), rfc3339(now))
            if other.provider.task_id
        }
        candidates = [
            task for task in self._tasks_created_between(job.model, start, end) if task.task_id not in claimed
        ]
        if not candidates:
            self._end_failed(
                job.job_id,
                JobErrorCode.CREATE_OUTCOME_UNKNOWN,
                "the create request got no answer and DashScope has no task for it",
            )
            return "create_not_found"
        # The unclaimed task created closest to our attempt is ours; jobs reconciled later take the others.
        chosen = min(candidates, key=lambda task: abs((task.created_at or attempted) - attempted))
        task = self.dashscope.get_task(chosen.task_id)
        job = self.store.update(job.job_id, lambda current: _record_created(current, task))
        self._start_polling(job)
        return "create_found"

    def _tasks_created_between(self, model: str, start: datetime, end: datetime) -> list[TaskSummary]:
        """DashScope's tasks for `model` created in [start, end], by their exact creation time.

        The list API filters on wall-clock times in a zone DashScope does not document (the client assumes UTC+8),
        so the query is widened by LIST_ZONE_MARGIN either way and the exact `gmt_create` of each entry decides.
        """
        tasks: list[TaskSummary] = []
        for page_no in range(1, MAX_LIST_PAGES + 1):
            page = self.dashscope.list_tasks(
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


# ----------------------------------------------------------------------------------------------------- helpers


def _api_key_from_secret(secret: str | bytes | dict[str, Any]) -> str:
    if isinstance(secret, bytes):
        secret = secret.decode()
    if isinstance(secret, str) and secret.strip().startswith("{"):
        secret = json.loads(secret)
    if isinstance(secret, dict):
        secret = str(secret.get("api_key") or secret.get("DASHSCOPE_API_KEY") or "")
    key = secret.strip()
    if not key:
        raise WanflowError("the DashScope API key secret is empty; put the key in it", code="ConfigurationError")
    return key


def _error_from_caught(job: Job, caught: dict[str, Any]) -> dict[str, Any]:
    """A job error for a step that failed after its retries (the Lambda error type and message)."""
    error_type = str(caught.get("Error") or "")
    try:
        cause = json.loads(caught.get("Cause") or "{}")
    except ValueError:
        cause = {}
    detail = str(cause.get("errorMessage") or error_type or "a step of the job failed")[:500]
    if error_type == "JobFailure" and ": " in detail:
        code, message = detail.split(": ", 1)
        return {"code": code, "message": message}
    if job.stage is Stage.FINALIZING:
        return {"code": JobErrorCode.DOWNLOAD_FAILED, "message": f"the video could not be stored: {detail}"}
    return {"code": JobErrorCode.INTERNAL_ERROR, "message": detail}


def _check_same_request(existing: Job, body: Any) -> None:
    if existing.request_fingerprint != fingerprint(body):
        raise Conflict("this Idempotency-Key was already used with a different request body")


def _record_created(job: Job, task: TaskInfo) -> None:
    job.advance(JobStatus.PENDING, Stage.SUBMITTED)
    job.provider.task_id = task.task_id
    job.provider.request_id = task.request_id
    job.provider.task_status = task.status.value


def _record_task(job: Job, task: TaskInfo, polls: int) -> None:
    provider = job.provider
    provider.task_status = task.status.value
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


def _record_output(job: Job, stored: storage.StoredObject) -> None:
    if job.stage is not Stage.FINALIZING:
        raise TransitionRefused(f"job {job.job_id} is no longer finalizing")
    job.output = Output(s3_uri=stored.s3_uri, bytes=stored.bytes, sha256=stored.sha256)
    job.updated_at = utc_now()


def _resolve_manifest_paths(body: Any, bucket: str, key: str) -> Any:
    """In a manifest, img_url/audio_url may name a key relative to the manifest itself."""
    if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
        return body
    folder = key.rsplit("/", 1)[0] if "/" in key else ""
    task_input = dict(body["input"])
    for field in ("img_url", "audio_url"):
        value = task_input.get(field)
        if isinstance(value, str) and value and ":" not in value.split("/", 1)[0]:
            relative = value.lstrip("./")
            task_input[field] = f"s3://{bucket}/{folder}/{relative}" if folder else f"s3://{bucket}/{relative}"
    return {**body, "input": task_input}


_INT_PARAMETERS = ("duration", "seed")
_BOOL_PARAMETERS = ("prompt_extend", "watermark", "audio")
_STR_PARAMETERS = ("resolution", "shot_type")


def _body_from_object_metadata(bucket: str, key: str, metadata: dict[str, str]) -> dict[str, Any]:
    """The job body for an image uploaded with `prompt` (and optional parameters) as object metadata."""
    errors: list[FieldError] = []
    parameters: dict[str, Any] = {}
    for name in _INT_PARAMETERS:
        if name in metadata:
            try:
                parameters[name] = int(metadata[name])
            except ValueError:
                errors.append(FieldError(f"metadata.{name}", "must be a whole number"))
    for name in _BOOL_PARAMETERS:
        if name in metadata:
            value = metadata[name].strip().lower()
            if value not in {"true", "false"}:
                errors.append(FieldError(f"metadata.{name}", "must be true or false"))
            else:
                parameters[name] = value == "true"
    for name in _STR_PARAMETERS:
        if name in metadata:
            parameters[name] = metadata[name]
    if errors:
        raise InvalidRequest(errors)
    task_input = {"prompt": metadata["prompt"], "img_url": f"s3://{bucket}/{key}"}
    if "negative_prompt" in metadata:
        task_input["negative_prompt"] = metadata["negative_prompt"]
    body: dict[str, Any] = {"input": task_input, "parameters": parameters}
    if "model" in metadata:
        body["model"] = metadata["model"]
    return body


@functools.cache
def application() -> Wanflow:
    """The process's application, built on first use from the environment (Lambda containers keep it)."""
    return Wanflow(get_settings())


def reset_application() -> None:
    """Forget everything built from the environment (the local stack and tests call this after changing it)."""
    from wanflow.aws import reset_clients
    from wanflow.dashscope import clear_shared_clients

    application.cache_clear()
    get_settings.cache_clear()
    reset_clients()
    clear_shared_clients()
