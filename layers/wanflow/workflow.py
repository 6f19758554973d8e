"""Step Functions adapter: one execution per job, named after the job so that it can never run twice."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from wanflow.aws import client


def execution_arn(state_machine_arn: str, job_id: str) -> str:
    # arn:aws:states:region:account:stateMachine:name -> arn:aws:states:region:account:execution:name:job_id
    prefix, _, name = state_machine_arn.rpartition(":stateMachine:")
    return f"{prefix}:execution:{name}:{job_id}"


def start_polling(state_machine_arn: str, job_id: str, first_wait_seconds: int) -> bool:
    """Start the job's poll loop; False if an execution with this name already exists (a retry or duplicate)."""
    state = {"job_id": job_id, "poll": {"next": "wait", "wait_seconds": first_wait_seconds, "polls": 0}}
    try:
        client("stepfunctions").start_execution(stateMachineArn=state_machine_arn, name=job_id, input=json.dumps(state))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
            return False
        raise
    return True


def execution_status(state_machine_arn: str, job_id: str) -> str | None:
    """RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED; None when the job has no execution."""
    try:
        described: dict[str, Any] = client("stepfunctions").describe_execution(
            executionArn=execution_arn(state_machine_arn, job_id)
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
            return None
        raise
    return described["status"]


def stop_polling(state_machine_arn: str, job_id: str, cause: str) -> None:
    try:
        client("stepfunctions").stop_execution(executionArn=execution_arn(state_machine_arn, job_id), cause=cause)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"ExecutionDoesNotExist"}:
            raise
