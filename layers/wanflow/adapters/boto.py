"""One boto3 session, client and resource per service per process (Lambda containers reuse them).

Endpoints follow boto3's own configuration, so `AWS_ENDPOINT_URL` points every client at the local stack.
"""

from __future__ import annotations

import functools
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)


@functools.cache
def client(service: str) -> Any:
    return boto3.session.Session().client(service, config=_CONFIG)


@functools.cache
def resource(service: str) -> Any:
    return boto3.session.Session().resource(service, config=_CONFIG)


def reset_clients() -> None:
    """Forget cached clients (the local stack and tests call this after changing the environment)."""
    client.cache_clear()
    resource.cache_clear()
