"""`MotoStack(in_process_aws=True)`: this process's AWS calls reach moto's application without loopback HTTP, and get
the answers the server gives (tests/integration/test_pipeline.py passes the same way with it switched on).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from wanflow_tools.moto_stack import MotoStack
from wanflow_tools.moto_stack.inprocess import InProcessAws, wsgi_environ

pytestmark = pytest.mark.slow


def echo(event, context):
    return {"echo": event}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoStack]:
    with MotoStack(
        state_dir=tmp_path_factory.mktemp("state"),
        dashscope_base_url="http://127.0.0.1:9/api/v1",
        dashscope_api_key="sk-in-process",
        handlers={"StatusFunction": echo},
        in_process_aws=True,
    ) as running:
        yield running


@pytest.fixture
def handed_over(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs InProcessAws answered itself."""
    urls: list[str] = []
    original = InProcessAws.send

    def send(self: InProcessAws, request):
        urls.append(request.url)
        return original(self, request)

    monkeypatch.setattr(InProcessAws, "send", send)
    return urls


def test_s3_objects_round_trip_with_their_metadata(stack: MotoStack, handed_over: list[str]):
    s3 = stack.boto3_client("s3")
    bucket = stack.resources["OutputBucket"]
    key = "videos/a b+c%/d.mp4"
    metadata = {"job-id": "j1", "under_score": "kept"}
    s3.put_object(Bucket=bucket, Key=key, Body=b"\x00video", ContentType="video/mp4", Metadata=metadata)
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == b"\x00video"
    assert got["ContentType"] == "video/mp4"
    assert got["Metadata"] == metadata
    assert [entry["Key"] for entry in s3.list_objects_v2(Bucket=bucket, Prefix="videos/")["Contents"]] == [key]
    assert handed_over and all(url.startswith(stack.aws_endpoint) for url in handed_over)
    # The server still answers other processes over HTTP, from the same backends.
    presigned = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    assert httpx.get(presigned).content == b"\x00video"


def test_dynamodb_conditions_and_errors_come_back_as_from_the_server(stack: MotoStack, handed_over: list[str]):
    table = stack.env["WANFLOW_ADMISSION_TABLE"]
    dynamodb = stack.boto3_client("dynamodb")
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "in-process"}, "n": {"N": "1"}})
    assert dynamodb.get_item(TableName=table, Key={"pk": {"S": "in-process"}})["Item"]["n"] == {"N": "1"}
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
        dynamodb.put_item(
            TableName=table, Item={"pk": {"S": "in-process"}}, ConditionExpression="attribute_not_exists(pk)"
        )
    assert handed_over


def test_lambda_invokes_run_the_local_handlers(stack: MotoStack, handed_over: list[str]):
    reply = stack.boto3_client("lambda").invoke(
        FunctionName=stack.resources["StatusFunction"], Payload=json.dumps({"job_id": "x"})
    )
    assert json.loads(reply["Payload"].read()) == {"echo": {"job_id": "x"}}
    assert handed_over


def test_the_environ_is_the_one_werkzeugs_server_builds():
    environ = wsgi_environ(
        "PUT",
        "http://127.0.0.1:5000/bucket/a%20b%2Fc?partNumber=1&uploadId=x",
        [("Content-Type", b"video/mp4"), ("x-amz-meta-under_score", "v"), ("Transfer-Encoding", "chunked")],
        b"12345",
    )
    assert environ["PATH_INFO"] == "/bucket/a b/c"
    assert environ["RAW_URI"] == "/bucket/a%20b%2Fc?partNumber=1&uploadId=x"
    assert environ["QUERY_STRING"] == "partNumber=1&uploadId=x"
    assert environ["HTTP_HOST"] == "127.0.0.1:5000"
    assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("video/mp4", "5")
    assert "HTTP_TRANSFER_ENCODING" not in environ
    assert environ["wsgi.input"].read() == b"12345"
    assert environ["HTTP_X_AMZ_META_UNDER_SCORE"] == "v"  # restored the way moto's request handler does
