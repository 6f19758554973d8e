"""Batches (docs/product.md section 9): up to 1,000 jobs from one `POST /v1/batches` or one `incoming/*.jsonl`.

Every item is validated exactly as `POST /v1/jobs` validates a job (`wanflow.usecases.submit.validate`), each error
named with its item (`jobs[3].input.img_url`). Any invalid item refuses the whole batch, with every item's errors,
before anything is stored, unless the caller asked for `partial`: then the valid items are queued and the refused
ones listed. A batch's jobs are ordinary jobs whose ids derive from the batch id and the item index, so a retried
submission (same Idempotency-Key, or the same S3 object version) lands on the same batch and the same jobs.

One submission stays well inside API Gateway's 29 s: items are validated and their jobs stored concurrently, and
the admission queue is asked to grant slots a few times per model (`admission.admit_many`), not once per job.
The one `batch.completed` event is `wanflow.usecases.batch_completion`'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from wanflow import cursors
from wanflow.batches import MAX_BATCH_ITEMS, Batch, batch_job_id
from wanflow.callers import Caller
from wanflow.errors import Conflict, FieldError, InvalidBatch, InvalidRequest, NotFound
from wanflow.jobs import Job, JobStatus, Source, derived_job_id, fingerprint, new_job_id
from wanflow.request import JobRequest, _check_metadata
from wanflow.usecases import admission, submit
from wanflow.usecases.cancel import cancel_job
from wanflow.usecases.context import Dependencies
from wanflow.webhooks import WebhookRequest, check_webhook

logger = logging.getLogger(__name__)

# Items validated (an s3:// source is read) and jobs stored at once by one invocation: DynamoDB and S3 calls are
# I/O-bound, and 1,000 of them one after another would not fit in API Gateway's 29 s.
CONCURRENCY = 16
# A batch cancel's share of API Gateway's 29 s; what does not fit is canceled by the next call or the sweeper.
CANCEL_SECONDS = 20.0
DEFAULT_JOB_IDS_PAGE = 100
MAX_JOB_IDS_PAGE = 1000
MAX_WEBHOOK_CHARS = 4096
_BATCH_FIELDS = {"jobs", "partial", "webhook", "metadata"}
_NOT_STARTED = (JobStatus.QUEUED.value, JobStatus.PENDING.value)

T = TypeVar("T")
R = TypeVar("R")


def submit_api_batch(
    deps: Dependencies, body: Any, *, idempotency_key: str | None, caller: Caller
) -> tuple[Batch, bool]:
    """A batch from `POST /v1/batches`; returns (batch, created now). InvalidRequest for a bad batch."""
    items, partial, webhook, metadata = parse_batch_body(
        body, allow_loopback_webhooks=deps.settings.webhook_allow_loopback
    )
    batch_id = derived_job_id("batch", caller.arn, idempotency_key) if idempotency_key else new_job_id()
    return submit_batch(
        deps,
        batch_id,
        items,
        labels=[f"jobs[{index}]" for index in range(len(items))],
        caller=caller,
        source=Source.API,
        partial=partial,
        metadata=metadata,
        webhook=webhook,
        request_fingerprint=fingerprint(body),
    )


def parse_batch_body(
    body: Any, *, allow_loopback_webhooks: bool = False
) -> tuple[list[Any], bool, dict[str, Any] | None, dict[str, str]]:
    """(items, partial, webhook, metadata) of a batch body; InvalidRequest naming each bad field.

    The shared webhook is checked here, once, so that a bad one is named `webhook.url` rather than once per item;
    it is returned with its default events filled in (it also receives the batch's `batch.completed`)."""
    if not isinstance(body, dict):
        raise InvalidRequest([FieldError("body", "must be a JSON object")])
    errors = [FieldError(str(name), "is not a known field") for name in body if name not in _BATCH_FIELDS]
    items = body.get("jobs")
    if not isinstance(items, list):
        errors.append(FieldError("jobs", f"is required: a list of 1 to {MAX_BATCH_ITEMS} job bodies"))
        items = []
    else:
        check_item_count(len(items), "jobs", errors)
    partial = body.get("partial", False)
    if not isinstance(partial, bool):
        errors.append(FieldError("partial", "must be true or false"))
    webhook = body.get("webhook")
    if "webhook" in body and not isinstance(webhook, dict):
        errors.append(FieldError("webhook", "must be an object"))
    elif webhook is not None and len(json.dumps(webhook)) > MAX_WEBHOOK_CHARS:  # kept on the batch record
        errors.append(FieldError("webhook", f"is larger than {MAX_WEBHOOK_CHARS} characters of JSON"))
    elif webhook is not None:
        webhook = _checked_shared_webhook(webhook, allow_loopback_webhooks, errors)
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
        errors.append(FieldError("metadata", "must be an object of string values"))
        metadata = {}
    _check_metadata(metadata, errors)
    if errors:
        raise InvalidRequest(errors)
    return items, partial is True, webhook, metadata


def check_item_count(count: int, field: str, errors: list[FieldError]) -> None:
    if not 1 <= count <= MAX_BATCH_ITEMS:
        errors.append(FieldError(field, f"has {count} job bodies; a batch has 1 to {MAX_BATCH_ITEMS}"))


def _checked_shared_webhook(
    webhook: dict[str, Any], allow_loopback: bool, errors: list[FieldError]
) -> dict[str, Any] | None:
    try:
        request = WebhookRequest.model_validate(webhook)
    except ValidationError as exc:
        errors.extend(
            FieldError(".".join(["webhook", *(str(part) for part in error["loc"])]), error["msg"])
            for error in exc.errors()
        )
        return None
    before = len(errors)
    check_webhook(request, allow_loopback=allow_loopback, errors=errors)
    return request.model_dump() if len(errors) == before else None


def submit_batch(
    deps: Dependencies,
    batch_id: str,
    items: list[Any],
    *,
    labels: list[str],
    caller: Caller,
    source: Source,
    partial: bool = False,
    metadata: dict[str, str] | None = None,
    webhook: dict[str, Any] | None = None,
    request_fingerprint: str,
    origin: str | None = None,
    intake_upload: bool = False,
    unreadable: dict[int, list[FieldError]] | None = None,
) -> tuple[Batch, bool]:
    """Validate every item, then store the batch and its jobs and queue them; returns (batch, created now).

    `labels` name each item in errors (`jobs[3]`, `line 4`); `unreadable` are items known to be invalid already
    (a line that is not JSON), with their errors. A batch that exists already is the same request again (Conflict
    if it is not): it is returned, after storing any job a failed earlier attempt did not store.
    """
    existing = deps.batches.get(batch_id)
    if existing is not None:
        return _again(deps, existing, items, request_fingerprint, webhook, caller, intake_upload), False
    checked = _validate_items(deps, items, labels, webhook, caller, intake_upload, unreadable or {})
    errors = [error for result in checked if isinstance(result, list) for error in result]
    accepted = [index for index, result in enumerate(checked) if isinstance(result, JobRequest)]
    if errors and (not partial or not accepted):
        raise InvalidBatch(errors, f"{len(items) - len(accepted)} of {len(items)} jobs are invalid; nothing was queued")
    requests = {index: result for index, result in enumerate(checked) if isinstance(result, JobRequest)}
    batch = Batch(
        batch_id=batch_id,
        owner=caller.principal,
        source=source,
        metadata=metadata or {},
        webhook=webhook,
        items=len(items),
        job_indexes=accepted,
        rejected=[index for index, result in enumerate(checked) if isinstance(result, list)],
        request_fingerprint=request_fingerprint,
        origin=origin,
    )
    jobs = _build_jobs(deps, batch, requests, items, caller)
    batch.cost_estimate_usd = sum(job.cost_estimate_usd or 0.0 for job in jobs.values())
    if not deps.batches.create(batch):  # a concurrent submission of the same batch won
        existing = deps.batches.get(batch_id)
        if existing is None:
            raise Conflict("a request with this Idempotency-Key is being processed; retry shortly")
        return _again(deps, existing, items, request_fingerprint, webhook, caller, intake_upload), False
    _store_jobs(deps, batch, jobs)
    return batch.with_rejected_errors(
        {
            index: [{"field": error.field, "message": error.message} for error in result]
            for index, result in enumerate(checked)
            if isinstance(result, list)
        }
    ), True


def _again(
    deps: Dependencies,
    batch: Batch,
    items: list[Any],
    request_fingerprint: str,
    webhook: dict[str, Any] | None,
    caller: Caller,
    intake_upload: bool,
) -> Batch:
    """The same batch submitted again: nothing new, unless an earlier attempt died before storing all its jobs."""
    if batch.request_fingerprint != request_fingerprint:
        raise Conflict("this Idempotency-Key was already used with a different request body")
    if batch.jobs_stored:
        return batch
    labels = [f"jobs[{index}]" for index in range(len(items))]
    checked = _validate_items(deps, items, labels, webhook, caller, intake_upload, {})
    requests: dict[int, JobRequest] = {}
    for index in batch.job_indexes:
        result = checked[index]
        if isinstance(result, JobRequest):
            requests[index] = result
        else:  # valid when the batch was stored, not now (e.g. its s3:// source was deleted since)
            logger.error("a batch item is no longer valid", extra={"batch_id": batch.batch_id, "index": index})
    jobs = _build_jobs(deps, batch, requests, items, caller)
    _store_jobs(deps, batch, jobs)
    return batch


def _build_jobs(
    deps: Dependencies, batch: Batch, requests: dict[int, JobRequest], items: list[Any], caller: Caller
) -> dict[int, Job]:
    """The job records (not stored yet) of the batch's valid items, built concurrently (each data-URI image is
    stashed in S3), under ids derived from the batch and the item index."""
    # The caller's ARN lets a spend cap named by ARN apply (as for POST /v1/jobs); S3 names uploaders by id only.
    owner_arn = caller.arn if batch.source is Source.API else None

    def build(index: int) -> Job:
        job_id = batch_job_id(batch.batch_id, index)
        return submit.new_job(
            deps,
            job_id,
            requests[index],
            items[index],
            batch.source,
            owner=batch.owner,
            origin=batch.origin,
            owner_arn=owner_arn,
        )

    indexes = list(requests)
    return dict(zip(indexes, _concurrently(build, indexes), strict=True))


def _validate_items(
    deps: Dependencies,
    items: list[Any],
    labels: list[str],
    webhook: dict[str, Any] | None,
    caller: Caller,
    intake_upload: bool,
    unreadable: dict[int, list[FieldError]],
) -> list[JobRequest | list[FieldError]]:
    """Each item's validated request, or its errors named with its label."""

    def check(index: int) -> JobRequest | list[FieldError]:
        if index in unreadable:
            return unreadable[index]
        try:
            return submit.validate(
                deps, with_shared_webhook(items[index], webhook), caller, intake_upload=intake_upload
            )
        except InvalidRequest as exc:
            return [_labelled(labels[index], error) for error in exc.errors]

    return _concurrently(check, range(len(items)))


def with_shared_webhook(item: Any, webhook: dict[str, Any] | None) -> Any:
    """The item with the batch's webhook, if it has none of its own and jobs take one (the job's `webhook` field)."""
    if webhook is None or "webhook" not in JobRequest.model_fields or not isinstance(item, dict) or "webhook" in item:
        return item
    return {**item, "webhook": webhook}


def _labelled(label: str, error: FieldError) -> FieldError:
    return FieldError(label if error.field == "body" else f"{label}.{error.field}", error.message)


def _store_jobs(deps: Dependencies, batch: Batch, jobs: dict[int, Job]) -> None:
    """Store the batch's jobs (those stored by an earlier attempt stay as they are) and queue them."""
    for index, job in jobs.items():
        job.batch_id, job.batch_index = batch.batch_id, index
        # Built concurrently, the jobs' own times are in no order; a millisecond apart from the batch's time (the
        # queue ranks by millisecond), they are admitted in item order.
        job.queued_at = batch.created_at + timedelta(milliseconds=index)
    created = _concurrently(deps.jobs.create, list(jobs.values()))
    stored_now = [job for job, stored in zip(jobs.values(), created, strict=True) if stored]
    for job in stored_now:
        deps.telemetry.job_submitted(job)
    admission.admit_many(deps, stored_now)
    deps.batches.mark_jobs_stored(batch.batch_id)
    batch.jobs_stored = True


def _concurrently(work: Callable[[T], R], inputs: Iterable[T]) -> list[R]:
    with ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="batch") as pool:
        return list(pool.map(work, inputs))


