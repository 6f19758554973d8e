"""Fixtures of the unit tests that run adapters against DynamoDB through moto."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from wanflow_tools.moto_stack.stack import DynamoDbAtomicity
from wanflow_tools.moto_stack.template import SamTemplate

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture
def moto_dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """moto's AWS, with each DynamoDB request atomic as DynamoDB's are (moto, unpatched, lets threads interleave
    inside one UpdateItem). Yields `create(logical_id, name)`: a table as template.yaml defines `logical_id`."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    tables = SamTemplate.load(TEMPLATE).resources_of_type("AWS::DynamoDB::Table")

    def create(logical_id: str, name: str) -> None:
        properties = tables[logical_id]
        keys = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")
        arguments = {key: properties[key] for key in keys if key in properties}
        boto3.client("dynamodb").create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **arguments)

    atomicity = DynamoDbAtomicity()
    atomicity.install()
    try:
        with mock_aws():
            yield create
    finally:
        atomicity.uninstall()
