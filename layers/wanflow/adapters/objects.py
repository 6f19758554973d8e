"""S3 adapter: presigned URLs, small objects, and the verified copy of a video from its URL (`video_copy`)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from wanflow.adapters import video_copy
from wanflow.ports import StoredObject

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.lstrip("/"):
        raise ValueError(f"not an s3://bucket/key URI: {uri}")
    return parts.netloc, parts.path.lstrip("/")


class S3Objects:
    """The `ObjectStorage` of a deployed stack; `s3` is a boto3 S3 client."""

    def __init__(self, s3: S3Client) -> None:
        self._s3 = s3

    def presigned_get(self, bucket: str, key: str, ttl_seconds: int, *, download_name: str | None = None) -> str:
        params = {"Bucket": bucket, "Key": key}
        if download_name is not None:
            # A link's `download` attribute is ignored across origins; S3's answer header is not. A <video> element
            # still plays an attachment.
            params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'
        return self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl_seconds)

    def presigned_post(
        self, bucket: str, key: str, content_type: str, max_bytes: int, ttl_seconds: int
    ) -> dict[str, Any]:
        return self._s3.generate_presigned_post(
            Bucket=bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=ttl_seconds,
        )

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        self._s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def put_json(self, bucket: str, key: str, document: Any) -> None:
        self.put_bytes(bucket, key, json.dumps(document, indent=2).encode(), "application/json")

    def get_bytes(self, bucket: str, key: str, *, version_id: str | None = None, max_bytes: int | None = None) -> bytes:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        try:
            response = self._s3.get_object(**params)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NoSuchVersion"}:
                raise LookupError(f"s3://{bucket}/{key} does not exist") from None
            raise
        if max_bytes is not None and response["ContentLength"] > max_bytes:
            response["Body"].close()
            raise ValueError(f"s3://{bucket}/{key} is {response['ContentLength']} bytes; at most {max_bytes}")
        return response["Body"].read()

    def sha256_of(self, bucket: str, key: str) -> str:
        """SHA-256 of an object, streamed (videos can be gigabytes)."""
        digest = hashlib.sha256()
        body = self._s3.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(1024 * 1024):
            digest.update(chunk)
        return digest.hexdigest()

    def head(self, bucket: str, key: str, *, version_id: str | None = None) -> dict[str, Any] | None:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        try:
            return dict(self._s3.head_object(**params))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}:
                return None
            raise

    def copy_url_to_s3(
        self, url: str, bucket: str, key: str, *, content_type: str, metadata: dict[str, str]
    ) -> StoredObject:
        return video_copy.copy_url_to_s3(self._s3, url, bucket, key, content_type=content_type, metadata=metadata)
