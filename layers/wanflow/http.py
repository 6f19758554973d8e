"""HTTP concerns shared by the API handler: body and query parsing, and errors as replies."""

from __future__ import annotations

import base64
import math
import re
from typing import Any

from wanflow.errors import DashScopeError, FieldError, InvalidRequest, NotFound, PayloadTooLarge, WanflowError
from wanflow.jobs import JobStatus
from wanflow.request import parse_json_text

# Lambda takes at most 6 MB per synchronous invocation; past this, a client should use POST /v1/uploads.
MAX_BODY_BYTES = 5 * 1024 * 1024
IDEMPOTENCY_KEY_MAX_CHARS = 255
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def parse_json_body(raw: str | None, *, base64_encoded: bool) -> Any:
    """The request body as JSON; 413 past the size limit, 400 naming `body` for anything that is not JSON."""
    if raw is not None and len(raw) > (MAX_BODY_BYTES * 4 // 3 + 4 if base64_encoded else MAX_BODY_BYTES):
        raise PayloadTooLarge(
            f"the request body is larger than {MAX_BODY_BYTES} bytes; upload the image with POST /v1/uploads "
            "and pass its s3:// URI as img_url"
        )
    if not raw:
        raise InvalidRequest([FieldError("body", "is empty; send a JSON object")])
    try:
        data = base64.b64decode(raw, validate=True) if base64_encoded else raw.encode("utf-8", "surrogatepass")
        text = data.decode("utf-8")
    except (ValueError, UnicodeError):
        raise InvalidRequest([FieldError("body", "is not UTF-8 text; send a JSON object")]) from None
    return parse_json_text(text, field="body")


def job_id_from_path(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise NotFound(f"job {job_id} does not exist")
    return job_id


def batch_id_from_path(batch_id: str) -> str:
    if not _JOB_ID.match(batch_id):  # batch ids look like job ids
        raise NotFound(f"batch {batch_id} does not exist")
    return batch_id


def page_query(query: dict[str, str], *, default: int, most: int) -> tuple[int, str | None]:
    """`limit` and `cursor` of a paged read (`GET /v1/batches/{id}`: its job ids); errors name the parameter."""
    errors: list[FieldError] = []
    limit, cursor = _limit_and_cursor(query, default, most, errors)
    if errors:
        raise InvalidRequest(errors)
    return limit, cursor


def list_query(query: dict[str, str]) -> tuple[JobStatus | None, int, str | None]:
    """`status`, `limit` and `cursor` of `GET /v1/jobs`; a parameter given empty is an error, not a default."""
    errors: list[FieldError] = []
    status: JobStatus | None = None
    if "status" in query:
        try:
            status = JobStatus(query["status"].upper())
        except ValueError:
            errors.append(FieldError("status", f"must be one of {', '.join(JobStatus)}"))
    limit, cursor = _limit_and_cursor(query, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, errors)
    if errors:
        raise InvalidRequest(errors)
    return status, limit, cursor


def _limit_and_cursor(
    query: dict[str, str], default: int, most: int, errors: list[FieldError]
) -> tuple[int, str | None]:
    limit = default
    if "limit" in query:
        raw_limit = query["limit"].strip()
        # isascii: str.isdigit() also accepts digits int() refuses, such as "²"
        limit = int(raw_limit) if raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 4 else -1
        if not 1 <= limit <= most:
            errors.append(FieldError("limit", f"must be a whole number from 1 to {most}"))
    cursor = query.get("cursor")
    if cursor is not None and not cursor:
        errors.append(FieldError("cursor", "is empty; pass the next_cursor of the previous page, or no cursor"))
    return limit, cursor


def idempotency_key_of(headers: dict[str, str]) -> str | None:
    """The Idempotency-Key header: 1-255 printable ASCII characters, or absent."""
    key = headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_CHARS or not all(" " <= char <= "~" for char in key):
        raise InvalidRequest(
            [FieldError("Idempotency-Key", f"must be 1-{IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters")]
        )
    return key


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
