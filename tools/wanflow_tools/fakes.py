"""In-memory fakes of wanflow's ports (`wanflow.ports`), for fast domain tests without moto or a network.

Each fake keeps the contract its real adapter promises, including the parts the domain relies on for safety:
the job table's version check (a stale write raises VersionConflict), conditional create, object metadata, and a
DashScope that counts every create so that tests can assert that a job never got a second task.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from wanflow.batches import Batch, Completion
from wanflow.callers import Caller
from wanflow.jobs import FINAL_STATUSES, BudgetState, Job, JobStatus, rfc3339
from wanflow.ports import (
    DayUsage,
    JobRepository,
    ModelUsage,
    Reservation,
    ReserveOutcome,
    StoredObject,
    VersionConflict,
    WebhookPorts,
    WebhookResponse,
    turn_spacing,
    turn_window,
)
from wanflow.settings import Settings
from wanflow.tasks import TaskInfo, TaskPage, TaskStatus, TaskSummary
from wanflow.usecases.context import Dependencies
from wanflow.webhooks import Delivery, DeliveryState


class InMemoryJobTable(JobRepository):
    """Jobs in a dict, stored as JSON as the real table stores them (so no shared mutable objects)."""

    def __init__(self) -> None:
        self._docs: dict[str, tuple[int, str]] = {}  # job_id -> (version, job JSON)
        self._lock = threading.RLock()  # conditional writes are atomic, as DynamoDB's are
        self.remembered_tasks: dict[str, str] = {}  # task_id -> job_id, for tasks of earlier attempts
        self.writes = 0
        # Called before each save: a test can change the stored job here to play a concurrent writer.
        self.before_save: Callable[[Job], None] | None = None

    def create(self, job: Job) -> bool:
        with self._lock:
            if job.job_id in self._docs:
                return False
            self._docs[job.job_id] = (job.version, job.model_dump_json())
            self.writes += 1
            return True

    def get(self, job_id: str) -> Job | None:
        stored = self._docs.get(job_id)
        if stored is None:
            return None
        job = Job.model_validate_json(stored[1])
        job.version = stored[0]
        return job

    def save(self, job: Job) -> Job:
        if self.before_save is not None:
            hook, self.before_save = self.before_save, None
            hook(job)
        with self._lock:
            current = self._docs.get(job.job_id)
            if current is None or current[0] != job.version:
                raise VersionConflict(job.job_id)
            job.version += 1
            self._docs[job.job_id] = (job.version, job.model_dump_json())
            self.writes += 1
            return job

    def put(self, job: Job) -> None:
        """Store `job` as it is, whatever is there (tests set up a job in a given state this way)."""
        self._docs[job.job_id] = (job.version, job.model_dump_json())

    def delete(self, job: Job) -> None:
        current = self._docs.get(job.job_id)
        if current is None or current[0] != job.version:
            raise VersionConflict(job.job_id)
        del self._docs[job.job_id]

    def all(self) -> list[Job]:
        return [job for job_id in list(self._docs) if (job := self.get(job_id)) is not None]

    def page(
        self,
        *,
        owner: str | None = None,
        status: JobStatus | None = None,
        limit: int = 20,
        start_after: dict[str, Any] | None = None,
    ) -> tuple[list[Job], dict[str, Any] | None]:
        jobs = sorted(
            (
                job
                for job in self.all()
                if (status is None or job.status is status) and (owner is None or job.owner == owner)
            ),
            key=lambda job: (job.created_at, job.job_id),
            reverse=True,
        )
        if start_after is not None:
            after = (start_after["created_at"], start_after["job_id"])
            jobs = [job for job in jobs if (_stamp(job), job.job_id) < after]
        chosen = jobs[:limit]
        if len(jobs) <= limit:
            return chosen, None
        return chosen, {"created_at": _stamp(chosen[-1]), "job_id": chosen[-1].job_id}

    def unfinished(self) -> list[Job]:
        return [job for job in self.all() if job.status in (JobStatus.PENDING, JobStatus.RUNNING)]

    def finished_since(self, since: str) -> list[Job]:
        return [job for job in self.all() if job.status in FINAL_STATUSES and _stamp(job) >= since]

    def holding_task(self, task_id: str) -> str | None:
        current = next((job.job_id for job in self.all() if job.provider.task_id == task_id), None)
        return current or self.remembered_tasks.get(task_id)

    def remember_task(self, job_id: str, task_id: str) -> None:
        self.remembered_tasks[task_id] = job_id

    def queued(self, model: str, *, limit: int) -> list[Job]:
        return self._queue(model)[:limit]

    def queued_ranks_before(self, model: str, queue_rank: str) -> list[str]:
        return [job.queue_rank for job in self._queue(model) if job.queue_rank < queue_rank]

    def batch_statuses(self, batch_id: str) -> dict[str, str]:
        return {job.job_id: job.status.value for job in self.all() if job.batch_id == batch_id}

    def _queue(self, model: str) -> list[Job]:
        queued = (job for job in self.all() if job.status is JobStatus.QUEUED and job.queue_key == model)
        return sorted(queued, key=lambda job: job.queue_rank)


def _stamp(job: Job) -> str:
    return rfc3339(job.created_at)


class InMemoryBatchTable:
    """Batch records in a dict, with the DynamoDB adapter's conditional writes (each atomic under one lock)."""

    def __init__(self) -> None:
        self._docs: dict[str, str] = {}
        self._lock = threading.RLock()
        self.ending_writes = 0  # endings actually recorded (a repeat is refused, as DynamoDB's condition does)

    def create(self, batch: Batch) -> bool:
        with self._lock:
            if batch.batch_id in self._docs:
                return False
            self._docs[batch.batch_id] = batch.model_dump_json()
            return True

    def get(self, batch_id: str) -> Batch | None:
        doc = self._docs.get(batch_id)
        return Batch.model_validate_json(doc) if doc is not None else None

    def all(self) -> list[Batch]:
        return [batch for batch_id in list(self._docs) if (batch := self.get(batch_id)) is not None]

    def put(self, batch: Batch) -> None:
        """Store `batch` as it is (tests set up a batch in a given state this way)."""
        self._docs[batch.batch_id] = batch.model_dump_json()

    def _change(self, batch_id: str, change: Callable[[Batch], bool]) -> Batch | None:
        """Apply `change` if it returns True (its condition held); the batch after, None if there is none."""
        with self._lock:
            batch = self.get(batch_id)
            if batch is None:
                return None
            if change(batch):
                self._docs[batch_id] = batch.model_dump_json()
            return batch

    def mark_jobs_stored(self, batch_id: str) -> None:
        def mark(batch: Batch) -> bool:
            batch.jobs_stored = True
            return True

        self._change(batch_id, mark)

    def record_ending(self, batch_id: str, job_id: str, status: str) -> Batch | None:
        def record(batch: Batch) -> bool:
            if job_id in batch.endings:
                return False
            batch.endings[job_id] = status
            self.ending_writes += 1
            return True

        return self._change(batch_id, record)

    def claim_completion(self, batch_id: str, *, reclaim: bool = False) -> Batch | None:
        claimed = False

        def claim(batch: Batch) -> bool:
            nonlocal claimed
            allowed = (Completion.NONE, Completion.CLAIMED) if reclaim else (Completion.NONE,)
            if batch.completion not in allowed:
                return False
            batch.completion = Completion.CLAIMED
            batch.completed_at = batch.completed_at or datetime.now(UTC)
            claimed = True
            return True

        batch = self._change(batch_id, claim)
        return batch if claimed else None

    def confirm_completion(self, batch_id: str) -> None:
        def confirm(batch: Batch) -> bool:
            batch.completion = Completion.PUBLISHED
            return True

        self._change(batch_id, confirm)

    def request_cancel(self, batch_id: str) -> None:
        def cancel(batch: Batch) -> bool:
            batch.cancel_requested_at = batch.cancel_requested_at or datetime.now(UTC)
            return True

        self._change(batch_id, cancel)

    def record_webhook_delivery(self, batch_id: str, delivery: Delivery, state: DeliveryState) -> None:
        def record(batch: Batch) -> bool:
            batch.webhook_deliveries = [*batch.webhook_deliveries, delivery]
            batch.webhook_state = state
            return True

        self._change(batch_id, record)


