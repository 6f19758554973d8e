"""A job from `POST /v1/jobs`, and the create-at-most-once step every job's execution starts with.

Promises kept here (docs/product.md): bad input is refused before anything is stored or paid for; a valid job is
queued at once (wanflow.usecases.admission); a job never gets a second DashScope task (a create whose outcome is
unknown is only ever reconciled by the sweeper, never repeated).
"""

from __future__ import annotations

import base64
import logging
import math
import mimetypes
import re
from datetime import timedelta
from typing import Any

from wanflow.adapters.objects import parse_s3_uri
from wanflow.callers import Caller, uploads_prefix
from wanflow.capabilities import estimate_cost_usd
from wanflow.errors import (
    Conflict,
    FieldError,
    InvalidRequest,
    JobErrorCode,
    OutcomeUnknownError,
    RejectedError,
    RetryLaterError,
    ThrottledError,
)
from wanflow.events import PollState
from wanflow.jobs import (
    TASK_VALIDITY,
    Job,
    JobStatus,
    Priority,
    Provider,
    Source,
    Stage,
    TransitionRefused,
    derived_job_id,
    fingerprint,
    model_of,
    new_job_id,
    utc_now,
)
from wanflow.request import JobRequest, check_image_bytes, parse_job_request
from wanflow.tasks import TaskInfo
from wanflow.telemetry import CREATE
from wanflow.usecases import admission, ending, pacing
from wanflow.usecases.context import Dependencies, require_job
from wanflow.webhooks import JobWebhook

logger = logging.getLogger(__name__)

JOB_DEADLINE = TASK_VALIDITY + timedelta(hours=1)
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<payload>.*)$", re.DOTALL)
# How long the create step waits in-Lambda for a turn under the model's submit rate before pausing in the state
# machine instead.
MAX_CREATE_TURN_WAIT = 5.0


def submit_api_job(deps: Dependencies, body: Any, *, idempotency_key: str | None, caller: Caller) -> tuple[Job, bool]:
    """Validate a job from `POST /v1/jobs` and queue it; returns (job, queued now).

    Nothing is refused for being busy: a valid job is stored QUEUED at once and submitted to DashScope when its
    model has a free running slot (wanflow.usecases.admission). Bad input is refused before anything is stored.
    """
    job_id = derived_job_id("api", caller.arn, idempotency_key) if idempotency_key else new_job_id()
    if idempotency_key:
        existing = deps.jobs.get(job_id)
        if existing is not None:
            _check_same_request(existing, body)
            return existing, False
    request = validate(deps, body, caller)
    job = new_job(deps, job_id, request, body, Source.API, owner=caller.principal, owner_arn=caller.arn)
    if not deps.jobs.create(job):  # a concurrent request with the same key won
        existing = deps.jobs.get(job_id)
        if existing is None:
            raise Conflict("a request with this Idempotency-Key is being processed; retry shortly")
        _check_same_request(existing, body)
        return existing, False
    deps.telemetry.job_submitted(job)
    admission.admit(deps, job)
    if deps.settings.daily_budget_usd or deps.settings.caller_budgets_usd:
        # The reply shows the job as queued; if the spend cap holds it, the reply says so (`queue.reason`).
        stored = deps.jobs.get(job_id)
        if stored is not None and stored.status is JobStatus.QUEUED:
            return stored, True
    return job, True


def validate(deps: Dependencies, body: Any, caller: Caller, *, intake_upload: bool = False) -> JobRequest:
    """Every rule of the request, and that its s3:// sources are the caller's, exist and are usable.

    InvalidRequest otherwise. `intake_upload` is set for jobs an upload under incoming/ started.
    """
    settings = deps.settings
    request = parse_job_request(
        body,
        region=settings.dashscope_region,
        default_model=settings.default_model,
        intake_bucket=settings.intake_bucket,
        allow_loopback_webhooks=settings.webhook_allow_loopback,
    )
    _check_s3_sources(deps, request, caller, intake_upload)
    return request


