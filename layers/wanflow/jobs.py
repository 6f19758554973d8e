"""The job: its record, its public view and the status machine that every update goes through.

`status` is what users see (docs/product.md section 2): QUEUED, PENDING, RUNNING, SUCCEEDED, FAILED, CANCELED.
`stage` is wanflow's own step inside it, needed to never create a second DashScope task and never send a second
notification:

    queued -> accepted -> creating -> submitted -> finalizing -> done
                             |  \\-> accepted (DashScope throttled: nothing was created, try again later)
                             \\-> create_unknown (no answer to the create: only the sweeper decides, via the list API)
    submitted -> accepted: the task ended FAILED for DashScope's own reason and the job has attempts left
                           (`Job.retry_with_new_task`, wanflow.usecases.retries): a new task, a new attempt

A QUEUED job waits in wanflow's admission queue (wanflow.usecases.admission) for a running slot of its model;
`accepted` is a job that holds a slot and whose create has not been sent yet.

`Job.advance()` is the one place where status and stage change, and it refuses transitions the machine does not
allow, so a late or repeated event (a second finalizer run, a cancel racing a success) cannot undo an ending.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from wanflow.capabilities import find_model
from wanflow.webhooks import JobWebhook


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})


class Stage(StrEnum):
    QUEUED = "queued"  # stored and validated, waiting in the admission queue for a running slot of its model
    ACCEPTED = "accepted"  # holds a running slot; no create request in flight
    CREATING = "creating"  # a create request is (or was) in flight
    CREATE_UNKNOWN = "create_unknown"  # the create got no answer: a task may exist
    SUBMITTED = "submitted"  # DashScope has the task; the state machine polls it
    FINALIZING = "finalizing"  # the task succeeded: the video is being stored and the notification sent
    DONE = "done"  # final; the notification is published (or being published, see Job.notification)


# Which (status, stage) pairs may follow which. Same-state "transitions" are how polls record fresh provider data.
_ALLOWED: dict[tuple[JobStatus, Stage], set[tuple[JobStatus, Stage]]] = {
    (JobStatus.QUEUED, Stage.QUEUED): {
        (JobStatus.PENDING, Stage.ACCEPTED),
        (JobStatus.FAILED, Stage.DONE),
        (JobStatus.CANCELED, Stage.DONE),
    },
    (JobStatus.PENDING, Stage.ACCEPTED): {
        (JobStatus.PENDING, Stage.CREATING),
        (JobStatus.FAILED, Stage.DONE),
        (JobStatus.CANCELED, Stage.DONE),
    },
    (JobStatus.PENDING, Stage.CREATING): {
        (JobStatus.PENDING, Stage.SUBMITTED),
        (JobStatus.PENDING, Stage.ACCEPTED),
        (JobStatus.PENDING, Stage.CREATE_UNKNOWN),
        (JobStatus.FAILED, Stage.DONE),
    },
    (JobStatus.PENDING, Stage.CREATE_UNKNOWN): {
        (JobStatus.PENDING, Stage.SUBMITTED),
        (JobStatus.FAILED, Stage.DONE),
    },
    (JobStatus.PENDING, Stage.SUBMITTED): {
        (JobStatus.PENDING, Stage.ACCEPTED),  # a retry (Job.retry_with_new_task): its task ended FAILED
        (JobStatus.PENDING, Stage.SUBMITTED),
        (JobStatus.RUNNING, Stage.SUBMITTED),
        (JobStatus.RUNNING, Stage.FINALIZING),
        (JobStatus.FAILED, Stage.DONE),
        (JobStatus.CANCELED, Stage.DONE),
    },
    (JobStatus.RUNNING, Stage.SUBMITTED): {
        (JobStatus.PENDING, Stage.ACCEPTED),  # a retry (Job.retry_with_new_task): its task ended FAILED
        (JobStatus.RUNNING, Stage.SUBMITTED),
        (JobStatus.RUNNING, Stage.FINALIZING),
        (JobStatus.FAILED, Stage.DONE),
        (JobStatus.CANCELED, Stage.DONE),
    },
    (JobStatus.RUNNING, Stage.FINALIZING): {
        (JobStatus.RUNNING, Stage.FINALIZING),
        (JobStatus.SUCCEEDED, Stage.DONE),
        (JobStatus.FAILED, Stage.DONE),
    },
}


class TransitionRefused(Exception):
    """The job is not in a state where this change is allowed (usually: it already moved on)."""


class Priority(StrEnum):
    NORMAL = "normal"
    HIGH = "high"  # goes ahead of every normal job of its model in the admission queue


class Source(StrEnum):
    API = "api"
    S3 = "s3"


class Notification(StrEnum):
    NONE = "none"
    CLAIMED = "claimed"  # one process owns publishing; others must not publish
    PUBLISHED = "published"
    UNDELIVERABLE = "undeliverable"  # publishing failed too often; recorded, alarmed once, never retried


class BudgetState(StrEnum):
    RESERVED = "reserved"  # counted against its day's budget, the job not ended yet
    SPENT = "spent"  # the job succeeded: its reservation stays counted, as spent
    RELEASED = "released"  # the job failed or was canceled: its reservation was given back


class JobBudget(BaseModel):
    """The job's reservation against the spend cap (wanflow.usecases.budget): one per job, whatever its tasks."""

    day: str  # the UTC day (YYYY-MM-DD) whose budget holds it
    usd: float
    state: BudgetState = BudgetState.RESERVED


