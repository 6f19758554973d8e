"""The job request (DashScope's create-task body plus `metadata`) and every rule checked before money is spent.

`parse_job_request` first checks shapes and types (pydantic, strict: `"5"` is not a duration and `1` is not a
boolean), then the model's rules from `wanflow.capabilities`, and returns the request with every default filled
in, so that the stored request says exactly what was asked of DashScope. All problems are reported together, each
naming its field.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wanflow.capabilities import (
    IMAGE_MIME_TYPES,
    MODELS,
    SEED_MAX,
    SEED_MIN,
    Audio,
    ModelSpec,
    find_model,
    models_in_region,
)
from wanflow.errors import FieldError, InvalidRequest
from wanflow.webhooks import WebhookRequest, check_webhook

METADATA_MAX_ENTRIES = 20
METADATA_KEY_MAX_CHARS = 64
METADATA_VALUE_MAX_CHARS = 512
# https:// and s3:// sources. Every job must fit in one DynamoDB item (400 KB) and its event in one SNS message
# (256 KB), so nothing a job stores or publishes may be unbounded; real signed URLs are well under 2 KB.
URL_MAX_CHARS = 2048
# A job body nests four levels (body > input > ...); anything far deeper is hostile, not a request.
MAX_JSON_DEPTH = 32
MODEL_NAME_MAX_CHARS = 64

# The choices of these fields, also offered by `GET /v1/models` (wanflow.usecases.models).
ShotType = Literal["single", "multi"]
RequestPriority = Literal["normal", "high"]
SHOT_TYPES: tuple[str, ...] = get_args(ShotType)
PRIORITIES: tuple[str, ...] = get_args(RequestPriority)

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<payload>.*)$", re.DOTALL)
# Pillow's format names for the MIME types DashScope accepts.
_PIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/bmp": "BMP", "image/webp": "WEBP"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class JobInput(_Strict):
    prompt: str | None = None
    negative_prompt: str | None = None
    img_url: str
    audio_url: str | None = None


class JobParameters(_Strict):
    resolution: str | None = None
    duration: int | None = None
    prompt_extend: bool | None = None
    watermark: bool | None = None
    seed: int | None = None
    shot_type: ShotType | None = None
    audio: bool | None = None


class JobRequest(_Strict):
    model: str | None = None
    input: JobInput
    parameters: JobParameters = Field(default_factory=JobParameters)
    metadata: dict[str, str] = Field(default_factory=dict)
    # wanflow's own: a high-priority job goes ahead of the normal ones of its model in the admission queue.
    priority: RequestPriority = "normal"
    # wanflow's own: where the job's events are delivered, signed (wanflow.webhooks).
    webhook: WebhookRequest | None = None

    @property
    def spec(self) -> ModelSpec:
        spec = find_model(self.model or "")
        if spec is None:  # parse_job_request never returns such a request
            raise LookupError(f"unknown model {self.model!r}")
        return spec

    @property
    def has_audio(self) -> bool:
        return self.spec.produces_audio(self.parameters.audio)

    def dashscope_body(self, *, img_url: str, audio_url: str | None = None) -> dict[str, Any]:
        """The exact create-task body, with image and audio sources resolved to URLs DashScope can fetch."""
        task_input: dict[str, Any] = {"img_url": img_url}
        if self.input.prompt is not None:
            task_input["prompt"] = self.input.prompt
        if self.input.negative_prompt is not None:
            task_input["negative_prompt"] = self.input.negative_prompt
        if audio_url is not None:
            task_input["audio_url"] = audio_url
        return {
            "model": self.model,
            "input": task_input,
            "parameters": self.parameters.model_dump(exclude_none=True),
        }

    def public_dict(self) -> dict[str, Any]:
        """The request as shown to users and logs: a data-URI image is summarised, never echoed."""
        body = self.model_dump(mode="json", exclude_none=True)
        body["input"]["img_url"] = redact_data_uri(self.input.img_url)
        return body


def redact_data_uri(url: str) -> str:
    match = _DATA_URI.match(url)
    if match is None:
        return url
    return f"data:{match['mime']};base64,<{len(match['payload'])} characters>"


def parse_json_text(text: str | bytes, *, field: str) -> Any:
    """JSON from untrusted text, refusing nesting deeper than MAX_JSON_DEPTH (400 naming `field`)."""
    try:
        document = json.loads(text)
    except RecursionError:
        document = None
        too_deep = True
    except (ValueError, UnicodeError) as exc:
        raise InvalidRequest([FieldError(field, f"is not valid JSON: {exc}")]) from None
    else:
        too_deep = _depth_exceeds(document, MAX_JSON_DEPTH)
    if too_deep:
        raise InvalidRequest([FieldError(field, f"is nested more than {MAX_JSON_DEPTH} levels deep")])
    return document


def _depth_exceeds(document: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (iterative: a hostile document must not exhaust the stack)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_job_request(
    body: Any,
    *,
    region: str | None,
    default_model: str,
    intake_bucket: str | None = None,
    allow_http: bool = False,
    ignore_unknown_fields: bool = False,
    allow_loopback_webhooks: bool = False,
) -> JobRequest:
    """Validate a create-job body and fill its defaults; raises InvalidRequest naming every bad field.

    `region=None` accepts a model from any region (the emulator), `allow_http` accepts plain http:// sources (the
    emulator fetching from a local S3), `ignore_unknown_fields` drops fields this version does not know (the
    emulator, like DashScope, tolerates the extras real clients send), `allow_loopback_webhooks` accepts webhook
    URLs on loopback, plain http:// included (local mode).
    """
    if not isinstance(body, dict):
        raise InvalidRequest([FieldError("body", "must be a JSON object")])
    model = body.get("model")
    if isinstance(model, str) and len(model) > MODEL_NAME_MAX_CHARS:
        raise InvalidRequest([FieldError("model", f"is {len(model)} characters; model names are short")])
    if ignore_unknown_fields:
        body = _known_fields_only(body)
    try:
        request = JobRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest([_field_error(error) for error in exc.errors()]) from None

    errors: list[FieldError] = []
    spec = _resolve_model(request.model or default_model, region, errors)
    if spec is None:
        raise InvalidRequest(errors)
    request.model = spec.name_in(region) if region else (request.model or spec.name)
    _fill_defaults(request.parameters, spec)
    _check_parameters(request, spec, errors)
    _check_prompts(request, spec, errors)
    _check_metadata(request.metadata, errors)
    _check_image_source(request.input.img_url, spec, intake_bucket, allow_http, errors)
    if request.input.audio_url is not None:
        _check_audio_source(request, spec, intake_bucket, allow_http, errors)
    if request.webhook is not None:
        check_webhook(request.webhook, allow_loopback=allow_loopback_webhooks, errors=errors)
    if errors:
        raise InvalidRequest(errors)
    return request


def _known_fields_only(body: dict[str, Any]) -> dict[str, Any]:
    known = {name: set(model.model_fields) for name, model in (("input", JobInput), ("parameters", JobParameters))}
    cleaned = {key: value for key, value in body.items() if key in JobRequest.model_fields}
    for section, fields in known.items():
        if isinstance(cleaned.get(section), dict):
            cleaned[section] = {key: value for key, value in cleaned[section].items() if key in fields}
    return cleaned


def _field_error(error: Any) -> FieldError:
    location = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "extra_forbidden":
        return FieldError(location, "is not a known field")
    if error["type"] == "missing":
        return FieldError(location, "is required")
    return FieldError(location, error["msg"])


def _resolve_model(name: str, region: str | None, errors: list[FieldError]) -> ModelSpec | None:
    spec = find_model(name)
    if spec is None:
        errors.append(FieldError("model", f"unknown model {name!r}; image-to-video models: {_model_list(region)}"))
        return None
    if region is not None and spec.name_in(region) is None:
        errors.append(
            FieldError("model", f"{name} is not available in region {region}; available: {_model_list(region)}")
        )
        return None
    return spec


def _model_list(region: str | None) -> str:
    names = models_in_region(region) if region else sorted(MODELS)
    return ", ".join(names)


def default_parameters(spec: ModelSpec) -> dict[str, Any]:
    """The parameters a job of `spec` gets for those it leaves out: what `parse_job_request` fills in."""
    parameters = JobParameters()
    _fill_defaults(parameters, spec)
    return parameters.model_dump(exclude_none=True)


def _fill_defaults(parameters: JobParameters, spec: ModelSpec) -> None:
    if parameters.resolution is None:
        parameters.resolution = spec.default_resolution
    if parameters.duration is None:
        parameters.duration = spec.default_duration
    if parameters.prompt_extend is None:
        parameters.prompt_extend = True
    if parameters.watermark is None:
        parameters.watermark = False
    if spec.audio is Audio.OPTIONAL and parameters.audio is None:
        parameters.audio = True
    if spec.shot_type and parameters.shot_type is None:
        parameters.shot_type = "single"


def _check_parameters(request: JobRequest, spec: ModelSpec, errors: list[FieldError]) -> None:
    parameters = request.parameters
    if parameters.resolution not in spec.resolutions:
        errors.append(
            FieldError(
                "parameters.resolution",
                f"{(parameters.resolution or '')[:16]!r} is not supported by {spec.name}; "
                f"use one of {', '.join(spec.resolutions)}",
            )
        )
    if parameters.duration not in spec.durations:
        errors.append(FieldError("parameters.duration", f"{spec.name} supports {_durations(spec)} seconds"))
    if parameters.seed is not None and not SEED_MIN <= parameters.seed <= SEED_MAX:
        errors.append(FieldError("parameters.seed", f"must be between {SEED_MIN} and {SEED_MAX}"))
    if parameters.audio is not None and spec.audio is not Audio.OPTIONAL:
        behaviour = "always has audio" if spec.audio is Audio.ALWAYS else "is always silent"
        errors.append(
            FieldError("parameters.audio", f"{spec.name} {behaviour}; only wan2.6-i2v-flash takes this parameter")
        )
    if parameters.shot_type is not None and not spec.shot_type:
        errors.append(FieldError("parameters.shot_type", f"{spec.name} does not support shot_type (wan2.6 only)"))
    if parameters.shot_type == "multi" and parameters.prompt_extend is False:
        errors.append(FieldError("parameters.shot_type", "shot_type 'multi' needs parameters.prompt_extend true"))


def _durations(spec: ModelSpec) -> str:
    durations = spec.durations
    if len(durations) > 3 and durations == tuple(range(durations[0], durations[-1] + 1)):
        return f"whole numbers from {durations[0]} to {durations[-1]}"
    return " or ".join(str(duration) for duration in durations)


def _check_prompts(request: JobRequest, spec: ModelSpec, errors: list[FieldError]) -> None:
    # DashScope silently truncates over-long prompts; wanflow refuses them so that nothing is lost unseen.
    prompt, negative = request.input.prompt, request.input.negative_prompt
    if prompt is not None and len(prompt) > spec.prompt_max_chars:
        errors.append(
            FieldError(
                "input.prompt", f"is {len(prompt)} characters; {spec.name} takes at most {spec.prompt_max_chars}"
            )
        )
    if negative is not None and len(negative) > spec.negative_prompt_max_chars:
        errors.append(
            FieldError(
                "input.negative_prompt",
                f"is {len(negative)} characters; at most {spec.negative_prompt_max_chars} are allowed",
            )
        )


def _check_metadata(metadata: dict[str, str], errors: list[FieldError]) -> None:
    if len(metadata) > METADATA_MAX_ENTRIES:
        errors.append(FieldError("metadata", f"has {len(metadata)} entries; at most {METADATA_MAX_ENTRIES}"))
    for key, value in metadata.items():
        if not key or len(key) > METADATA_KEY_MAX_CHARS:
            shown = key[:METADATA_KEY_MAX_CHARS] + ("..." if len(key) > METADATA_KEY_MAX_CHARS else "")
            errors.append(FieldError(f"metadata.{shown}", f"keys must be 1-{METADATA_KEY_MAX_CHARS} characters"))
            continue
        if len(value) > METADATA_VALUE_MAX_CHARS:
            errors.append(
                FieldError(f"metadata.{key}", f"values must be at most {METADATA_VALUE_MAX_CHARS} characters")
            )


def _check_url(url: str, field: str, intake_bucket: str | None, allow_http: bool, errors: list[FieldError]) -> bool:
    """Checks an https:// or s3:// source; returns False when `url` is neither (the caller decides the message)."""
    if len(url) > URL_MAX_CHARS:
        if url.startswith(("https://", "http://", "s3://")):
            errors.append(FieldError(field, f"is {len(url)} characters; URLs may be at most {URL_MAX_CHARS}"))
            return True
        return False
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced [ in the host
        errors.append(FieldError(field, f"is not a valid URL: {exc}"))
        return True
    if parts.scheme == "https" or (allow_http and parts.scheme == "http"):
        if not parts.hostname:
            errors.append(FieldError(field, "is not a valid URL: it has no host"))
        return True
    if parts.scheme == "s3":
        if not parts.netloc or not parts.path.lstrip("/"):
            errors.append(FieldError(field, "must look like s3://<bucket>/<key>"))
        elif intake_bucket is not None and parts.netloc != intake_bucket:
            errors.append(FieldError(field, f"s3:// sources must be in the intake bucket {intake_bucket}"))
        return True
    return False


def _check_image_source(
    url: str, spec: ModelSpec, intake_bucket: str | None, allow_http: bool, errors: list[FieldError]
) -> None:
    field = "input.img_url"
    if url.startswith("data:"):
        _check_data_uri_image(url, spec, errors)
    elif not _check_url(url, field, intake_bucket, allow_http, errors):
        errors.append(FieldError(field, "must be an https:// URL, a data:image/...;base64, URI or an s3:// URI"))


def _check_data_uri_image(url: str, spec: ModelSpec, errors: list[FieldError]) -> None:
    field = "input.img_url"
    match = _DATA_URI.match(url)
    if match is None:
        errors.append(FieldError(field, "data URIs must look like data:image/png;base64,<data>"))
        return
    mime = match["mime"].lower()
    if mime not in IMAGE_MIME_TYPES:
        errors.append(FieldError(field, f"image type {mime} is not accepted; use {', '.join(IMAGE_MIME_TYPES)}"))
        return
    try:
        data = base64.b64decode(match["payload"], validate=True)
    except (binascii.Error, ValueError):
        errors.append(FieldError(field, "the data URI is not valid base64"))
        return
    if len(data) > spec.image_max_bytes:
        errors.append(
            FieldError(field, f"image is {len(data)} bytes; {spec.name} takes at most {spec.image_max_bytes}")
        )
        return
    problem = check_image_bytes(data, spec, expected_mime=mime)
    if problem:
        errors.append(FieldError(field, problem))


def check_image_bytes(data: bytes, spec: ModelSpec, *, expected_mime: str | None = None) -> str | None:
    """Why DashScope would refuse this image (format, sides, alpha, damaged data), or None when it is fine.

    The header is read first, so that an image whose sides break the rules (a decompression bomb among them) is
    refused without being decoded; then the whole image is decoded, so that a truncated or corrupt file is refused
    here instead of being paid for and failing at DashScope.
    """
    # Pillow is imported here, not with the module: only the submitting handlers (api, intake) decode images,
    # and the others should not pay for it at cold start.
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format, (width, height), mode = image.format, image.size, image.mode
            has_alpha = "A" in image.getbands() or "transparency" in image.info
            if image_format not in _PIL_FORMATS.values():
                return f"{image_format} images are not accepted; use JPEG, PNG, BMP or WEBP"
            if expected_mime is not None and _PIL_FORMATS[expected_mime] != image_format:
                return f"the data URI says {expected_mime} but the image is {image_format}"
            if not (spec.image_min_side <= min(width, height) and max(width, height) <= spec.image_max_side):
                return (
                    f"image is {width}x{height}; each side must be between {spec.image_min_side} and "
                    f"{spec.image_max_side} pixels"
                )
            if image_format == "PNG" and has_alpha:
                return f"PNG images must not have an alpha channel (mode {mode}); flatten the transparency first"
            if image_format == "JPEG":
                image.draft("RGB", (width // 8, height // 8))  # every byte is still decoded, at 1/64 the memory
            image.load()
    except Image.DecompressionBombError:
        return "the image declares more pixels than can be decoded safely (a decompression bomb?)"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return "the image does not decode (it is damaged, truncated or not an image)"
    return None


def _check_audio_source(
    request: JobRequest, spec: ModelSpec, intake_bucket: str | None, allow_http: bool, errors: list[FieldError]
) -> None:
    field = "input.audio_url"
    url = request.input.audio_url or ""
    if not spec.accepts_audio_url:
        errors.append(FieldError(field, f"{spec.name} makes silent videos and takes no audio (wan2.6/2.5 only)"))
        return
    if request.parameters.audio is False:
        errors.append(FieldError(field, "an audio file was given but parameters.audio is false (silent video)"))
    if not _check_url(url, field, intake_bucket, allow_http, errors):
        errors.append(FieldError(field, "must be an https:// URL or an s3:// URI (wav or mp3, 3-30 s, <= 15 MB)"))
