"""DynamoDB adapter for jobs: the `JobRepository` of a deployed stack.

Each job is one item: the whole job as a JSON document (`doc`) plus the attributes DynamoDB needs to index it.
Every write is conditional on the item's `version` (see `wanflow.ports.JobRepository` for why).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.conditions import ConditionBase, Key
from botocore.exceptions import ClientError

from wanflow.errors import QueueUnavailable
from wanflow.jobs import Job, JobStatus, rfc3339, utc_now
from wanflow.ports import JobRepository, VersionConflict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

RECORD_TYPE = "job"
_THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded", "InternalServerError"}
)
KEEP_FINISHED_JOBS = timedelta(days=90)  # TTL: finished jobs are deleted this long after they end
# Key of the item that keeps an earlier attempt's task in the by_task index: "<job_id>#task#<task_id>".
_TASK_MARKER = "#task#"


class JobTable(JobRepository):
    """Jobs in one DynamoDB table (keys and indexes in docs/architecture.md); `table` is a boto3 Table."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def create(self, job: Job) -> bool:
        try:
            self._table.put_item(Item=self._item(job), ConditionExpression="attribute_not_exists(job_id)")
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            if exc.response.get("Error", {}).get("Code") in _THROTTLING_CODES:
                raise QueueUnavailable("the job queue is busy and could not take the job; send it again") from None
            raise
        return True

    def get(self, job_id: str) -> Job | None:
        item = self._table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        return _job_from_item(item) if item and "doc" in item else None  # not a remember_task item

    def save(self, job: Job) -> Job:
        expected = job.version
        job.version = expected + 1
        try:
            self._table.put_item(
                Item=self._item(job),
                ConditionExpression="#version = :expected",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":expected": expected},
            )
        except ClientError as exc:
            job.version = expected
            if _is_condition_failure(exc):
                raise VersionConflict(job.job_id) from None
            raise
        return job

    def delete(self, job: Job) -> None:
        self._table.delete_item(
            Key={"job_id": job.job_id},
            ConditionExpression="#version = :expected",
            ExpressionAttributeNames={"#version": "version"},
            ExpressionAttributeValues={":expected": job.version},
        )

    def page(
        self,
        *,
        owner: str | None = None,
        status: JobStatus | None = None,
        limit: int = 20,
        start_after: dict[str, Any] | None = None,
    ) -> tuple[list[Job], dict[str, Any] | None]:
        query: dict[str, Any] = {"ScanIndexForward": False, "Limit": limit}
        if owner is None and status is None:
            query |= {"IndexName": "by_created", "KeyConditionExpression": Key("record_type").eq(RECORD_TYPE)}
        elif owner is None and status is not None:
            query |= {"IndexName": "by_status", "KeyConditionExpression": Key("status").eq(status.value)}
        elif status is None:
            query |= {"IndexName": "by_owner", "KeyConditionExpression": Key("owner").eq(owner)}
        else:
            condition = Key("owner_status").eq(_owner_status(str(owner), status))
            query |= {"IndexName": "by_owner_status", "KeyConditionExpression": condition}
        if start_after:
            query["ExclusiveStartKey"] = start_after
        page = self._table.query(**query)
        jobs = [_job_from_item(item) for item in page.get("Items", [])]
        last_key = page.get("LastEvaluatedKey")
        return jobs, dict(last_key) if last_key else None

    def unfinished(self) -> list[Job]:
        return [job for status in (JobStatus.PENDING, JobStatus.RUNNING) for job in self._with_status(status)]

    def finished_since(self, since: str) -> list[Job]:
        final = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)
        return [job for status in final for job in self._with_status(status, since=since)]

    def holding_task(self, task_id: str) -> str | None:
        page = self._table.query(IndexName="by_task", KeyConditionExpression=Key("task_id").eq(task_id), Limit=1)
        items = page.get("Items", [])
        return str(items[0]["job_id"]).split(_TASK_MARKER, 1)[0] if items else None

    def remember_task(self, job_id: str, task_id: str) -> None:
        # A small item of its own, in the by_task index only (no record_type, status, owner or queue keys): a job
        # item indexes one task, its current one. Kept as long as a finished job is.
        self._table.put_item(
            Item={
                "job_id": f"{job_id}{_TASK_MARKER}{task_id}",
                "task_id": task_id,
                "expires_at": int((utc_now() + KEEP_FINISHED_JOBS).timestamp()),
            }
        )

    def queued(self, model: str, *, limit: int) -> list[Job]:
        page = self._table.query(
            IndexName="by_queue", KeyConditionExpression=Key("queue_model").eq(model), Limit=max(1, limit)
        )
        jobs = (self.get(str(item["job_id"])) for item in page.get("Items", []))  # the index keeps keys only
        return [job for job in jobs if job is not None]

    def queued_ranks_before(self, model: str, queue_rank: str) -> list[str]:
        query: dict[str, Any] = {
            "IndexName": "by_queue",
            "KeyConditionExpression": Key("queue_model").eq(model) & Key("queue_rank").lt(queue_rank),
            "ProjectionExpression": "queue_rank",
        }
        ranks: list[str] = []
        while True:
            page = self._table.query(**query)
            ranks.extend(str(item["queue_rank"]) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return ranks
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def batch_statuses(self, batch_id: str) -> dict[str, str]:
        query: dict[str, Any] = {
            "IndexName": "by_batch",
            "KeyConditionExpression": Key("batch_id").eq(batch_id),
            "ProjectionExpression": "job_id, #status",
            "ExpressionAttributeNames": {"#status": "status"},
        }
        statuses: dict[str, str] = {}
        while True:
            page = self._table.query(**query)
            statuses.update({str(item["job_id"]): str(item["status"]) for item in page.get("Items", [])})
            if "LastEvaluatedKey" not in page:
                return statuses
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _with_status(self, status: JobStatus, *, since: str | None = None) -> list[Job]:
        condition: ConditionBase = Key("status").eq(status.value)
        if since is not None:
            condition = condition & Key("created_at").gte(since)
        return self._query_all({"IndexName": "by_status", "KeyConditionExpression": condition})

    def _query_all(self, query: dict[str, Any]) -> list[Job]:
        jobs: list[Job] = []
        while True:
            page = self._table.query(**query)
            jobs.extend(_job_from_item(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return jobs
            query = {**query, "ExclusiveStartKey": page["LastEvaluatedKey"]}

    @staticmethod
    def _item(job: Job) -> dict[str, Any]:
        item: dict[str, Any] = {
            "job_id": job.job_id,
            "record_type": RECORD_TYPE,
            "status": job.status.value,
            "created_at": rfc3339(job.created_at),  # the index key; the same string the public view shows
            "version": job.version,
            "doc": job.model_dump_json(),
        }
        if job.owner is not None:
            item["owner"] = job.owner
            item["owner_status"] = _owner_status(job.owner, job.status)
        if job.status is JobStatus.QUEUED:  # the sparse queue index holds queued jobs only
            item["queue_model"] = job.queue_key  # a job held by the spend cap waits beside its model's queue
            item["queue_rank"] = job.queue_rank
        if job.batch_id is not None:  # the sparse batch index: a batch's jobs and their statuses
            item["batch_id"] = job.batch_id
            item["batch_index"] = job.batch_index or 0
        if job.provider.task_id is not None:
            item["task_id"] = job.provider.task_id
        if job.completed_at is not None:
            item["expires_at"] = int((job.completed_at + KEEP_FINISHED_JOBS).timestamp())
        return item


def _job_from_item(item: dict[str, Any]) -> Job:
    job = Job.model_validate_json(item["doc"])
    job.version = int(item["version"])
    return job


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _owner_status(owner: str, status: JobStatus) -> str:
    return f"{owner}#{status.value}"
