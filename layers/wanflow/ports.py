"""The interfaces the use cases talk to: the job table, object storage, the workflow engine, the notifier and
DashScope.

The use cases in `wanflow.usecases` take these as arguments (see `wanflow.usecases.context.Dependencies`), so the
same rules run against AWS in Lambda, against moto in the end-to-end tests, and against the in-memory fakes of
`wanflow_tools.fakes` in the fast domain tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Any, Protocol

from wanflow.batches import Batch
from wanflow.jobs import Job, JobStatus
from wanflow.tasks import TaskInfo, TaskPage
from wanflow.webhooks import Delivery, DeliveryState

# How often `JobRepository.update` re-reads and re-applies a change that lost a race with another writer.
MAX_WRITE_ATTEMPTS = 8


class VersionConflict(Exception):
    """Someone else changed the job between our read and our write."""


class JobRepository:
    """Where jobs live. Every change is a read-modify-write guarded by the job's `version`.

    Concurrent writers (the status poller, a cancel, a second finalizer run) never overwrite each other: the
    loser re-reads and re-applies its change, and the status machine in `Job.advance` decides whether that change
    still makes sense. Implementations provide the storage primitives; `update` is the same for all of them.
    """

    def create(self, job: Job) -> bool:
        """Store a new job; False if a job with this id already exists (a duplicate event or request)."""
        raise NotImplementedError

    def get(self, job_id: str) -> Job | None:
        raise NotImplementedError

    def save(self, job: Job) -> Job:
        """Write `job` if nobody changed it since it was read (bumping its version); VersionConflict otherwise."""
        raise NotImplementedError

    def delete(self, job: Job) -> None:
        """Remove a job that never reached DashScope, if nobody changed it since it was read."""
        raise NotImplementedError

    def page(
        self,
        *,
        owner: str | None = None,
        status: JobStatus | None = None,
        limit: int = 20,
        start_after: dict[str, Any] | None = None,
    ) -> tuple[list[Job], dict[str, Any] | None]:
        """Jobs newest first, of one owner (None: everyone's) and optionally one status.

        Returns (jobs, the key to start the next page after, or None on the last page); the key is this
        repository's own and goes back into `start_after` unchanged (wanflow.cursors signs it for the caller).
        """
        raise NotImplementedError

    def unfinished(self) -> list[Job]:
        """Every PENDING and RUNNING job, for the sweeper."""
        raise NotImplementedError

    def finished_since(self, since: str) -> list[Job]:
        """Jobs that ended (any final status) and were created at or after `since` (RFC 3339)."""
        raise NotImplementedError

    def holding_task(self, task_id: str) -> str | None:
        """The id of the job that records DashScope task `task_id` (now, or as an earlier attempt), if any."""
        raise NotImplementedError

    def remember_task(self, job_id: str, task_id: str) -> None:
        """Keep `holding_task(task_id)` answering `job_id` after the job moves on to a new task (a retry of a failed
        one, wanflow.usecases.retries): the sweeper must never take a job's old task for another create. Idempotent."""
        raise NotImplementedError

    def queued(self, model: str, *, limit: int) -> list[Job]:
        """The first `limit` QUEUED jobs of `model` (its canonical name), in queue order (`Job.queue_rank`).

        `model` is a `Job.queue_key`: `<model>#budget` lists the jobs the spend cap holds, which `<model>` does not.

        May lag a write by a moment (an index): callers re-read a job before acting on it.
        """
        raise NotImplementedError

    def queued_ranks_before(self, model: str, queue_rank: str) -> list[str]:
        """The queue ranks of `model`'s QUEUED jobs ahead of `queue_rank`, in queue order (keys only: cheap)."""
        raise NotImplementedError

    def batch_statuses(self, batch_id: str) -> dict[str, str]:
        """job id -> status of the jobs of batch `batch_id` (an index: may lag a write by a moment)."""
        raise NotImplementedError

    def update(self, job_id: str, change: Callable[[Job], None]) -> Job:
        """Apply `change` to the current job and save it, re-reading and retrying on concurrent writes.

        `change` may raise (e.g. `TransitionRefused`) to leave the job as it is.
        """
        for _ in range(MAX_WRITE_ATTEMPTS):
            job = self.get(job_id)
            if job is None:
                raise LookupError(f"job {job_id} does not exist")
            change(job)
            try:
                return self.save(job)
            except VersionConflict:
                continue
        raise VersionConflict(f"job {job_id}: too many concurrent updates")


@dataclass(frozen=True)
class StoredObject:
    """An object wanflow wrote and verified."""

    s3_uri: str
    bytes: int
    sha256: str


class ObjectStorage(Protocol):
    """S3: inputs in the intake bucket, videos and job documents in the output bucket."""

    def get_bytes(self, bucket: str, key: str, *, version_id: str | None = None, max_bytes: int | None = None) -> bytes:
        """The object's bytes; ValueError if it is larger than `max_bytes`; LookupError if there is no such object."""
        ...

    def head(self, bucket: str, key: str, *, version_id: str | None = None) -> dict[str, Any] | None:
        """The object's HEAD (ContentLength, Metadata, ...), or None if there is no such object."""
        ...

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None: ...

    def put_json(self, bucket: str, key: str, document: Any) -> None: ...

    def sha256_of(self, bucket: str, key: str) -> str: ...

    def presigned_get(self, bucket: str, key: str, ttl_seconds: int, *, download_name: str | None = None) -> str:
        """A GET URL valid `ttl_seconds`; with `download_name`, a browser saves the object under that name."""
        ...

    def presigned_post(
        self, bucket: str, key: str, content_type: str, max_bytes: int, ttl_seconds: int
    ) -> dict[str, Any]: ...

    def copy_url_to_s3(
        self, url: str, bucket: str, key: str, *, content_type: str, metadata: dict[str, str]
    ) -> StoredObject:
        """Stream `url` into the object, verified; never leaves a partial object (see adapters.video_copy)."""
        ...


class WorkflowEngine(Protocol):
    """Step Functions: one execution per job, named after the job so that it can never run twice."""

    def start_job(self, job_id: str) -> bool:
        """Start the job's execution (create its task, then poll it); False if it already has one."""
        ...

    def execution_status(self, job_id: str) -> str | None:
        """RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED; None when the job has no execution."""
        ...

    def stop_polling(self, job_id: str, cause: str) -> None: ...


class RunningSlots(Protocol):
    """Each model's running slots: the jobs that hold one (a task at DashScope, or about to be created).

    A slot is held by a job id, so granting it to the same job twice holds one slot, never two.
    """

    def claim(self, model: str, job_id: str, slots: int) -> bool:
        """Give `job_id` one of `model`'s `slots` slots; True if it holds one now (also if it already did)."""
        ...

    def release(self, model: str, job_id: str) -> bool:
        """Free `job_id`'s slot; True if it held one."""
        ...

    def holders(self, model: str) -> set[str]: ...

    def record_run(self, model: str, seconds: float) -> None:
        """Remember how long one of `model`'s tasks held its slot (for queue ETAs)."""
        ...

    def typical_run_seconds(self, model: str) -> float | None:
        """The recent average of recorded runs; None before the first."""
        ...


class Notifier(Protocol):
    """SNS: the `wanflow.job.v1` event of a finished job, the `wanflow.batch.v1` event of a completed batch, and the
    `wanflow.budget.v1` events of the spend cap."""

    def publish_job_event(self, job: Job, job_view: dict[str, Any]) -> str:
        """Publish the event; returns the message id."""
        ...

    def publish_batch_event(self, event_type: str, batch_view: dict[str, Any]) -> str:
        """Publish a `wanflow.batch.v1` event (`batch.completed`); returns the message id."""
        ...

    def publish_budget_event(self, event: dict[str, Any]) -> str:
        """Publish a `wanflow.budget.v1` event (schemas/budget-event.v1.schema.json); returns the message id."""
        ...


class Telemetry(Protocol):
    """What the domain counts for the dashboard and the alarms (metric names and dimensions: wanflow.telemetry).

    Counting never fails a use case: an implementation swallows its own errors.
    """

    def job_submitted(self, job: Job) -> None:
        """A new job was stored QUEUED (once per job)."""
        ...

    def job_ended(self, job: Job) -> None:
        """A job ended SUCCEEDED, FAILED or CANCELED (once per job, by whoever ended it)."""
        ...

    def dashscope_no_verdict(self, operation: str, *, throttled: bool) -> None:
        """A DashScope call (`operation` "create" or "query") was throttled or failed in a way worth retrying."""
        ...


class SilentTelemetry:
    """Counts nothing: where no metrics are wanted (tools, and tests that do not look at them)."""

    def job_submitted(self, job: Job) -> None:
        pass

    def job_ended(self, job: Job) -> None:
        pass

    def dashscope_no_verdict(self, operation: str, *, throttled: bool) -> None:
        pass


@dataclass(frozen=True)
class Reservation:
    """One job's list-price estimate, held against the budget of `day` (UTC), the deployment's and its owner's."""

    job_id: str
    day: str  # YYYY-MM-DD
    usd: Decimal
    model: str  # canonical name
    video_seconds: int
    principal: str


class ReserveOutcome(StrEnum):
    RESERVED = "reserved"
    ALREADY = "already"  # the job holds its reservation already (a repeated grant): nothing counted twice
    OVER_DEPLOYMENT = "over_deployment"  # it would pass the deployment's cap: nothing reserved
    OVER_PRINCIPAL = "over_principal"  # it would pass its owner's cap: nothing reserved


@dataclass(frozen=True)
class ModelUsage:
    jobs: int = 0
    video_seconds: int = 0
    reserved_usd: Decimal = Decimal(0)
    spent_usd: Decimal = Decimal(0)


@dataclass(frozen=True)
class DayUsage:
    """One day's counters of one scope (the deployment, or one principal).

    `reserved_usd` is everything the cap counts: reservations of running jobs and of succeeded ones; `spent_usd` is
    the part of it whose jobs succeeded. A failed or canceled job's reservation is subtracted from both.
    """

    reserved_usd: Decimal = Decimal(0)
    spent_usd: Decimal = Decimal(0)
    models: dict[str, ModelUsage] = field(default_factory=dict)
    announced: frozenset[str] = frozenset()  # the thresholds ("0.8", "1.0") announced for the day already


# A day's counters answer GET /v1/usage for this many days after the day.
KEEP_USAGE_DAYS = 400


class BudgetLedger(Protocol):
    """The spend cap's ledger: per UTC day, per deployment and per principal; each job reserves at most once."""

    def reserve(
        self, reservation: Reservation, *, cap_usd: Decimal | None, principal_cap_usd: Decimal | None
    ) -> ReserveOutcome:
        """Count `reservation` against its day's deployment and principal counters, both or neither, atomically,
        only while each stays within its cap (None: no cap). A job that has a reservation already gets ALREADY."""
        ...

    def settle(self, job_id: str, *, spent: bool) -> Reservation | None:
        """The job ended: keep its reservation as spent (`spent`), or give it back. Returns the reservation this
        call settled; None if the job has none, or it was settled already (each is settled exactly once)."""
        ...

    def usage(self, day: str, principal: str | None = None) -> DayUsage:
        """The counters of `day`: the deployment's, or `principal`'s."""
        ...

    def claim_threshold(
        self, day: str, principal: str | None, threshold: str, *, reserved_at_least: Decimal | None
    ) -> DayUsage | None:
        """Mark `threshold` ("0.8", "1.0") as announced for the day's scope, once: only if it was not marked yet and
        (unless `reserved_at_least` is None) the scope's reserved USD has reached that amount. Returns the day's
        counters when this call marked it, None otherwise."""
        ...


class BatchRepository(Protocol):
    """Where batch records live (`wanflow.batches.Batch`). Each change after creation is one conditional write of
    one attribute, so concurrent writers (1,000 jobs ending at once) never need to re-read and retry."""

    def create(self, batch: Batch) -> bool:
        """Store a new batch; False if one with this id exists (a retried submission)."""
        ...

    def get(self, batch_id: str) -> Batch | None: ...

    def mark_jobs_stored(self, batch_id: str) -> None: ...

    def record_ending(self, batch_id: str, job_id: str, status: str) -> Batch | None:
        """Record that job `job_id` ended as `status`, once (a repeat changes nothing); the batch after the write,
        None if there is no such batch."""
        ...

    def claim_completion(self, batch_id: str, *, reclaim: bool = False) -> Batch | None:
        """Claim the publishing of `batch.completed`: the batch if this caller claimed it (NONE -> CLAIMED, or
        with `reclaim` an existing CLAIMED one, for the sweeper), None if someone else did or it is published."""
        ...

    def confirm_completion(self, batch_id: str) -> None:
        """`batch.completed` is published."""
        ...

    def request_cancel(self, batch_id: str) -> None: ...

    def record_webhook_delivery(self, batch_id: str, delivery: Delivery, state: DeliveryState) -> None:
        """Keep an attempt to deliver the batch's `batch.completed` to its webhook, and the state after it."""
        ...


class DashScopeApi(Protocol):
    """The four DashScope task operations wanflow uses (`wanflow.dashscope.DashScopeClient` in production)."""

    def create_task(self, body: dict[str, Any]) -> TaskInfo: ...

    def get_task(self, task_id: str, *, attempts: int | None = None) -> TaskInfo:
        """The task; `attempts` limits this call's own retries (None: the client's default)."""
        ...

    def cancel_task(self, task_id: str) -> None: ...

    def list_tasks(
        self,
        *,
        start_time: datetime,
        end_time: datetime,
        model_name: str | None = None,
        status: str | None = None,
        page_no: int = 1,
        page_size: int = 10,
    ) -> TaskPage: ...


class RateLimiter(Protocol):
    """Turns shared by every invocation of a deployment, e.g. its DashScope queries (15/s) or a model's creates.

    A turn is a point in time; turns of one key are at least 1/per_second apart, so any one-second window holds
    at most per_second of them, rounded up (what DashScope's, and the emulator's, sliding-window limiter counts).
    Idle time earns no burst: a key that was idle gets its next turn now, not a backlog of missed ones.
    """

    def reserve(self, key: str, per_second: float, *, max_wait_seconds: float) -> float | None:
        """Reserve the next turn for `key` at `per_second` turns per second. Returns the seconds to wait before
        using it (0.0: now), or None when the next free turn is more than `max_wait_seconds` away (then nothing is
        reserved)."""
        ...


MILLISECOND = Decimal("0.001")


def turn_spacing(per_second: float) -> Decimal:
    """Seconds between two turns at `per_second`, in whole milliseconds (how turns are stored), rounded UP.

    Rounding down would break the limit: 1/15 s as 0.066 s fits 16 turns into 0.99 s, and the 16th is refused.
    """
    if not per_second > 0:
        raise ValueError(f"per_second must be positive, not {per_second}")
    # Through str: Decimal(0.05) is 0.05000000000000000277..., which would round up to 0.051.
    return max(MILLISECOND, (1 / Decimal(str(per_second))).quantize(MILLISECOND, rounding=ROUND_CEILING))


def turn_window(now_seconds: float, max_wait_seconds: float) -> tuple[Decimal, Decimal]:
    """(earliest, latest) turn for a caller at `now_seconds` (unix time) who waits up to `max_wait_seconds`.

    The earliest is the clock rounded UP to a millisecond, so that a turn is never before the moment its caller
    uses it: rounded down, a turn at 0.000 used at 0.0004 and the turn 1.000 later (at 20/s) would be 0.9996 s
    apart, one too many in a second. The latest is rounded down, so a wait never exceeds `max_wait_seconds`.
    """
    now = Decimal(str(now_seconds))  # through str: the sum below is exact, unlike float addition
    latest = now + Decimal(str(max_wait_seconds))
    return now.quantize(MILLISECOND, rounding=ROUND_CEILING), latest.quantize(MILLISECOND, rounding=ROUND_FLOOR)


class WebhookQueue(Protocol):
    """SQS: one message per webhook delivery (the body is the `wanflow.job.v1` event, exactly as delivered)."""

    def send(self, body: str) -> None:
        """Queue a delivery of the event `body` (job.started and redeliveries; SNS queues the endings itself)."""
        ...

    def postpone(self, receipt_handle: str, seconds: int) -> None:
        """Make a received delivery visible again only after `seconds` (its next attempt)."""
        ...


@dataclass(frozen=True)
class WebhookResponse:
    """What one attempt got: a status code (any, 3xx included: redirects are not followed) or an error."""

    status_code: int | None
    duration_ms: int
    error: str | None = None
    body: str = ""  # the start of the answer, at most wanflow.webhooks.RESPONSE_BODY_MAX_BYTES

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender(Protocol):
    """HTTP: one POST to a webhook target, to a checked address only (wanflow.adapters.webhook_http)."""

    def post(self, url: str, body: bytes, headers: dict[str, str], *, allow_loopback: bool) -> WebhookResponse: ...


@dataclass(frozen=True)
class WebhookPorts:
    """What webhook deliveries need: the delivery queue, the HTTP sender and the signing secrets (a factory: the
    real one reads Secrets Manager, cached and rotation-aware; every listed secret signs)."""

    queue: WebhookQueue
    sender: WebhookSender
    secrets: Callable[[], list[str]]