@dataclass
class FakeObject:
    data: bytes
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)


class InMemoryObjects:
    """Buckets in a dict. Presigned URLs are `memory://bucket/key?ttl=N`; `videos` maps a URL to its bytes."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], FakeObject] = {}
        self.videos: dict[str, bytes] = {}  # what copy_url_to_s3 can download
        self.expired_urls: set[str] = set()  # URLs that answer 403, as an expired signed URL does
        self.copies = 0

    def get_bytes(self, bucket: str, key: str, *, version_id: str | None = None, max_bytes: int | None = None) -> bytes:
        stored = self.objects.get((bucket, key))
        if stored is None:
            raise LookupError(f"s3://{bucket}/{key} does not exist")
        if max_bytes is not None and len(stored.data) > max_bytes:
            raise ValueError(f"s3://{bucket}/{key} is {len(stored.data)} bytes; at most {max_bytes}")
        return stored.data

    def head(self, bucket: str, key: str, *, version_id: str | None = None) -> dict[str, Any] | None:
        stored = self.objects.get((bucket, key))
        if stored is None:
            return None
        return {"ContentLength": len(stored.data), "ContentType": stored.content_type, "Metadata": stored.metadata}

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        self.objects[(bucket, key)] = FakeObject(data, content_type)

    def put_json(self, bucket: str, key: str, document: Any) -> None:
        self.put_bytes(bucket, key, json.dumps(document).encode(), "application/json")

    def json(self, bucket: str, key: str) -> Any:
        return json.loads(self.objects[(bucket, key)].data)

    def sha256_of(self, bucket: str, key: str) -> str:
        return hashlib.sha256(self.objects[(bucket, key)].data).hexdigest()

    def presigned_get(self, bucket: str, key: str, ttl_seconds: int, *, download_name: str | None = None) -> str:
        attachment = f"&download={download_name}" if download_name is not None else ""
        return f"memory://{bucket}/{key}?ttl={ttl_seconds}{attachment}"

    def presigned_post(
        self, bucket: str, key: str, content_type: str, max_bytes: int, ttl_seconds: int
    ) -> dict[str, Any]:
        return {"url": f"memory://{bucket}", "fields": {"key": key, "Content-Type": content_type}}

    def copy_url_to_s3(
        self, url: str, bucket: str, key: str, *, content_type: str, metadata: dict[str, str]
    ) -> StoredObject:
        if url in self.expired_urls:
            from wanflow.errors import JobErrorCode, JobFailure

            raise JobFailure(JobErrorCode.VIDEO_URL_EXPIRED, "the video URL answered HTTP 403: it expired")
        data = self.videos[url]
        self.copies += 1
        self.objects[(bucket, key)] = FakeObject(data, content_type, dict(metadata))
        return StoredObject(f"s3://{bucket}/{key}", len(data), hashlib.sha256(data).hexdigest())


class RecordingWorkflow:
    """Executions by job id, with their status; `fail_starts` makes start_job raise."""

    def __init__(self) -> None:
        self.executions: dict[str, str] = {}  # job_id -> RUNNING | SUCCEEDED | ABORTED ...
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.fail_starts = False

    def start_job(self, job_id: str) -> bool:
        if self.fail_starts:
            raise RuntimeError("Step Functions unavailable")
        if job_id in self.executions:
            return False
        self.executions[job_id] = "RUNNING"
        self.started.append(job_id)
        return True

    def execution_status(self, job_id: str) -> str | None:
        return self.executions.get(job_id)

    def stop_polling(self, job_id: str, cause: str) -> None:
        if job_id in self.executions:
            self.executions[job_id] = "ABORTED"
        self.stopped.append(job_id)


class InMemoryRunningSlots:
    """Each model's slot holders in a set, as the DynamoDB item keeps them; `claims` counts claim calls."""

    def __init__(self) -> None:
        self._holders: dict[str, set[str]] = {}
        self._runs: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self.claims = 0

    def claim(self, model: str, job_id: str, slots: int) -> bool:
        with self._lock:
            self.claims += 1
            holders = self._holders.setdefault(model, set())
            if job_id in holders or len(holders) < slots:
                holders.add(job_id)
                return True
            return False

    def release(self, model: str, job_id: str) -> bool:
        with self._lock:
            holders = self._holders.get(model, set())
            if job_id not in holders:
                return False
            holders.discard(job_id)
            return True

    def holders(self, model: str) -> set[str]:
        with self._lock:
            return set(self._holders.get(model, set()))

    def record_run(self, model: str, seconds: float) -> None:
        with self._lock:
            self._runs.setdefault(model, []).append(seconds)

    def typical_run_seconds(self, model: str) -> float | None:
        runs = self._runs.get(model, [])[-20:]
        return sum(runs) / len(runs) if runs else None


