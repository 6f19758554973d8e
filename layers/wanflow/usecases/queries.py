"""Reads of the HTTP API (`GET /v1/jobs`, `GET /v1/jobs/{id}`) and upload grants (`POST /v1/uploads`).

Every read is the caller's: their own jobs only, unless they are an admin (wanflow.callers).
"""

from __future__ import annotations

import mimetypes
import uuid
from typing import Any

from wanflow import cursors
from wanflow.callers import Caller, uploads_prefix
from wanflow.capabilities import IMAGE_MIME_TYPES
from wanflow.errors import FieldError, InvalidRequest
from wanflow.jobs import JobStatus
from wanflow.usecases.context import Dependencies, require_job
from wanflow.usecases.views import job_view, job_views

UPLOAD_CONTENT_TYPES = (*IMAGE_MIME_TYPES, "audio/wav", "audio/x-wav", "audio/mpeg", "audio/mp3")


def get_job(deps: Dependencies, job_id: str, caller: Caller) -> dict[str, Any]:
    return job_view(deps, require_job(deps, job_id, caller))


def list_jobs(
    deps: Dependencies, caller: Caller, *, status: JobStatus | None, limit: int, cursor: str | None
) -> dict[str, Any]:
    """A page of the caller's jobs (everyone's for an admin), newest first, with a signed cursor for the next."""
    owner = None if caller.is_admin else caller.principal
    # A cursor is good for the listing it came from only: the same caller (or admin view) and status filter.
    scope = f"{'*' if owner is None else owner}|{status.value if status else '*'}"
    start_after = cursors.verify(deps.cursor_key(), scope, cursor) if cursor else None
    jobs, last_key = deps.jobs.page(owner=owner, status=status, limit=limit, start_after=start_after)
    next_cursor = cursors.sign(deps.cursor_key(), scope, last_key) if last_key else None
    return {"jobs": job_views(deps, jobs), "next_cursor": next_cursor}


def create_upload(deps: Dependencies, caller: Caller, content_type: str) -> dict[str, Any]:
    """A presigned POST for one image or audio file under the caller's own prefix, and its s3:// URI."""
    if content_type not in UPLOAD_CONTENT_TYPES:
        raise InvalidRequest([FieldError("content_type", f"must be one of {', '.join(UPLOAD_CONTENT_TYPES)}")])
    extension = mimetypes.guess_extension(content_type) or ""
    key = f"{uploads_prefix(caller.principal)}{uuid.uuid4().hex}{extension}"
    settings = deps.settings
    post = deps.objects.presigned_post(
        settings.intake_bucket, key, content_type, settings.upload_max_bytes, settings.upload_url_ttl_seconds
    )
    return {
        "url": post["url"],
        "fields": post["fields"],
        "s3_uri": f"s3://{settings.intake_bucket}/{key}",
        "expires_in": settings.upload_url_ttl_seconds,
        "max_bytes": settings.upload_max_bytes,
    }
