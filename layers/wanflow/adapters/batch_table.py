"""DynamoDB adapter for batch records: the `BatchRepository` of a deployed stack (table `BatchesTable`).

One item per batch: what never changes as a JSON document (`doc`), and the parts that do as attributes of their
own, each changed by one conditional UpdateItem: `endings` (a map, job id -> final status, one entry written once
per job), `completion` (none -> claimed -> published), `jobs_stored`, `cancel_requested_at`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from wanflow.adapters.job_table import KEEP_FINISHED_JOBS
from wanflow.batches import Batch, Completion
from wanflow.jobs import rfc3339, utc_now
from wanflow.webhooks import Delivery, DeliveryState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

_CHANGING = {
    "jobs_stored",
    "endings",
    "completion",
    "completed_at",
    "cancel_requested_at",
    "webhook_state",
    "webhook_deliveries",
}


class BatchTable:
    def __init__(self, table: Table) -> None:
        self._table = table

    def create(self, batch: Batch) -> bool:
        item: dict[str, Any] = {
            "batch_id": batch.batch_id,
            "owner": batch.owner,
            "created_at": rfc3339(batch.created_at),
            "doc": batch.model_dump_json(exclude=_CHANGING),
            "jobs_stored": batch.jobs_stored,
            "endings": dict(batch.endings),
            "completion": batch.completion.value,
        }
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(batch_id)")
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def get(self, batch_id: str) -> Batch | None:
        item = self._table.get_item(Key={"batch_id": batch_id}, ConsistentRead=True).get("Item")
        return _batch_from_item(item) if item else None

    def mark_jobs_stored(self, batch_id: str) -> None:
        self._update(batch_id, "SET jobs_stored = :true", {":true": True})

    def record_ending(self, batch_id: str, job_id: str, status: str) -> Batch | None:
        try:
            item = self._table.update_item(
                Key={"batch_id": batch_id},
                UpdateExpression="SET endings.#job = :status",
                ConditionExpression="attribute_exists(batch_id) AND attribute_not_exists(endings.#job)",
                ExpressionAttributeNames={"#job": job_id},
                ExpressionAttributeValues={":status": status},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as exc:
            if _is_condition_failure(exc):
                return self.get(batch_id)  # recorded before (or no such batch)
            raise
        return _batch_from_item(item)

    def claim_completion(self, batch_id: str, *, reclaim: bool = False) -> Batch | None:
        condition = "completion IN (:none, :claimed)" if reclaim else "completion = :none"
        try:
            item = self._table.update_item(
                Key={"batch_id": batch_id},
                UpdateExpression="SET completion = :claimed, completed_at = if_not_exists(completed_at, :now)",
                ConditionExpression=f"attribute_exists(batch_id) AND {condition}",
                ExpressionAttributeValues={
                    ":none": Completion.NONE.value,
                    ":claimed": Completion.CLAIMED.value,
                    ":now": rfc3339(utc_now()),
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as exc:
            if _is_condition_failure(exc):
                return None
            raise
        return _batch_from_item(item)

    def confirm_completion(self, batch_id: str) -> None:
        # Kept as long as its jobs are (their TTL runs from their own endings).
        expires = int((utc_now() + KEEP_FINISHED_JOBS).timestamp())
        self._update(
            batch_id,
            "SET completion = :published, expires_at = :expires",
            {":published": Completion.PUBLISHED.value, ":expires": expires},
        )

    def request_cancel(self, batch_id: str) -> None:
        self._update(
            batch_id, "SET cancel_requested_at = if_not_exists(cancel_requested_at, :now)", {":now": rfc3339(utc_now())}
        )

    def record_webhook_delivery(self, batch_id: str, delivery: Delivery, state: DeliveryState) -> None:
        # One event (batch.completed) of at most a few attempts: appending needs no read and no condition.
        self._update(
            batch_id,
            "SET webhook_deliveries = list_append(if_not_exists(webhook_deliveries, :empty), :delivery), "
            "webhook_state = :state",
            {":empty": [], ":delivery": [delivery.model_dump_json()], ":state": state},
        )

    def _update(self, batch_id: str, expression: str, values: dict[str, Any]) -> None:
        self._table.update_item(
            Key={"batch_id": batch_id},
            UpdateExpression=expression,
            ConditionExpression="attribute_exists(batch_id)",
            ExpressionAttributeValues=values,
        )


def _batch_from_item(item: dict[str, Any]) -> Batch:
    batch = Batch.model_validate_json(str(item["doc"]))
    batch.jobs_stored = bool(item.get("jobs_stored", False))
    batch.endings = {str(job_id): str(status) for job_id, status in dict(item.get("endings") or {}).items()}
    batch.completion = Completion(str(item.get("completion", Completion.NONE.value)))
    batch.completed_at = _time(item.get("completed_at"))
    batch.cancel_requested_at = _time(item.get("cancel_requested_at"))
    batch.webhook_state = item.get("webhook_state")  # written by this adapter only
    batch.webhook_deliveries = [Delivery.model_validate_json(str(doc)) for doc in item.get("webhook_deliveries") or []]
    return batch


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
