"""DynamoDB adapter for each model's running slots: the `RunningSlots` of a deployed stack.

One item per model in the admission table: `{"pk": "slots#<model>", "holders": {job ids}, "runs": n,
"run_seconds": average}`. Claiming adds the job id to the `holders` string set on condition that it is already
there or the set has room, in one conditional write: two Lambdas can never hold more slots than there are, and the
same job granted twice holds one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

# The queue ETA follows the model's recent runs: an average over about this many, the newest weighing most.
RECENT_RUNS = 20
_MAX_STATS_ATTEMPTS = 3


class DynamoRunningSlots:
    def __init__(self, table: Table) -> None:
        self._table = table

    def claim(self, model: str, job_id: str, slots: int) -> bool:
        try:
            self._table.update_item(
                Key={"pk": _key(model)},
                UpdateExpression="ADD holders :job",
                ConditionExpression="contains(holders, :id) OR attribute_not_exists(holders) OR size(holders) < :slots",
                ExpressionAttributeValues={":job": {job_id}, ":id": job_id, ":slots": slots},
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def release(self, model: str, job_id: str) -> bool:
        try:
            self._table.update_item(
                Key={"pk": _key(model)},
                UpdateExpression="DELETE holders :job",
                ConditionExpression="contains(holders, :id)",
                ExpressionAttributeValues={":job": {job_id}, ":id": job_id},
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def holders(self, model: str) -> set[str]:
        item = self._table.get_item(Key={"pk": _key(model)}, ConsistentRead=True).get("Item") or {}
        return {str(job_id) for job_id in item.get("holders", set())}  # type: ignore[union-attr]

    def record_run(self, model: str, seconds: float) -> None:
        """Fold one run into the model's running average, optimistically (a lost race is retried, then dropped:
        the average is an estimate)."""
        for _ in range(_MAX_STATS_ATTEMPTS):
            item = self._table.get_item(Key={"pk": _key(model)}, ConsistentRead=True).get("Item") or {}
            runs = int(item.get("runs", 0))  # type: ignore[arg-type]
            average = float(item.get("run_seconds", 0))  # type: ignore[arg-type]
            average += (seconds - average) / min(runs + 1, RECENT_RUNS)
            condition = "attribute_not_exists(runs)" if "runs" not in item else "runs = :runs"
            values: dict[str, object] = {":next": runs + 1, ":average": Decimal(f"{average:.3f}")}
            if "runs" in item:
                values[":runs"] = runs
            try:
                self._table.update_item(
                    Key={"pk": _key(model)},
                    UpdateExpression="SET runs = :next, run_seconds = :average",
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,  # type: ignore[arg-type]
                )
            except ClientError as exc:
                if _is_condition_failure(exc):
                    continue
                raise
            return

    def typical_run_seconds(self, model: str) -> float | None:
        item = self._table.get_item(Key={"pk": _key(model)}, ConsistentRead=True).get("Item") or {}
        return float(item["run_seconds"]) if item.get("runs") else None  # type: ignore[arg-type]


def _key(model: str) -> str:
    return f"slots#{model}"


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
