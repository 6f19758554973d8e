"""DynamoDB adapter for the deployment-wide `RateLimiter`: GCRA, i.e. one "next free turn" per key.

One item per key, `{"pk": "rate#<key>", "next_at": <unix seconds, ms precision>, "expires_at": <TTL>}`. Taking a
turn is one atomic `next_at = next_at + spacing`, so concurrent invocations get distinct turns spaced apart without a
read first; only an idle (or new) key, or one booked beyond the caller's patience, costs a GetItem.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from wanflow.ports import turn_spacing, turn_window

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

KEY_PREFIX = "rate#"
# TTL: an idle key's item goes this long after its last turn. Deleting it changes nothing (a next_at in the past
# is treated as a missing item), so this only keeps the table small.
KEEP_IDLE_SECONDS = 600
# A try fails only when another invocation moved next_at between our refused update and our read, or took an idle
# key's turn first; giving up after this many (to the caller, like "too far away") bounds one reserve's requests.
MAX_TRIES = 10


class DynamoRateLimiter:
    """`wanflow.ports.RateLimiter` on a DynamoDB table whose hash key is the string `pk`; `table` is a boto3 Table."""

    def __init__(self, table: Table, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._clock = clock  # wall clock, not monotonic: turns are compared across invocations and machines

    def reserve(self, key: str, per_second: float, *, max_wait_seconds: float) -> float | None:
        spacing = turn_spacing(per_second)
        pk = KEY_PREFIX + key
        for _ in range(MAX_TRIES):
            now_seconds = self._clock()
            now, latest = turn_window(now_seconds, max_wait_seconds)
            expires_at = int(latest + spacing) + KEEP_IDLE_SECONDS
            turn = self._take_booked_turn(pk, spacing, now, latest, expires_at)
            if turn is None:
                item = self._table.get_item(Key={"pk": pk}, ConsistentRead=True).get("Item")
                next_at = item.get("next_at") if item else None
                if not isinstance(next_at, Decimal) or next_at < now:
                    turn = self._take_idle_turn(pk, spacing, now, expires_at)
                elif next_at > latest:
                    return None
                # else next_at moved into [now, latest] since the update: try it again
            if turn is not None:
                return max(0.0, float(turn) - now_seconds)
        return None

    def _take_booked_turn(
        self, pk: str, spacing: Decimal, now: Decimal, latest: Decimal, expires_at: int
    ) -> Decimal | None:
        """The turn at next_at when it is in [now, latest] (moving next_at one spacing on); None otherwise."""
        # `next_at >= :now` matters: without it a long-idle key would hand out its backlog of past turns at once.
        try:
            attributes = self._table.update_item(
                Key={"pk": pk},
                UpdateExpression="SET next_at = next_at + :spacing, expires_at = :expires_at",
                ConditionExpression="next_at BETWEEN :now AND :latest",
                ExpressionAttributeValues={
                    ":spacing": spacing,
                    ":now": now,
                    ":latest": latest,
                    ":expires_at": expires_at,
                },
                ReturnValues="UPDATED_NEW",
            )["Attributes"]
        except ClientError as exc:
            if _is_condition_failure(exc):
                return None
            raise
        return Decimal(str(attributes["next_at"])) - spacing  # str: boto3 types it as any attribute value

    def _take_idle_turn(self, pk: str, spacing: Decimal, now: Decimal, expires_at: int) -> Decimal | None:
        """Turn `now` for a new or idle key (next_at missing or past); None if another invocation took it first."""
        try:
            self._table.update_item(
                Key={"pk": pk},
                UpdateExpression="SET next_at = :next_at, expires_at = :expires_at",
                ConditionExpression="attribute_not_exists(next_at) OR next_at < :now",
                ExpressionAttributeValues={":next_at": now + spacing, ":now": now, ":expires_at": expires_at},
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return None
            raise
        return now


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