def new_job(
    deps: Dependencies,
    job_id: str,
    request: JobRequest,
    body: Any,
    source: Source,
    *,
    owner: str,
    origin: str | None = None,
    owner_arn: str | None = None,
) -> Job:
    """The job record for a valid request (not stored yet); a data-URI image is stashed in the intake bucket."""
    _stash_data_uri_image(deps, job_id, request, owner)
    spec = request.spec
    parameters = request.parameters
    now = utc_now()
    return Job(
        job_id=job_id,
        priority=Priority(request.priority),
        source=source,
        owner=owner,
        owner_arn=owner_arn,
        model=request.model or spec.name,
        request=request.public_dict(),
        provider=Provider(region=deps.settings.dashscope_region),
        cost_estimate_usd=estimate_cost_usd(
            spec, parameters.resolution or "", parameters.duration or 0, request.has_audio
        ),
        metadata=request.metadata,
        created_at=now,
        updated_at=now,
        request_fingerprint=fingerprint(body),
        origin=origin,
        queued_at=now,
        webhook=JobWebhook(url=request.webhook.url, events=list(request.webhook.events or []))
        if request.webhook is not None
        else None,
    )


def create_task_step(deps: Dependencies, job_id: str, previous: PollState) -> PollState:
    """The execution's first step: create the DashScope task of a job that holds a running slot, at most once.

    Returns what the state machine does next: poll ("wait"), try the create again after a pause ("submit": DashScope
    throttled it, or the model's submit rate has no turn free), or end ("fail": the job ended, e.g. canceled or
    refused by DashScope, and has published its notification).
    """
    polls = previous.polls
    job = require_job(deps, job_id)
    if job.status.is_final:
        return PollState(next="fail", polls=polls)
    if job.stage is not Stage.ACCEPTED:
        # Created already (a repeated step), or a create whose outcome the sweeper reconciles: poll (or wait).
        return PollState(next="wait", wait_seconds=deps.settings.poll_interval_seconds, polls=polls)
    if job.deadline_at is not None and utc_now() > job.deadline_at:
        # A retry (wanflow.usecases.retries) that could not be created before the job's deadline: no new task.
        ending.end_failed(deps, job_id, JobErrorCode.DEADLINE_EXCEEDED, "the job did not finish within 25 hours")
        return PollState(next="fail", polls=polls)
    request = JobRequest.model_validate(job.request)
    model = model_of(job)
    if not deps.slots.claim(model, job_id, deps.settings.slots_for(model)):
        # Never a create without a slot. A granted job holds one already (claiming again is a no-op); only a job
        # accepted before the queue existed can get here without one, and waits for a free slot.
        return PollState(next="submit", wait_seconds=max(1, deps.settings.poll_interval_seconds), polls=polls)
    # Everything the create needs is ready before its turn is taken (the presigned URLs, and the client, which reads
    # the API key from Secrets Manager on a cold start): DashScope counts a request when it arrives, and the turns'
    # headroom only absorbs the moments between a turn and its request, not a round trip to another service.
    body = request.dashscope_body(
        img_url=_fetchable_url(deps, request.input.img_url),
        audio_url=_fetchable_url(deps, request.input.audio_url) if request.input.audio_url else None,
    )
    dashscope = deps.dashscope
    if not pacing.create_turn(deps, request.spec, max_wait_seconds=MAX_CREATE_TURN_WAIT):
        return PollState(next="submit", wait_seconds=1, polls=polls, throttled=previous.throttled)

    def claim(current: Job) -> None:
        current.advance(JobStatus.PENDING, Stage.CREATING)
        current.create_attempted_at = utc_now()

    try:
        job = deps.jobs.update(job_id, claim)
    except TransitionRefused:  # canceled meanwhile, or another run of this step claimed it
        return create_task_step(deps, job_id, previous)
    try:
        task = dashscope.create_task(body)
    except RetryLaterError as exc:
        deps.telemetry.dashscope_no_verdict(CREATE, throttled=isinstance(exc, ThrottledError))
        # Nothing was created: give the slot's turn back and try again after a pause that grows while it lasts.
        deps.jobs.update(job_id, lambda current: current.advance(JobStatus.PENDING, Stage.ACCEPTED))
        throttled = previous.throttled + 1
        wait = throttled_create_wait(throttled, exc.retry_after_seconds)
        logger.warning(
            "DashScope did not take the create (%s); again in %d s", exc.code, wait, extra={"job_id": job_id}
        )
        return PollState(next="submit", wait_seconds=wait, polls=polls, throttled=throttled)
    except RejectedError as exc:
        ending.end_failed(deps, job_id, exc.code, exc.message, exc.request_id)
        return PollState(next="fail", polls=polls)
    except OutcomeUnknownError:
        deps.telemetry.dashscope_no_verdict(CREATE, throttled=False)
        logger.warning("create outcome unknown; the sweeper will reconcile", extra={"job_id": job_id})
        deps.jobs.update(job_id, lambda current: current.advance(JobStatus.PENDING, Stage.CREATE_UNKNOWN))
        return PollState(next="wait", wait_seconds=deps.settings.poll_interval_seconds, polls=polls)
    deps.jobs.update(job_id, lambda current: record_created(current, task))
    return PollState(next="wait", wait_seconds=deps.settings.poll_interval_seconds, polls=polls)


