"""One boto3 session and one client per service per process (Lambda containers reuse them).

Endpoints follow boto3's own configuration, so `AWS_ENDPOINT_URL` points every client at the local stack.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBServiceResource
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)


@functools.cache
def session() -> boto3.session.Session:
    return boto3.session.Session()


@functools.cache
def s3() -> S3Client:
    return session().client("s3", config=_CONFIG)


@functools.cache
def sns() -> SNSClient:
    return session().client("sns", config=_CONFIG)


@functools.cache
def sqs() -> SQSClient:
    return session().client("sqs", config=_CONFIG)


@functools.cache
def stepfunctions() -> SFNClient:
    return session().client("stepfunctions", config=_CONFIG)


def dynamodb_table(name: str) -> Table:
    return _dynamodb().Table(name)


@functools.cache
def _dynamodb() -> DynamoDBServiceResource:
    return session().resource("dynamodb", config=_CONFIG)


def reset_clients() -> None:
    """Forget the session and clients (the local stack and tests call this after changing the environment)."""
    for cached in (session, s3, sns, sqs, stepfunctions, _dynamodb):
        cached.cache_clear()
