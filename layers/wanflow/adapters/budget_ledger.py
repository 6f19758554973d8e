"""DynamoDB adapter for the spend cap's ledger: the `BudgetLedger` of a deployed stack (in the admission table).

Items (docs/architecture.md):
- `budget#<day>` (the deployment) and `budget#<day>#<principal>` (one caller): `reserved_usd`, `spent_usd`, and
  per model `jobs#<model>`, `video_seconds#<model>`, `reserved_usd#<model>`, `spent_usd#<model>`; the flags
  `alerted#0.8` and `alerted#1.0` once that threshold was announced;
- `budget#job#<job_id>`: the job's one reservation (day, USD, model, seconds, principal, `state`).

A reservation is one transaction: the job's item is created (only if it does not exist: a job reserves once) and
both day items are counted up, each on condition that it stays within its cap (`reserved_usd <= cap - amount`).
Settling is one transaction too, conditional on the job's item still being `reserved`: exactly once.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from wanflow.jobs import BudgetState, utc_now
from wanflow.ports import KEEP_USAGE_DAYS, DayUsage, ModelUsage, Reservation, ReserveOutcome
from wanflow.retry import full_jitter, retrying

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table
    from tenacity import Retrying

# A job's reservation item outlives any job by far (a job ends at most 25 hours after its grant).
KEEP_RESERVATION_DAYS = 30
_MODEL_COUNTERS = ("jobs", "video_seconds", "reserved_usd", "spent_usd")
_RETRIED_REASONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})


def day_key(day: str, principal: str | None = None) -> str:
    return f"budget#{day}" if principal is None else f"budget#{day}#{principal}"


class DynamoBudgetLedger:
    def __init__(self, table: Table) -> None:
        self._table = table
        # The resource's client takes plain Python values, as the table does.
        self._client = table.meta.client

    def reserve(
        self, reservation: Reservation, *, cap_usd: Decimal | None, principal_cap_usd: Decimal | None
    ) -> ReserveOutcome:
        r = reservation
        expires = _expires(r.day, KEEP_USAGE_DAYS)
        marker = {
            "pk": _job_key(r.job_id),
            "job_id": r.job_id,
            "day": r.day,
            "usd": r.usd,
            "model": r.model,
            "video_seconds": r.video_seconds,
            "principal": r.principal,
            "state": BudgetState.RESERVED.value,
            "expires_at": _expires(r.day, KEEP_RESERVATION_DAYS),
        }
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table.name,
                    "Item": marker,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {"Update": self._count(day_key(r.day), r, cap_usd, expires, sign=1)},
            {"Update": self._count(day_key(r.day, r.principal), r, principal_cap_usd, expires, sign=1)},
        ]
        try:
            self._transact(items)
        except ClientError as exc:
            failed = _failed_conditions(exc)
            if failed is None:
                raise
            if 0 in failed:
                return ReserveOutcome.ALREADY
            return ReserveOutcome.OVER_DEPLOYMENT if 1 in failed else ReserveOutcome.OVER_PRINCIPAL
        return ReserveOutcome.RESERVED

    def settle(self, job_id: str, *, spent: bool) -> Reservation | None:
        item = self._table.get_item(Key={"pk": _job_key(job_id)}, ConsistentRead=True).get("Item")
        if not item or item.get("state") != BudgetState.RESERVED.value:
            return None
        r = Reservation(
            job_id=job_id,
            day=str(item["day"]),
            usd=Decimal(str(item["usd"])),
            model=str(item["model"]),
            video_seconds=int(item["video_seconds"]),  # type: ignore[arg-type]
            principal=str(item["principal"]),
        )
        state = BudgetState.SPENT if spent else BudgetState.RELEASED
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._table.name,
                    "Key": {"pk": _job_key(job_id)},
                    "UpdateExpression": "SET #state = :new",
                    "ConditionExpression": "#state = :reserved",
                    "ExpressionAttributeNames": {"#state": "state"},
                    "ExpressionAttributeValues": {":new": state.value, ":reserved": BudgetState.RESERVED.value},
                }
            },
        ]
        for key in (day_key(r.day), day_key(r.day, r.principal)):
            update = self._spend(key, r) if spent else self._count(key, r, None, _expires(r.day, KEEP_USAGE_DAYS), -1)
            items.append({"Update": update})
        try:
            self._transact(items)
        except ClientError as exc:
            if _failed_conditions(exc) is None:
                raise
            return None  # settled meanwhile by another process
        return r

    def usage(self, day: str, principal: str | None = None) -> DayUsage:
        item = self._table.get_item(Key={"pk": day_key(day, principal)}, ConsistentRead=True).get("Item") or {}
        return _usage(item)

    def claim_threshold(
        self, day: str, principal: str | None, threshold: str, *, reserved_at_least: Decimal | None
    ) -> DayUsage | None:
        condition = "attribute_not_exists(#flag)"
        values: dict[str, Any] = {":now": utc_now().isoformat(), ":expires": _expires(day, KEEP_USAGE_DAYS)}
        if reserved_at_least is not None:
            condition += " AND reserved_usd >= :at_least"
            values[":at_least"] = reserved_at_least
        try:
            reply = self._table.update_item(
                Key={"pk": day_key(day, principal)},
                UpdateExpression="SET #flag = :now, expires_at = :expires",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#flag": f"alerted#{threshold}"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None
            raise
        return _usage(reply.get("Attributes") or {})

    def _transact(self, items: list[dict[str, Any]]) -> None:
        """One transaction; tried again (briefly, jittered) when it lost a race on an item rather than a condition:
        concurrent grants all count into the same day item, and DynamoDB cancels conflicting transactions."""
        _conflict_retries()(self._client.transact_write_items, TransactItems=items)

    def _count(self, key: str, r: Reservation, cap: Decimal | None, expires: int, sign: int) -> dict[str, Any]:
        """Count a reservation in (sign 1, within `cap`) or out (sign -1) of one day item."""
        names = {f"#{counter}": f"{counter}#{r.model}" for counter in ("jobs", "video_seconds", "reserved_usd")}
        update: dict[str, Any] = {
            "TableName": self._table.name,
            "Key": {"pk": key},
            "UpdateExpression": (
                "ADD reserved_usd :usd, #jobs :jobs, #video_seconds :seconds, #reserved_usd :usd "
                "SET expires_at = :expires"
            ),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {
                ":usd": sign * r.usd,
                ":jobs": sign,
                ":seconds": sign * r.video_seconds,
                ":expires": expires,
            },
        }
        if cap is not None:
            update["ConditionExpression"] = "attribute_not_exists(reserved_usd) OR reserved_usd <= :limit"
            update["ExpressionAttributeValues"][":limit"] = cap - r.usd
        return update

    def _spend(self, key: str, r: Reservation) -> dict[str, Any]:
        return {
            "TableName": self._table.name,
            "Key": {"pk": key},
            "UpdateExpression": "ADD spent_usd :usd, #spent :usd",
            "ExpressionAttributeNames": {"#spent": f"spent_usd#{r.model}"},
            "ExpressionAttributeValues": {":usd": r.usd},
        }


def _usage(item: dict[str, Any]) -> DayUsage:
    models: dict[str, dict[str, Any]] = {}
    for name, value in item.items():
        counter, separator, model = name.partition("#")
        if separator and counter in _MODEL_COUNTERS:
            models.setdefault(model, {})[counter] = value
    return DayUsage(
        announced=frozenset(name.removeprefix("alerted#") for name in item if name.startswith("alerted#")),
        reserved_usd=Decimal(str(item.get("reserved_usd", 0))),
        spent_usd=Decimal(str(item.get("spent_usd", 0))),
        models={
            model: ModelUsage(
                jobs=int(counters.get("jobs", 0)),
                video_seconds=int(counters.get("video_seconds", 0)),
                reserved_usd=Decimal(str(counters.get("reserved_usd", 0))),
                spent_usd=Decimal(str(counters.get("spent_usd", 0))),
            )
            for model, counters in sorted(models.items())
        },
    )


@functools.cache
def _conflict_retries() -> Retrying:
    # About a second at most: a conflict lasts as long as the other transaction, milliseconds.
    return retrying(_is_conflict, max_attempts=6, backoff=full_jitter(0.025, 0.4))


def _is_conflict(error: BaseException) -> bool:
    """A transaction canceled by a concurrent one (or throttled), not by a condition: worth trying again."""
    if not isinstance(error, ClientError):
        return False
    code = error.response.get("Error", {}).get("Code")
    if code == "TransactionInProgressException":
        return True
    reasons = {reason.get("Code") for reason in error.response.get("CancellationReasons") or []}
    if code != "TransactionCanceledException" or "ConditionalCheckFailed" in reasons:
        return False
    return bool(reasons & _RETRIED_REASONS)


def _failed_conditions(exc: ClientError) -> set[int] | None:
    """Which items of a canceled transaction failed their condition; None if it failed for another reason."""
    if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return None
    reasons = exc.response.get("CancellationReasons") or []
    failed = {index for index, reason in enumerate(reasons) if reason.get("Code") == "ConditionalCheckFailed"}
    return failed or None  # canceled for a conflict or throttling only: an error to retry, not a verdict


def _job_key(job_id: str) -> str:
    return f"budget#job#{job_id}"


def _expires(day: str, keep_days: int) -> int:
    """The TTL of an item of `day`: `keep_days` after the day ends."""
    start = datetime.combine(date.fromisoformat(day), time.min, tzinfo=UTC)
    return int((start + timedelta(days=1 + keep_days)).timestamp())
