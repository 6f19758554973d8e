"""The batch: up to 1,000 jobs submitted together (docs/product.md section 9), its record and its public view.

A batch's jobs are ordinary jobs (`Job.batch_id`, `Job.batch_index`); their ids are derived from the batch id and
the item's index, so a retried submission lands on the same jobs. The batch record keeps what the jobs do not:
the batch's metadata and shared webhook, which items were refused (`partial`), the total cost estimate, and the
ending of each of its jobs (`endings`, job id -> final status), written once per job by
`wanflow.usecases.batches.job_ended`, so that `batch.completed` is published once, when the last job ended.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from wanflow.jobs import JobStatus, Source, derived_job_id, rfc3339, utc_now
from wanflow.webhooks import MAX_DELIVERIES_KEPT, Delivery, DeliveryState, redacted_url

MAX_BATCH_ITEMS = 1000
BATCH_EVENT_SCHEMA = "wanflow.batch.v1"
BATCH_COMPLETED = "batch.completed"


class BatchStatus(StrEnum):
    OPEN = "open"  # some job has not ended
    COMPLETED = "completed"  # every job ended
    CANCELED = "canceled"  # every job ended, after a cancel of the batch


class Completion(StrEnum):
    """Where the one `batch.completed` event is (like `wanflow.jobs.Notification` for a job's)."""

    NONE = "none"
    CLAIMED = "claimed"  # one process owns publishing it
    PUBLISHED = "published"


class Batch(BaseModel):
    batch_id: str
    owner: str
    source: Source
    created_at: datetime = Field(default_factory=utc_now)
    metadata: dict[str, str] = Field(default_factory=dict)
    webhook: dict[str, Any] | None = None  # the shared webhook, as given (its jobs carry their own copy)
    items: int  # items submitted, accepted or not
    job_indexes: list[int]  # the items that became jobs (all of them unless `partial` refused some)
    rejected: list[int] = Field(default_factory=list)  # the items `partial` refused
    cost_estimate_usd: float = 0.0  # the sum of its jobs' list-price estimates
    request_fingerprint: str = ""
    origin: str | None = None  # "s3://bucket/key#version" for a batch from the intake

    # Changed after creation, each by one conditional write (see wanflow.ports.BatchRepository).
    jobs_stored: bool = False  # every job of the batch was stored (a retried submission completes the rest)
    endings: dict[str, str] = Field(default_factory=dict)  # job id -> the final status it ended with
    completion: Completion = Completion.NONE
    completed_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    # The shared webhook's deliveries of `batch.completed` (wanflow.usecases.webhooks), latest last.
    webhook_state: DeliveryState | None = None
    webhook_deliveries: list[Delivery] = Field(default_factory=list)

    # The refused items' errors, by index: only in the answer to the submission itself, never stored (a batch
    # record must stay within DynamoDB's 400 KB, and 1,000 items' errors would not).
    _rejected_errors: dict[int, list[dict[str, str]]] = PrivateAttr(default_factory=dict)

    def with_rejected_errors(self, errors: dict[int, list[dict[str, str]]]) -> Batch:
        self._rejected_errors = errors
        return self

    @property
    def total(self) -> int:
        return len(self.job_indexes)

    @property
    def job_ids(self) -> list[str]:
        return [batch_job_id(self.batch_id, index) for index in self.job_indexes]

    @property
    def all_ended(self) -> bool:
        return len(self.endings) >= self.total

    @property
    def status(self) -> BatchStatus:
        if not self.all_ended:
            return BatchStatus.OPEN
        return BatchStatus.CANCELED if self.cancel_requested_at is not None else BatchStatus.COMPLETED

    def counts(self, statuses: dict[str, str]) -> dict[str, int]:
        """Jobs per status: `statuses` (job id -> status, from the jobs, may lag a moment) overridden by the
        endings this record holds; a job not seen yet counts as QUEUED (how every job starts)."""
        counted = Counter(
            self.endings.get(job_id) or statuses.get(job_id) or JobStatus.QUEUED.value for job_id in self.job_ids
        )
        return {status.value: counted.get(status.value, 0) for status in JobStatus}

    def public_view(self, statuses: dict[str, str], *, reveal_webhook_url: bool = True) -> dict[str, Any]:
        """The batch as docs/product.md section 9 shows it, without its job ids (see `usecases.batches`); its
        `batch.completed` event shows only the origin of the webhook URL (wanflow.webhooks.redacted_url)."""
        return {
            "batch_id": self.batch_id,
            "status": self.status.value,
            "source": self.source.value,
            "created_at": rfc3339(self.created_at),
            "completed_at": rfc3339(self.completed_at) if self.completed_at else None,
            "metadata": self.metadata,
            "total": self.total,
            "counts": self.counts(statuses),
            "cost_estimate_usd": round(self.cost_estimate_usd, 6),
            "rejected": [self._rejected_item(index) for index in self.rejected],
            "webhook": self._webhook_view(reveal_webhook_url),
        }

    def _webhook_view(self, reveal_url: bool) -> dict[str, Any] | None:
        if self.webhook is None:
            return None
        url = str(self.webhook.get("url") or "")
        return {
            "url": url if reveal_url else redacted_url(url),
            "events": self.webhook.get("events"),
            "state": self.webhook_state or "pending",
            "deliveries": [delivery.public_view() for delivery in self.webhook_deliveries[-MAX_DELIVERIES_KEPT:]],
        }

    def _rejected_item(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"index": index}
        if index in self._rejected_errors:
            item["errors"] = self._rejected_errors[index]
        return item


def batch_job_id(batch_id: str, index: int) -> str:
    """The id of the batch's job for item `index`: the same on every retry of the submission."""
    return derived_job_id("batch", batch_id, str(index))