class RecordingNotifier:
    """Every published event, in order; `fail` makes publishing raise (SNS down). Budget events (which are not
    about a job) are kept apart, in `budget_events`."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.budget_events: list[dict[str, Any]] = []
        self.batch_events: list[dict[str, Any]] = []  # wanflow.batch.v1 events, apart from the jobs' own
        self.fail = False

    def publish_budget_event(self, event: dict[str, Any]) -> str:
        if self.fail:
            raise RuntimeError("SNS unavailable")
        self.budget_events.append(event)
        return f"budget-message-{len(self.budget_events)}"

    def publish_job_event(self, job: Job, job_view: dict[str, Any]) -> str:
        if self.fail:
            raise RuntimeError("SNS unavailable")
        from wanflow.adapters.notifier import job_event

        self.events.append(job_event(job, job_view))
        return f"message-{len(self.events)}"

    def publish_batch_event(self, event_type: str, batch_view: dict[str, Any]) -> str:
        if self.fail:
            raise RuntimeError("SNS unavailable")
        from wanflow.adapters.notifier import batch_event

        self.batch_events.append(batch_event(event_type, batch_view))
        return f"batch-message-{len(self.batch_events)}"

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["job"]["job_id"] == job_id]


class InMemoryBudgetLedger:
    """`wanflow.ports.BudgetLedger` in dicts, with the DynamoDB adapter's rules (both scopes or neither, each job
    reserved once, settled once); thread-safe. `reserves` counts reserve calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._days: dict[tuple[str, str | None], dict[str, Any]] = {}
        self.reservations: dict[str, tuple[Reservation, BudgetState]] = {}
        self.reserves = 0

    def reserve(
        self, reservation: Reservation, *, cap_usd: Decimal | None, principal_cap_usd: Decimal | None
    ) -> ReserveOutcome:
        r = reservation
        with self._lock:
            self.reserves += 1
            if r.job_id in self.reservations:
                return ReserveOutcome.ALREADY
            for scope, cap, refusal in (
                (None, cap_usd, ReserveOutcome.OVER_DEPLOYMENT),
                (r.principal, principal_cap_usd, ReserveOutcome.OVER_PRINCIPAL),
            ):
                if cap is not None and self._day(r.day, scope)["reserved_usd"] > cap - r.usd:
                    return refusal
            self.reservations[r.job_id] = (r, BudgetState.RESERVED)
            for scope in (None, r.principal):
                self._count(self._day(r.day, scope), r, 1)
            return ReserveOutcome.RESERVED

    def settle(self, job_id: str, *, spent: bool) -> Reservation | None:
        with self._lock:
            held = self.reservations.get(job_id)
            if held is None or held[1] is not BudgetState.RESERVED:
                return None
            r = held[0]
            self.reservations[job_id] = (r, BudgetState.SPENT if spent else BudgetState.RELEASED)
            for scope in (None, r.principal):
                day = self._day(r.day, scope)
                if spent:
                    day["spent_usd"] += r.usd
                    day["models"][r.model]["spent_usd"] += r.usd
                else:
                    self._count(day, r, -1)
            return r

    def usage(self, day: str, principal: str | None = None) -> DayUsage:
        with self._lock:
            counters = self._day(day, principal)
            return DayUsage(
                reserved_usd=counters["reserved_usd"],
                spent_usd=counters["spent_usd"],
                models={model: ModelUsage(**values) for model, values in sorted(counters["models"].items())},
                announced=frozenset(counters["announced"]),
            )

    def claim_threshold(
        self, day: str, principal: str | None, threshold: str, *, reserved_at_least: Decimal | None
    ) -> DayUsage | None:
        with self._lock:
            counters = self._day(day, principal)
            if threshold in counters["announced"]:
                return None
            if reserved_at_least is not None and counters["reserved_usd"] < reserved_at_least:
                return None
            counters["announced"].add(threshold)
        return self.usage(day, principal)

    def _day(self, day: str, scope: str | None) -> dict[str, Any]:
        return self._days.setdefault(
            (day, scope), {"reserved_usd": Decimal(0), "spent_usd": Decimal(0), "models": {}, "announced": set()}
        )

    @staticmethod
    def _count(day: dict[str, Any], r: Reservation, sign: int) -> None:
        day["reserved_usd"] += sign * r.usd
        model = day["models"].setdefault(
            r.model, {"jobs": 0, "video_seconds": 0, "reserved_usd": Decimal(0), "spent_usd": Decimal(0)}
        )
        model["jobs"] += sign
        model["video_seconds"] += sign * r.video_seconds
        model["reserved_usd"] += sign * r.usd