HELD_FOR_BUDGET = "budget"  # Job.queue_reason of a job the spend cap holds


class Provider(BaseModel):
    region: str
    task_id: str | None = None
    request_id: str | None = None
    task_status: str | None = None
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    orig_prompt: str | None = None
    actual_prompt: str | None = None


class Output(BaseModel):
    s3_uri: str
    bytes: int
    sha256: str
    content_type: str = "video/mp4"


class JobError(BaseModel):
    code: str
    message: str
    provider_request_id: str | None = None


class Attempt(BaseModel):
    """One DashScope task of the job: the first, or a new one after a provider-side failure (docs/product.md)."""

    task_id: str
    status: str  # the task's status as DashScope last reported it (a `TaskStatus` value)
    code: str | None = None  # DashScope's failure code, for a FAILED task
    message: str | None = None  # DashScope's failure message, for a FAILED task
    started: datetime  # DashScope accepted the task
    ended: datetime | None = None  # wanflow saw the task end (DashScope's own end_time carries no zone)

    def public_view(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "started": rfc3339(self.started),
            "ended": _optional_time(self.ended),
        }


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    return uuid.uuid4().hex


def derived_job_id(*parts: str) -> str:
    """A job id fixed by its origin (an S3 object version, an idempotency key): duplicates land on one job."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def fingerprint(body: Any) -> str:
    """Hash of a request body, to tell "same request again" from "same key, different request"."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Job(BaseModel):
    model_config = ConfigDict(validate_assignment=True)

    job_id: str
    status: JobStatus = JobStatus.QUEUED
    stage: Stage = Stage.QUEUED
    source: Source
    owner: str | None = None  # the IAM principal that created it (wanflow.callers); None for jobs from before
    model: str
    request: dict[str, Any]  # the validated request, defaults filled; a data-URI image is replaced by its s3:// copy
    provider: Provider
    usage: dict[str, Any] | None = None
    cost_estimate_usd: float | None = None
    output: Output | None = None
    error: JobError | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    batch_id: str | None = None  # the batch it was submitted in (wanflow.batches), if any
    batch_index: int | None = None  # its item's index in that batch
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    queued_at: datetime | None = None  # entered the admission queue (None for jobs from before the queue)
    submitted_at: datetime | None = None  # DashScope accepted its (current) task
    completed_at: datetime | None = None
    # Every DashScope task of the job, oldest first; more than one after provider-side failures were retried.
    attempts: list[Attempt] = Field(default_factory=list)
    # Where the job's events are delivered and the latest deliveries (wanflow.webhooks); None: no webhook.
    webhook: JobWebhook | None = None

    # wanflow's bookkeeping, never shown to users
    request_fingerprint: str = ""
    origin: str | None = None  # "s3://bucket/key#version" for intake jobs
    create_attempted_at: datetime | None = None
    granted_at: datetime | None = None  # given a running slot of its model (wanflow.usecases.admission)
    deadline_at: datetime | None = None
    polls: int = 0
    notification: Notification = Notification.NONE
    notification_attempts: int = 0  # publishes the sweeper started for this job
    owner_arn: str | None = None  # the creator's ARN, for per-caller budgets named by ARN (API jobs only)
    queue_reason: str | None = None  # HELD_FOR_BUDGET while the spend cap holds the QUEUED job; None: slots
    budget: JobBudget | None = None  # its reservation, once granted (wanflow.usecases.budget)
    version: int = 0

    def advance(self, status: JobStatus, stage: Stage) -> None:
        """Move to (status, stage), or raise TransitionRefused if the status machine does not allow it."""
        if (status, stage) not in _ALLOWED.get((self.status, self.stage), set()):
            raise TransitionRefused(f"job {self.job_id}: {self.status}/{self.stage} -> {status}/{stage} refused")
        self.status, self.stage = status, stage
        now = utc_now()
        self.updated_at = now
        if status.is_final:
            self.completed_at = now

    def can_advance(self, status: JobStatus, stage: Stage) -> bool:
        return (status, stage) in _ALLOWED.get((self.status, self.stage), set())

    def current_attempt(self) -> Attempt | None:
        """The attempt of the job's current task (one is added for a job stored before attempts were kept)."""
        task_id = self.provider.task_id
        if task_id is None:
            return None
        for attempt in reversed(self.attempts):
            if attempt.task_id == task_id:
                return attempt
        attempt = Attempt(
            task_id=task_id,
            status=self.provider.task_status or "PENDING",
            started=self.submitted_at or self.created_at,
        )
        self.attempts.append(attempt)
        return attempt

    def record_task_status(self, status: str, code: str | None = None, message: str | None = None) -> None:
        """What DashScope last said of the current task's status, in `provider` and in its attempt; an end (any
        status but PENDING and RUNNING) also dates the attempt and keeps the failure's code and message."""
        self.provider.task_status = status
        attempt = self.current_attempt()
        if attempt is None:
            return
        attempt.status = status
        if status not in ("PENDING", "RUNNING") and attempt.ended is None:
            attempt.ended = utc_now()
            attempt.code, attempt.message = code, message

    def retry_with_new_task(self) -> None:
        """Back to `accepted`, keeping its running slot, so that its execution creates a new task: only for a job
        whose current task ended FAILED (the caller has decided the failure was DashScope's, and recorded it in
        the attempt). The old task's fields are cleared; the attempt keeps them."""
        if self.provider.task_status != "FAILED" or self.current_attempt() is None:
            raise TransitionRefused(f"job {self.job_id}: only a job whose task ended FAILED is retried")
        self.advance(JobStatus.PENDING, Stage.ACCEPTED)
        self.provider = Provider(region=self.provider.region)
        self.create_attempted_at = None

    def fail(self, code: str, message: str, provider_request_id: str | None = None) -> None:
        self.advance(JobStatus.FAILED, Stage.DONE)
        self.error = JobError(code=code, message=message, provider_request_id=provider_request_id)

    @property
    def queue_rank(self) -> str:
        """Its place in its model's admission queue, as a string that sorts: high priority first, then oldest."""
        band = 0 if self.priority is Priority.HIGH else 1
        return f"{band}#{rfc3339(self.queued_at or self.created_at)}#{self.job_id}"

    @property
    def queue_key(self) -> str:
        """The queue it waits in: its model's, or (held by the spend cap) beside it, out of the way of the others."""
        model = model_of(self)
        return f"{model}#{HELD_FOR_BUDGET}" if self.queue_reason == HELD_FOR_BUDGET else model

    def public_view(
        self, output_url: str | None = None, queue: dict[str, Any] | None = None, *, reveal_webhook_url: bool = True
    ) -> dict[str, Any]:
        """The job as docs/product.md section 2 shows it; `queue` is its place in the queue while QUEUED. Events
        (`reveal_webhook_url=False`) show only the origin of the webhook URL (wanflow.webhooks.redacted_url)."""
        view: dict[str, Any] = {
            "job_id": self.job_id,
            "status": self.status.value,
            "source": self.source.value,
            "model": self.model,
            "request": {part: self.request[part] for part in ("input", "parameters") if part in self.request},
            "provider": self.provider.model_dump(exclude_none=True),
            "usage": self.usage,
            "cost_estimate_usd": self.cost_estimate_usd,
            "output": None,
            "error": self.error.model_dump(exclude_none=True) if self.error else None,
            "metadata": self.metadata,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "completed_at": rfc3339(self.completed_at) if self.completed_at else None,
            "priority": self.priority.value,
            "queue": queue if self.status is JobStatus.QUEUED else None,
            "queued_at": _optional_time(self.queued_at),
            "submitted_at": _optional_time(self.submitted_at),
            "finished_at": _optional_time(self.completed_at),
            "attempts": [attempt.public_view() for attempt in self.attempts],
            "webhook": self.webhook.public_view(reveal_url=reveal_webhook_url) if self.webhook is not None else None,
        }
        if self.batch_id is not None:
            view["batch_id"] = self.batch_id
        if self.output is not None and self.status is JobStatus.SUCCEEDED:
            view["output"] = self.output.model_dump()
            if output_url:
                view["output"]["url"] = output_url
        return view


def model_of(job: Job) -> str:
    """The canonical model name running slots and queues are kept under (an alias shares its model's)."""
    spec = find_model(job.model)
    return spec.name if spec is not None else job.model


def _optional_time(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment else None


TASK_VALIDITY = timedelta(hours=24)  # DashScope forgets task ids and video URLs after 24 hours