def throttled_create_wait(throttled: int, retry_after: float | None) -> int:
    """Seconds before the next create after `throttled` refused ones in a row: 1, 2, 4 ... 60, or DashScope's ask."""
    return max(min(60, 2 ** min(throttled - 1, 6)), math.ceil(retry_after or 0))


def record_created(job: Job, task: TaskInfo) -> None:
    """DashScope has the job's task, a new attempt: the job's 25-hour deadline runs from its first task's create (a
    queued job has none; a retry's task keeps it, so that retries never stretch a job past it)."""
    job.advance(JobStatus.PENDING, Stage.SUBMITTED)
    job.provider.task_id = task.task_id
    job.provider.request_id = task.request_id
    now = utc_now()
    job.submitted_at = now
    job.record_task_status(task.status.value)  # adds the attempt, started now
    if job.deadline_at is None:
        job.deadline_at = now + JOB_DEADLINE


def _check_s3_sources(deps: Dependencies, request: JobRequest, caller: Caller, intake_upload: bool) -> None:
    """s3:// sources must be the caller's and exist (and an image must be one DashScope takes) before anything is
    paid for. Someone else's object gets the same answer as a missing one."""
    errors: list[FieldError] = []
    image_url = request.input.img_url
    if image_url.startswith("s3://"):
        bucket, key = parse_s3_uri(image_url)
        if not caller.may_read_input(key, intake_upload=intake_upload):
            errors.append(FieldError("input.img_url", _not_yours(image_url, caller)))
        else:
            _check_s3_image(deps, request, image_url, bucket, key, errors)
    audio_url = request.input.audio_url
    if audio_url and audio_url.startswith("s3://"):
        bucket, key = parse_s3_uri(audio_url)
        if not caller.may_read_input(key, intake_upload=intake_upload):
            errors.append(FieldError("input.audio_url", _not_yours(audio_url, caller)))
        elif deps.objects.head(bucket, key) is None:
            errors.append(FieldError("input.audio_url", f"{audio_url} does not exist"))
    if errors:
        raise InvalidRequest(errors)


def _not_yours(url: str, caller: Caller) -> str:
    return (
        f"{url} does not exist or is not yours; s3:// inputs must be your own uploads "
        f"(POST /v1/uploads, under {uploads_prefix(caller.principal)})"
    )


def _check_s3_image(
    deps: Dependencies, request: JobRequest, image_url: str, bucket: str, key: str, errors: list[FieldError]
) -> None:
    try:
        data = deps.objects.get_bytes(bucket, key, max_bytes=request.spec.image_max_bytes)
    except ValueError as exc:
        errors.append(FieldError("input.img_url", str(exc)))
    except Exception:
        errors.append(FieldError("input.img_url", f"{image_url} does not exist or cannot be read"))
    else:
        problem = check_image_bytes(data, request.spec)
        if problem:
            errors.append(FieldError("input.img_url", problem))


def _stash_data_uri_image(deps: Dependencies, job_id: str, request: JobRequest, owner: str) -> None:
    """Keep a data-URI image in the intake bucket, under the owner's prefix: jobs store and show its s3:// copy,
    never the data."""
    match = _DATA_URI.match(request.input.img_url)
    if match is None:
        return
    extension = mimetypes.guess_extension(match["mime"]) or ".img"
    key = f"{uploads_prefix(owner)}{job_id}/image{extension}"
    bucket = deps.settings.intake_bucket
    deps.objects.put_bytes(bucket, key, base64.b64decode(match["payload"]), match["mime"])
    request.input.img_url = f"s3://{bucket}/{key}"


def _fetchable_url(deps: Dependencies, url: str) -> str:
    """An s3:// source becomes a presigned URL DashScope can fetch; other sources pass through."""
    if not url.startswith("s3://"):
        return url
    bucket, key = parse_s3_uri(url)
    return deps.objects.presigned_get(bucket, key, deps.settings.input_url_ttl_seconds)


def _check_same_request(existing: Job, body: Any) -> None:
    if existing.request_fingerprint != fingerprint(body):
        raise Conflict("this Idempotency-Key was already used with a different request body")
