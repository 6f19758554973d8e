"""Typed events: what the state machine passes between its steps, and the S3 intake's SQS records.

The state (`ExecutionInput`) is `{"job_id": ..., "poll": {...}}` (statemachine/job.asl.json): CheckStatus returns
a new `PollState` into `$.poll`, whose `next` the Choice state reads; RecordFailure gets the whole state and,
after a Catch, the caught error in `$.error`.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.parser.models.s3 import S3Object
from pydantic import BaseModel, ConfigDict, Field, Json

NextStep = Literal["wait", "finalize", "fail"]


class StepError(BaseModel):
    """Why the status step sends a job down the failure path."""

    code: str
    message: str
    outcome: Literal["failed", "canceled"] | None = None
    provider_request_id: str | None = None


class PollState(BaseModel):
    """The poll loop's own state: what to do next, how long to wait first, how many polls so far."""

    next: NextStep
    wait_seconds: int = Field(default=0, ge=0)
    polls: int = Field(default=0, ge=0)
    error: StepError | None = None

    def as_state(self) -> dict[str, object]:
        """The JSON the state machine keeps in `$.poll` (no `error` key unless there is one)."""
        return self.model_dump(exclude_none=True)


class CaughtError(BaseModel):
    """A Step Functions Catch result: the Lambda error type and its JSON cause."""

    model_config = ConfigDict(populate_by_name=True)

    error: str = Field(default="", alias="Error")
    cause: str = Field(default="", alias="Cause")


class ExecutionInput(BaseModel):
    """The state every step receives; steps ignore what other steps added (`finalize`, `failure`)."""

    job_id: str
    poll: PollState = Field(default_factory=lambda: PollState(next="wait"))


class FailureInput(ExecutionInput):
    """RecordFailure's input: the state, plus the caught error when a step failed for good."""

    error: CaughtError | None = None


# ------------------------------------------------------------------------------------------- S3 intake (SQS)


class S3BucketName(BaseModel):
    name: str


class S3Entity(BaseModel):
    bucket: S3BucketName
    object: S3Object


class S3UserIdentity(BaseModel):
    principalId: str | None = None


class S3NotificationRecord(BaseModel):
    """One record of an S3 event notification, as much of it as the intake reads."""

    eventName: str = ""
    userIdentity: S3UserIdentity | None = None  # the uploader
    s3: S3Entity | None = None

    @property
    def key(self) -> str:
        """The object key, decoded (S3 event keys are URL-encoded)."""
        return unquote_plus(self.s3.object.key) if self.s3 is not None else ""


class S3Notification(BaseModel):
    """An S3 event notification; S3's test event (sent when the notification is configured) has no records."""

    Records: list[S3NotificationRecord] = Field(default_factory=list)


class IntakeRecord(SqsRecordModel):
    """An SQS record of the intake queue: its body is an S3 event notification."""

    body: Json[S3Notification]  # narrows Powertools' `str | type[BaseModel] | BaseModel`
