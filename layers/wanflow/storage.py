"""S3 adapter: presigned URLs, small objects, and the copy of a video from its URL into S3.

The copy itself lives in `wanflow.adapters.video_copy`; `copy_url_to_s3` here runs it with the shared S3 client.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from wanflow.adapters import video_copy
from wanflow.adapters.video_copy import StoredObject
from wanflow.aws import client

if TYPE_CHECKING:
    import httpx


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.lstrip("/"):
        raise ValueError(f"not an s3://bucket/key URI: {uri}")
    return parts.netloc, parts.path.lstrip("/")


def presigned_get(bucket: str, key: str, ttl_seconds: int) -> str:
    return client("s3").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl_seconds
    )


def presigned_post(bucket: str, key: str, content_type: str, max_bytes: int, ttl_seconds: int) -> dict[str, Any]:
    return client("s3").generate_presigned_post(
        Bucket=bucket,
        Key=key,
        Fields={"Content-Type": content_type},
        Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
        ExpiresIn=ttl_seconds,
    )


def put_bytes(bucket: str, key: str, data: bytes, content_type: str) -> None:
    client("s3").put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)


def put_json(bucket: str, key: str, document: Any) -> None:
    put_bytes(bucket, key, json.dumps(document, indent=2).encode(), "application/json")


def get_bytes(bucket: str, key: str, *, version_id: str | None = None, max_bytes: int | None = None) -> bytes:
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        params["VersionId"] = version_id
    response = client("s3").get_object(**params)
    if max_bytes is not None and response["ContentLength"] > max_bytes:
        response["Body"].close()
        raise ValueError(f"s3://{bucket}/{key} is {response['ContentLength']} bytes; at most {max_bytes}")
    return response["Body"].read()


def sha256_of(bucket: str, key: str) -> str:
    """SHA-256 of an object, streamed (videos can be gigabytes)."""
    digest = hashlib.sha256()
    body = client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    for chunk in body.iter_chunks(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def head(bucket: str, key: str, *, version_id: str | None = None) -> dict[str, Any] | None:
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        params["VersionId"] = version_id
    try:
        return client("s3").head_object(**params)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}:
            return None
        raise


def copy_url_to_s3(
    url: str,
    bucket: str,
    key: str,
    *,
    content_type: str,
    metadata: dict[str, str],
    http: httpx.Client | None = None,
) -> StoredObject:
    """Stream `url` into s3://bucket/key, verified; see `wanflow.adapters.video_copy.copy_url_to_s3`."""
    return video_copy.copy_url_to_s3(
        client("s3"), url, bucket, key, content_type=content_type, metadata=metadata, http=http
    )
