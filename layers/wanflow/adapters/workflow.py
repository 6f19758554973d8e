"""Step Functions adapter: one execution per job, named after the job so that it can never run twice."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from wanflow.events import ExecutionInput, PollState

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient


def execution_arn(state_machine_arn: str, job_id: str) -> str:
    # arn:aws:states:region:account:stateMachine:name -> arn:aws:states:region:account:execution:name:job_id
    prefix, _, name = state_machine_arn.rpartition(":stateMachine:")
    return f"{prefix}:execution:{name}:{job_id}"


class StepFunctionsWorkflow:
    """The `WorkflowEngine` of a deployed stack; `stepfunctions` is a boto3 Step Functions client."""

    def __init__(self, stepfunctions: SFNClient, state_machine_arn: str) -> None:
        self._sfn = stepfunctions
        self._state_machine_arn = state_machine_arn

    def start_job(self, job_id: str) -> bool:
        state = ExecutionInput(job_id=job_id, poll=PollState(next="submit"))
        try:
            self._sfn.start_execution(
                stateMachineArn=self._state_machine_arn, name=job_id, input=state.model_dump_json(exclude_none=True)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
                return False
            raise
        return True

    def execution_status(self, job_id: str) -> str | None:
        try:
            described = self._sfn.describe_execution(executionArn=execution_arn(self._state_machine_arn, job_id))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
                return None
            raise
        return str(described["status"])

    def stop_polling(self, job_id: str, cause: str) -> None:
        try:
            self._sfn.stop_execution(executionArn=execution_arn(self._state_machine_arn, job_id), cause=cause)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionDoesNotExist":
                raise
