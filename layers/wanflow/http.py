"""HTTP concerns shared by the API handler: body and query parsing, and errors as replies."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from wanflow.errors import DashScopeError, FieldError, InvalidRequest, NotFound, PayloadTooLarge, WanflowError
from wanflow.jobs import JobStatus

# Lambda takes at most 6 MB per synchronous invocation; past this, a client should use POST /v1/uploads.
MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def parse_json_body(decoded: str | None, raw: str | None) -> Any:
    if raw is not None and len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"the request body is larger than {MAX_BODY_BYTES} bytes; upload the image with POST /v1/uploads "
            "and pass its s3:// URI as img_url"
        )
    if not decoded:
        raise InvalidRequest([FieldError("body", "is empty; send a JSON object")])
    try:
        return json.loads(decoded)
    except ValueError as exc:
        raise InvalidRequest([FieldError("body", f"is not valid JSON: {exc}")]) from None


def job_id_from_path(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise NotFound(f"job {job_id} does not exist")
    return job_id


def list_query(query: dict[str, str]) -> tuple[JobStatus | None, int, str | None]:
    errors: list[FieldError] = []
    status: JobStatus | None = None
    if query.get("status"):
        try:
            status = JobStatus(query["status"].upper())
        except ValueError:
            errors.append(FieldError("status", f"must be one of {', '.join(JobStatus)}"))
    limit = DEFAULT_LIST_LIMIT
    if query.get("limit"):
        try:
            limit = int(query["limit"])
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIST_LIMIT:
            errors.append(FieldError("limit", f"must be a whole number from 1 to {MAX_LIST_LIMIT}"))
    if errors:
        raise InvalidRequest(errors)
    return status, limit, query.get("cursor") or None


def principal_of(event: dict[str, Any]) -> str:
    """Who is calling (the IAM principal); idempotency keys are scoped to it."""
    iam = event.get("requestContext", {}).get("authorizer", {}).get("iam", {}) or {}
    return str(iam.get("userArn") or iam.get("callerId") or "anonymous")


def error_response(error: WanflowError, request_id: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers for an error; DashScope's rejections keep DashScope's code and message."""
    body = error.to_dict()
    body["request_id"] = request_id
    headers: dict[str, str] = {}
    retry_after = getattr(error, "retry_after_seconds", None)
    if error.http_status == 429:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after or 1)))
    if isinstance(error, DashScopeError) and error.request_id:
        body["provider_request_id"] = error.request_id
    return error.http_status, body, headers
