"""A job from an object uploaded under `incoming/` (docs/product.md section 3), queued like an API job; a batch
from an `incoming/*.jsonl` (section 9).

One object version gives one job, however often S3 delivers its event. Input that can never work ends as a
FAILED job with a notification. DashScope's limits never stall the intake: the admission queue paces creates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from wanflow.callers import ANONYMOUS, INCOMING_PREFIX, Caller, normalize_principal
from wanflow.errors import FieldError, InvalidRequest, JobErrorCode
from wanflow.jobs import Job, Provider, Source, derived_job_id, utc_now
from wanflow.request import parse_json_text
from wanflow.s3_events import S3Notification
from wanflow.usecases import admission, batches, ending, submit
from wanflow.usecases.context import Dependencies

logger = logging.getLogger(__name__)
MAX_MANIFEST_BYTES = 1024 * 1024
# A batch file holds up to 1,000 job bodies: as much as a POST /v1/batches body may be (wanflow.http).
MAX_BATCH_FILE_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class CreatedObject:
    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    uploader: str = ANONYMOUS  # the uploader's principal (wanflow.callers): the owner of the job it starts


def objects_in_notification(notification: S3Notification) -> list[CreatedObject]:
    """The created objects under incoming/ in one S3 event notification (S3's test event has none)."""
    objects = []
    for record in notification.Records:
        if not record.eventName.startswith("ObjectCreated") or record.s3 is None:
            continue
        key = record.key
        if not key.startswith(INCOMING_PREFIX) or key.endswith("/"):
            continue
        s3_object = record.s3.object
        uploader = normalize_principal(record.userIdentity.principalId if record.userIdentity else None)
        objects.append(CreatedObject(record.s3.bucket.name, key, s3_object.versionId, s3_object.eTag, uploader))
    return objects


def objects_in_message(body: str) -> list[CreatedObject]:
    """The created objects under incoming/ in one SQS message body (an S3 event notification)."""
    return objects_in_notification(S3Notification.model_validate_json(body))


def start_intake_job(deps: Dependencies, created: CreatedObject, *, receive_count: int = 1) -> Job | None:
    """Queue the job for one object (the admission queue submits it when its model has room).

    An error is raised so that SQS hands the message back and it is tried again, except on the message's last
    receive: then the object gets a FAILED job and its notification saying why, instead of vanishing into the
    dead-letter queue unannounced.
    """
    try:
        return submit_uploaded_object(deps, created)
    except Exception as exc:
        if receive_count < deps.settings.intake_max_receives:
            raise
        logger.exception("intake gave up on an object", extra={"key": created.key})
        return _give_up(deps, created, exc)


def _give_up(deps: Dependencies, created: CreatedObject, exc: Exception) -> Job | None:
    job_id = _job_id(created)
    existing = deps.jobs.get(job_id)
    if existing is not None:
        return existing  # it is queued or further on: the queue and the sweeper take it from here
    message = (
        f"{_origin(created)} could not be processed in {deps.settings.intake_max_receives} attempts "
        f"({type(exc).__name__}); upload it again to retry"
    )
    return _record_failed_intake(deps, job_id, created, JobErrorCode.INTERNAL_ERROR, message)


def _job_id(created: CreatedObject) -> str:
    return derived_job_id("s3", created.bucket, created.key, created.version_id or created.etag or "")


def _origin(created: CreatedObject) -> str:
    return f"s3://{created.bucket}/{created.key}" + (f"#{created.version_id}" if created.version_id else "")


def submit_uploaded_object(deps: Dependencies, created: CreatedObject) -> Job | None:
    """Queue the job for one uploaded object under incoming/; None for objects that are only data.

    The job belongs to the uploader, and may use as inputs objects under incoming/ and the uploader's own uploads.
    """
    bucket, key, version_id = created.bucket, created.key, created.version_id
    job_id = _job_id(created)
    existing = deps.jobs.get(job_id)
    if existing is not None:
        return existing  # a duplicate event
    origin = _origin(created)
    if _is_batch_file(key):
        try:
            _submit_jsonl_batch(deps, created, origin)
        except InvalidRequest as exc:
            return _record_rejected_intake(deps, job_id, created, origin, exc, what="batch")
        return None
    try:
        body = _intake_body(deps, bucket, key, version_id)
        if body is None:
            return None
        uploader = Caller(principal=created.uploader, arn=created.uploader)
        request = submit.validate(deps, body, uploader, intake_upload=True)
    except InvalidRequest as exc:
        return _record_rejected_intake(deps, job_id, created, origin, exc)
    job = submit.new_job(deps, job_id, request, body, Source.S3, owner=created.uploader, origin=origin)
    if not deps.jobs.create(job):
        return deps.jobs.get(job_id)
    deps.telemetry.job_submitted(job)
    admission.admit(deps, job)
    return job


def _is_batch_file(key: str) -> bool:
    return key.lower().endswith(".jsonl")


def _submit_jsonl_batch(deps: Dependencies, created: CreatedObject, origin: str) -> None:
    """A batch from `incoming/*.jsonl`, one job body a line (blank lines skipped), relative paths resolved like a
    manifest's. As for `POST /v1/batches` without `partial`, one bad line refuses the whole file: nothing is
    queued and the file's FAILED job lists each bad line's errors (`line 4.input.img_url`). The batch id derives
    from the object version, so a redelivered event changes nothing."""
    bucket, key = created.bucket, created.key
    try:
        data = deps.objects.get_bytes(bucket, key, version_id=created.version_id, max_bytes=MAX_BATCH_FILE_BYTES)
    except (ValueError, LookupError) as exc:  # too large, or deleted before it was read
        raise InvalidRequest([FieldError("file", str(exc))]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeError:
        raise InvalidRequest([FieldError("file", "is not UTF-8 text")]) from None
    items: list[Any] = []
    labels: list[str] = []
    unreadable: dict[int, list[FieldError]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(_resolve_manifest_paths(parse_json_text(line, field=f"line {number}"), bucket, key))
        except InvalidRequest as exc:  # reported with the other lines' errors
            unreadable[len(items)] = exc.errors
            items.append(None)
        labels.append(f"line {number}")
    errors: list[FieldError] = []
    batches.check_item_count(len(items), "file", errors)
    if errors:
        raise InvalidRequest(errors)
    uploader = Caller(principal=created.uploader, arn=created.uploader)
    batches.submit_batch(
        deps,
        derived_job_id("s3-batch", bucket, key, created.version_id or created.etag or ""),
        items,
        labels=labels,
        caller=uploader,
        source=Source.S3,
        request_fingerprint=created.version_id or created.etag or "",
        origin=origin,
        intake_upload=True,
        unreadable=unreadable,
    )


def _intake_body(deps: Dependencies, bucket: str, key: str, version_id: str | None) -> dict[str, Any] | None:
    if key.lower().endswith(".json"):
        try:
            data = deps.objects.get_bytes(bucket, key, version_id=version_id, max_bytes=MAX_MANIFEST_BYTES)
        except (ValueError, LookupError) as exc:  # too large, or deleted before it was read
            raise InvalidRequest([FieldError("manifest", str(exc))]) from None
        return _resolve_manifest_paths(parse_json_text(data, field="manifest"), bucket, key)
    head = deps.objects.head(bucket, key, version_id=version_id)
    metadata = (head or {}).get("Metadata", {})
    if "prompt" not in metadata:
        return None  # an image without a prompt is data for a manifest
    return _body_from_object_metadata(bucket, key, metadata)


def _record_rejected_intake(
    deps: Dependencies, job_id: str, created: CreatedObject, origin: str, exc: InvalidRequest, *, what: str = "job"
) -> Job | None:
    shown = exc.errors[: InvalidRequest.MAX_ERRORS]  # a refused batch may list thousands; the job keeps the first
    details = "; ".join(f"{error.field}: {error.message}" for error in shown)
    if len(exc.errors) > len(shown):
        details += f"; and {len(exc.errors) - len(shown)} more"
    return _record_failed_intake(deps, job_id, created, exc.code, f"{origin} was not a valid {what}: {details}")


def _record_failed_intake(
    deps: Dependencies, job_id: str, created: CreatedObject, code: str, message: str
) -> Job | None:
    """A FAILED job, with its notification, for an object that never became a task."""
    bucket, key = created.bucket, created.key
    now = utc_now()
    job = Job(
        job_id=job_id,
        source=Source.S3,
        owner=created.uploader,
        model=deps.settings.default_model,
        # The job shows the object it came from, never the refused content itself.
        request={
            "input": {} if key.lower().endswith((".json", ".jsonl")) else {"img_url": f"s3://{bucket}/{key}"},
            "parameters": {},
        },
        provider=Provider(region=deps.settings.dashscope_region),
        created_at=now,
        updated_at=now,
        origin=_origin(created),
    )
    if not deps.jobs.create(job):
        return deps.jobs.get(job_id)
    return ending.end_failed(deps, job_id, code, message)


def _resolve_manifest_paths(body: Any, bucket: str, key: str) -> Any:
    """In a manifest, img_url/audio_url may name a key relative to the manifest itself."""
    if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
        return body
    folder = key.rsplit("/", 1)[0] if "/" in key else ""
    task_input = dict(body["input"])
    for field in ("img_url", "audio_url"):
        value = task_input.get(field)
        if isinstance(value, str) and value and ":" not in value.split("/", 1)[0]:
            relative = value.lstrip("./")
            task_input[field] = f"s3://{bucket}/{folder}/{relative}" if folder else f"s3://{bucket}/{relative}"
    return {**body, "input": task_input}


_INT_PARAMETERS = ("duration", "seed")
_BOOL_PARAMETERS = ("prompt_extend", "watermark", "audio")
_STR_PARAMETERS = ("resolution", "shot_type")


def _body_from_object_metadata(bucket: str, key: str, metadata: dict[str, str]) -> dict[str, Any]:
    """The job body for an image uploaded with `prompt` (and optional parameters) as object metadata."""
    errors: list[FieldError] = []
    parameters: dict[str, Any] = {}
    for name in _INT_PARAMETERS:
        if name in metadata:
            try:
                parameters[name] = int(metadata[name])
            except ValueError:
                errors.append(FieldError(f"metadata.{name}", "must be a whole number"))
    for name in _BOOL_PARAMETERS:
        if name in metadata:
            value = metadata[name].strip().lower()
            if value not in {"true", "false"}:
                errors.append(FieldError(f"metadata.{name}", "must be true or false"))
            else:
                parameters[name] = value == "true"
    for name in _STR_PARAMETERS:
        if name in metadata:
            parameters[name] = metadata[name]
    if errors:
        raise InvalidRequest(errors)
    task_input = {"prompt": metadata["prompt"], "img_url": f"s3://{bucket}/{key}"}
    if "negative_prompt" in metadata:
        task_input["negative_prompt"] = metadata["negative_prompt"]
    body: dict[str, Any] = {"input": task_input, "parameters": parameters}
    if "model" in metadata:
        body["model"] = metadata["model"]
    return body
