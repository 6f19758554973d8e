"""The model rules, taken from the product's own table and validator (never a second copy), in DashScope's words.

`wanflow.capabilities` and `wanflow.request` decide what is valid; this module only adapts them to the emulator:
plain-http sources are allowed (presigned URLs of a local S3), unknown fields are ignored (real clients send
extras such as `input.extend_prompt`), and a refusal becomes DashScope's 404 ModelNotFound or 400
InvalidParameter with a message naming the field(s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wanflow.capabilities import ModelSpec, find_model, output_size
from wanflow.errors import FieldError, InvalidRequest
from wanflow.request import parse_job_request
from wanflow_tools.emulator.protocol import MODEL_NOT_FOUND, ApiError, ErrorKind

__all__ = ["AcceptedTask", "accept_create_body", "actual_prompt_for", "output_size", "usage_for"]

INVALID_PARAMETER = ErrorKind(400, "InvalidParameter", "The request parameter is invalid.")
_READABLE_SCHEMES = ("https://", "http://", "data:")


@dataclass(frozen=True)
class AcceptedTask:
    """A valid create request, with the model's defaults filled in."""

    model: str  # the name the client used (shown by the list API)
    spec: ModelSpec
    img_url: str
    audio_url: str | None
    prompt: str | None
    resolution: str
    duration: int
    prompt_extend: bool
    watermark: bool
    has_audio: bool


def accept_create_body(body: Any, *, region: str | None) -> AcceptedTask:
    """Validates a create-task body like DashScope would; raises ApiError (404 or 400) when it would refuse it."""
    if not isinstance(body, dict):
        raise ApiError(INVALID_PARAMETER, "The request body must be a JSON object.")
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(INVALID_PARAMETER, "model is required")
    if find_model(name) is None:
        raise ApiError(MODEL_NOT_FOUND)
    try:
        request = parse_job_request(
            body, region=region, default_model=name, allow_http=True, ignore_unknown_fields=True
        )
    except InvalidRequest as refusal:
        if any(error.field == "model" for error in refusal.errors):
            raise ApiError(MODEL_NOT_FOUND) from None  # e.g. a model of another region
        raise ApiError(INVALID_PARAMETER, describe_errors(refusal.errors)) from None

    # The product also takes s3:// sources (it presigns them before calling DashScope); DashScope itself does not.
    unreadable = [
        FieldError(field, "DashScope cannot read s3:// URIs; use an http(s) URL or a data: URI")
        for field, url in (("input.img_url", request.input.img_url), ("input.audio_url", request.input.audio_url))
        if url is not None and not url.startswith(_READABLE_SCHEMES)
    ]
    if unreadable:
        raise ApiError(INVALID_PARAMETER, describe_errors(unreadable))

    parameters = request.parameters
    assert parameters.resolution is not None and parameters.duration is not None  # filled in by the validator
    return AcceptedTask(
        model=name,
        spec=request.spec,
        img_url=request.input.img_url,
        audio_url=request.input.audio_url,
        prompt=request.input.prompt,
        resolution=parameters.resolution,
        duration=parameters.duration,
        prompt_extend=parameters.prompt_extend is not False,
        watermark=bool(parameters.watermark),
        has_audio=request.has_audio,
    )


def describe_errors(errors: list[FieldError]) -> str:
    """One DashScope-style message naming every bad field: "parameters.duration: wan2.2-i2v-flash supports 5 ..."."""
    parts = []
    for error in errors:
        joiner = " " if error.message.startswith(("is ", "must ", "has ")) else ": "
        parts.append(f"{error.field}{joiner}{error.message}")
    return "; ".join(parts) or INVALID_PARAMETER.message


def family(spec: ModelSpec) -> str:
    """ "wan2.6", "wan2.5", "wan2.2" or "wanx2.1": the part of the name the response shapes depend on."""
    return spec.name.split("-", 1)[0]


def usage_for(task: AcceptedTask, width: int, height: int) -> dict[str, Any]:
    """The `usage` object of a SUCCEEDED task; its keys differ by model family (docs/dashscope.md)."""
    if family(task.spec) in ("wan2.6", "wan2.5"):
        return {
            "duration": task.duration,
            "input_video_duration": 0,
            "output_video_duration": task.duration,
            "SR": int(task.resolution.rstrip("P")),
            "video_count": 1,
            "audio": task.has_audio,
        }
    return {"video_duration": task.duration, "video_ratio": f"{width}*{height}", "video_count": 1}


def actual_prompt_for(task: AcceptedTask) -> str | None:
    """The rewritten prompt DashScope reports when prompt_extend is on; wan2.6 does not report one."""
    if family(task.spec) == "wan2.6" or not task.prompt_extend or not task.prompt:
        return None
    return (
        f"{task.prompt} The camera pushes in slowly while the scene comes gently to life, "
        "with natural motion, soft cinematic lighting and fine detail."
    )