def require_batch(deps: Dependencies, batch_id: str, caller: Caller) -> Batch:
    """The batch; NotFound if it does not exist or belongs to someone `caller` may not see (the same answer)."""
    batch = deps.batches.get(batch_id)
    if batch is None or not caller.may_see(batch.owner):
        raise NotFound(f"batch {batch_id} does not exist")
    return batch


def batch_view(
    deps: Dependencies, batch: Batch, *, limit: int = DEFAULT_JOB_IDS_PAGE, cursor: str | None = None
) -> dict[str, Any]:
    """The batch as users see it: counts per status, and a page of its job ids (in item order) with a cursor."""
    view = batch.public_view(deps.jobs.batch_statuses(batch.batch_id))
    scope = f"batch|{batch.batch_id}"  # only the batch's owner (or an admin) gets this far
    start = 0
    if cursor:
        start = cursors.verify(deps.cursor_key(), scope, cursor).get("offset", 0)
        if not isinstance(start, int) or start < 0:
            raise InvalidRequest([FieldError("cursor", "is not a cursor this listing handed out; start without one")])
    job_ids = batch.job_ids
    view["jobs"] = job_ids[start : start + limit]
    end = start + limit
    view["next_cursor"] = cursors.sign(deps.cursor_key(), scope, {"offset": end}) if end < len(job_ids) else None
    return view