class InMemoryRateLimiter:
    """`wanflow.ports.RateLimiter` in a dict, with the DynamoDB adapter's rules and millisecond turns; thread-safe.

    `granted` is every turn handed out, as (key, turn time), in the order they were reserved.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._next_at: dict[str, Decimal] = {}
        self.granted: list[tuple[str, float]] = []

    def reserve(self, key: str, per_second: float, *, max_wait_seconds: float) -> float | None:
        spacing = turn_spacing(per_second)
        with self._lock:
            now_seconds = self._clock()
            now, latest = turn_window(now_seconds, max_wait_seconds)
            next_at = self._next_at.get(key)
            if next_at is None or next_at < now:
                turn = now  # idle: a turn now, never the missed ones
            elif next_at > latest:
                return None
            else:
                turn = next_at
            self._next_at[key] = turn + spacing
            self.granted.append((key, float(turn)))
        return max(0.0, float(turn) - now_seconds)


class FakeDashScope:
    """DashScope's task API in memory. Tasks change only when a test says so (`set_status`).

    `create_errors` / `get_errors` are raised (first in, first out) before the call would succeed; a create that
    raises OutcomeUnknownError after `create_then_drop` still makes its task, as a dropped answer does.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, TaskInfo] = {}
        self.created: dict[str, datetime] = {}
        self.models: dict[str, str] = {}
        self.bodies: list[dict[str, Any]] = []
        self.canceled: list[str] = []
        self.create_errors: list[Exception] = []
        self.get_errors: list[Exception] = []
        self.cancel_errors: list[Exception] = []
        self.create_then_drop: Exception | None = None
        self.queries = 0
        self.query_attempts: list[int | None] = []
        self._ids = itertools.count(1)

    @property
    def creates(self) -> int:
        """Tasks made: the number that costs money."""
        return len(self.tasks)

    def create_task(self, body: dict[str, Any]) -> TaskInfo:
        if self.create_errors:
            raise self.create_errors.pop(0)
        task = TaskInfo(task_id=f"task-{next(self._ids)}", status=TaskStatus.PENDING, request_id="req-create")
        self.tasks[task.task_id] = task
        self.created[task.task_id] = datetime.now(UTC)
        self.models[task.task_id] = str(body.get("model"))
        self.bodies.append(body)
        if self.create_then_drop is not None:
            error, self.create_then_drop = self.create_then_drop, None
            raise error
        return task

    def get_task(self, task_id: str, *, attempts: int | None = None) -> TaskInfo:
        self.queries += 1
        self.query_attempts.append(attempts)
        if self.get_errors:
            raise self.get_errors.pop(0)
        return self.tasks.get(task_id) or TaskInfo(task_id=task_id, status=TaskStatus.UNKNOWN)

    def cancel_task(self, task_id: str) -> None:
        if self.cancel_errors:
            raise self.cancel_errors.pop(0)
        self.canceled.append(task_id)
        self.set_status(task_id, TaskStatus.CANCELED)

    def list_tasks(
        self,
        *,
        start_time: datetime,
        end_time: datetime,
        model_name: str | None = None,
        status: str | None = None,
        page_no: int = 1,
        page_size: int = 10,
    ) -> TaskPage:
        summaries = tuple(
            TaskSummary(
                task_id=task.task_id,
                status=task.status.value,
                model_name=self.models[task.task_id],
                created_at=self.created[task.task_id],
            )
            for task in self.tasks.values()
            if model_name in (None, self.models[task.task_id])
        )
        chosen = summaries[(page_no - 1) * page_size : page_no * page_size]
        total_page = max(1, -(-len(summaries) // page_size))
        return TaskPage(tasks=chosen, total=len(summaries), total_page=total_page, page_no=page_no, page_size=page_size)

    def set_status(self, task_id: str, status: TaskStatus, **changes: Any) -> TaskInfo:
        task = replace(self.tasks[task_id], status=status, **changes)
        self.tasks[task_id] = task
        return task

    def succeed(self, task_id: str, video_url: str) -> TaskInfo:
        return self.set_status(
            task_id,
            TaskStatus.SUCCEEDED,
            video_url=video_url,
            end_time="2026-01-01 00:00:00.000",
            usage={"duration": 5, "video_count": 1},
        )


class RecordingWebhookQueue:
    """The webhook queue: what was sent (bodies) and which received messages were postponed, by how long."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.postponed: list[tuple[str, int]] = []

    def send(self, body: str) -> None:
        self.sent.append(body)

    def postpone(self, receipt_handle: str, seconds: int) -> None:
        self.postponed.append((receipt_handle, seconds))


@dataclass
class SentWebhook:
    url: str
    body: bytes
    headers: dict[str, str]
    allow_loopback: bool


class ScriptedWebhookSender:
    """A webhook receiver that answers from a script (status codes, or WebhookResponses), then 200; records every
    request."""

    def __init__(self) -> None:
        self.requests: list[SentWebhook] = []
        self.script: list[int | WebhookResponse] = []

    def post(self, url: str, body: bytes, headers: dict[str, str], *, allow_loopback: bool) -> WebhookResponse:
        self.requests.append(SentWebhook(url, body, dict(headers), allow_loopback))
        answer = self.script.pop(0) if self.script else 200
        return answer if isinstance(answer, WebhookResponse) else WebhookResponse(status_code=answer, duration_ms=3)


# A made-up signing secret for tests (base64 of 24 fixed bytes), never a real one.
FAKE_WEBHOOK_SECRET = "whsec_" + "d2FuZmxvdy10ZXN0LXdlYmhvb2stc2VjcmV0"


FAST_MODEL = "wan2.2-i2v-flash"


@dataclass
class RecordingTelemetry:
    """The `Telemetry` port, remembering what was counted: job ids submitted, (job id, status) ended, and
    (operation, throttled) for DashScope calls that got no verdict."""

    submitted: list[str] = field(default_factory=list)
    ended: list[tuple[str, str]] = field(default_factory=list)
    no_verdicts: list[tuple[str, bool]] = field(default_factory=list)

    def job_submitted(self, job: Job) -> None:
        self.submitted.append(job.job_id)

    def job_ended(self, job: Job) -> None:
        self.ended.append((job.job_id, job.status.value))

    def dashscope_no_verdict(self, operation: str, *, throttled: bool) -> None:
        self.no_verdicts.append((operation, throttled))


def sample_job_body(**overrides: Any) -> dict[str, Any]:
    """A valid `POST /v1/jobs` body for the fastest model, with a small inline image; `overrides` replace keys."""
    from wanflow_tools.testing import image_data_uri

    body: dict[str, Any] = {
        "model": FAST_MODEL,
        "input": {"prompt": "a lighthouse at dusk", "img_url": image_data_uri(320, 256)},
        "parameters": {"resolution": "480P", "duration": 5},
    }
    body.update(overrides)
    return body


def caller(name: str = "alice", *, admin: bool = False) -> Caller:
    """A caller with the unique id `name` (and a matching user ARN)."""
    return Caller(principal=name, arn=f"arn:aws:iam::123456789012:user/{name}", is_admin=admin)


def fake_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jobs_table": "jobs",
        "intake_bucket": "intake",
        "output_bucket": "output",
        "topic_arn": "arn:aws:sns:ap-southeast-1:123456789012:wanflow",
        "state_machine_arn": "arn:aws:states:ap-southeast-1:123456789012:stateMachine:wanflow",
        "dashscope_secret_arn": "arn:aws:secretsmanager:ap-southeast-1:123456789012:secret:dashscope",
        "poll_interval_seconds": 15,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@dataclass
class FakeWorld:
    """Every fake, wired together as `Dependencies`, with a clock (for paced turns) that only moves when something
    sleeps on it."""

    settings: Settings = field(default_factory=fake_settings)
    jobs: InMemoryJobTable = field(default_factory=InMemoryJobTable)
    objects: InMemoryObjects = field(default_factory=InMemoryObjects)
    workflow: RecordingWorkflow = field(default_factory=RecordingWorkflow)
    notifier: RecordingNotifier = field(default_factory=RecordingNotifier)
    dashscope: FakeDashScope = field(default_factory=FakeDashScope)
    slots: InMemoryRunningSlots = field(default_factory=InMemoryRunningSlots)
    budget: InMemoryBudgetLedger = field(default_factory=InMemoryBudgetLedger)
    batches: InMemoryBatchTable = field(default_factory=InMemoryBatchTable)
    webhook_queue: RecordingWebhookQueue = field(default_factory=RecordingWebhookQueue)
    webhook_sender: ScriptedWebhookSender = field(default_factory=ScriptedWebhookSender)
    webhook_secrets: list[str] = field(default_factory=lambda: [FAKE_WEBHOOK_SECRET])
    telemetry: RecordingTelemetry = field(default_factory=RecordingTelemetry)
    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)
    limiter: InMemoryRateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = InMemoryRateLimiter(clock=lambda: self.now)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def run_create_step(self, job_id: str) -> Job:
        """What the job's execution does first once granted (Step Functions' CreateTask step); the job after it."""
        from wanflow.events import PollState
        from wanflow.usecases.submit import create_task_step

        create_task_step(self.deps, job_id, PollState(next="submit"))
        job = self.jobs.get(job_id)
        assert job is not None
        return job

    def run_started_create_steps(self) -> list[Job]:
        """The create step of every execution started whose job has not been created yet."""
        from wanflow.jobs import Stage

        waiting = [job for job_id in self.workflow.started if (job := self.jobs.get(job_id)) is not None]
        return [self.run_create_step(job.job_id) for job in waiting if job.stage is Stage.ACCEPTED]

    @property
    def deps(self) -> Dependencies:
        return Dependencies(
            settings=self.settings,
            jobs=self.jobs,
            objects=self.objects,
            workflow=self.workflow,
            notifier=self.notifier,
            dashscope_client=lambda: self.dashscope,
            cursor_key=lambda: b"fake cursor key",
            slots=self.slots,
            limiter=self.limiter,
            seal_key=lambda: hashlib.sha256(b"fake seal key").digest(),
            budget=self.budget,
            batches=self.batches,
            monotonic=lambda: self.now,
            sleep=self.sleep,
            webhooks=WebhookPorts(
                queue=self.webhook_queue, sender=self.webhook_sender, secrets=lambda: list(self.webhook_secrets)
            ),
            telemetry=self.telemetry,
        )
