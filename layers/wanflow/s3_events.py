"""Typed events of the S3 intake: SQS records whose body is an S3 event notification (Powertools parser models).

A module of its own because Powertools' parser models load every event model it knows: only the intake pays.
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.parser.models.s3 import S3Object
from pydantic import BaseModel, Field, Json


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
