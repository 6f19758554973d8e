"""Reads of the HTTP API (`GET /v1/jobs`, `GET /v1/jobs/{id}`) and upload grants (`POST /v1/uploads`)."""

from __future__ import annotations

import mimetypes
import uuid
from typing import Any

from wanflow.capabilities import IMAGE_MIME_TYPES
from wanflow.errors import FieldError, InvalidRequest
from wanflow.jobs import JobStatus
from wanflow.usecases.context import Dependencies, require_job
from wanflow.usecases.views import job_view

UPLOAD_CONTENT_TYPES = (*IMAGE_MIME_TYPES, "audio/wav", "audio/x-wav", "audio/mpeg", "audio/mp3")


def get_job(deps: Dependencies, job_id: str) -> dict[str, Any]:
    return job_view(deps, require_job(deps, job_id))


def list_jobs(deps: Dependencies, *, status: JobStatus | None, limit: int, cursor: str | None) -> dict[str, Any]:
    try:
        jobs, next_cursor = deps.jobs.page(status=status, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise InvalidRequest([FieldError("cursor", str(exc))]) from None
    return {"jobs": [job_view(deps, job) for job in jobs], "next_cursor": next_cursor}


def create_upload(deps: Dependencies, content_type: str) -> dict[str, Any]:
    """A presigned POST for one image or audio file in the intake bucket, and the s3:// URI to use it by."""
    if content_type not in UPLOAD_CONTENT_TYPES:
        raise InvalidRequest([FieldError("content_type", f"must be one of {', '.join(UPLOAD_CONTENT_TYPES)}")])
    extension = mimetypes.guess_extension(content_type) or ""
    key = f"uploads/{uuid.uuid4().hex}{extension}"
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