def get_batch(
    deps: Dependencies, batch_id: str, caller: Caller, *, limit: int = DEFAULT_JOB_IDS_PAGE, cursor: str | None = None
) -> dict[str, Any]:
    return batch_view(deps, require_batch(deps, batch_id, caller), limit=limit, cursor=cursor)


def cancel_batch(deps: Dependencies, batch_id: str, caller: Caller) -> dict[str, Any]:
    """`POST /v1/batches/{id}/cancel`: cancel every job of the batch that has not started (QUEUED, or PENDING at
    DashScope); jobs already running finish. Returns the batch view.

    Each job is canceled as `POST /v1/jobs/{id}/cancel` would, with its own event. What does not fit in
    CANCEL_SECONDS (a large batch on a slow day) is left to the next call or to the sweeper (`resume_cancels`):
    the cancel is recorded on the batch first.
    """
    batch = require_batch(deps, batch_id, caller)
    deps.batches.request_cancel(batch_id)
    cancel_not_started(deps, batch, caller, seconds=CANCEL_SECONDS)
    return get_batch(deps, batch_id, caller)


def cancel_not_started(deps: Dependencies, batch: Batch, caller: Caller, *, seconds: float) -> int:
    """Cancel the batch's jobs that have not started, for at most about `seconds`; returns how many were canceled."""
    statuses = deps.jobs.batch_statuses(batch.batch_id)
    not_started = [
        job_id
        for job_id in batch.job_ids
        if job_id not in batch.endings and statuses.get(job_id, JobStatus.QUEUED.value) in _NOT_STARTED
    ]
    deadline = deps.monotonic() + seconds

    def cancel(job_id: str) -> bool:
        if deps.monotonic() > deadline:
            return False
        # It may have started (or ended) meanwhile, or a failed submission never stored it.
        with contextlib.suppress(Conflict, NotFound):
            return cancel_job(deps, job_id, caller).status is JobStatus.CANCELED
        return False

    return sum(_concurrently(cancel, not_started))


def resume_cancels(deps: Dependencies, finished: list[Job]) -> dict[str, int]:
    """The sweeper's part: finish the cancel of batches (found through their recently finished jobs) whose cancel
    did not fit in its request."""
    counts: Counter[str] = Counter()
    for batch_id in sorted({job.batch_id for job in finished if job.batch_id is not None}):
        try:
            batch = deps.batches.get(batch_id)
            if batch is None or batch.cancel_requested_at is None or batch.all_ended:
                continue
            owner = Caller(principal=batch.owner, arn=batch.owner)
            canceled = cancel_not_started(deps, batch, owner, seconds=CANCEL_SECONDS)
            if canceled:
                counts["batch_jobs_canceled"] += canceled
        except Exception:
            logger.exception("sweeper could not go on canceling a batch", extra={"batch_id": batch_id})
            counts["error"] += 1
    return dict(counts)
