"""The `POST /v1/jobs` body built from `wanflow submit`'s options.

Only what the user said is sent: the API fills in the model's defaults and reports them back in the job, so that
the stack's configuration (default model and so on) decides, not the client.
"""

from __future__ import annotations

import argparse
from typing import Any

from wanflow_tools.client.errors import UsageError


def parse_metadata(pairs: list[str] | None) -> dict[str, str]:
    """`--metadata k=v` options as a dict; the value may itself contain '='."""
    metadata: dict[str, str] = {}
    for pair in pairs or []:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise UsageError(f"--metadata {pair!r}: expected KEY=VALUE")
        metadata[key.strip()] = value
    return metadata


def build_job_body(args: argparse.Namespace, *, img_url: str, audio_url: str | None) -> dict[str, Any]:
    task_input: dict[str, Any] = {"img_url": img_url}
    if args.prompt is not None:
        task_input["prompt"] = args.prompt
    if args.negative_prompt is not None:
        task_input["negative_prompt"] = args.negative_prompt
    if audio_url is not None:
        task_input["audio_url"] = audio_url

    parameters: dict[str, Any] = {}
    if args.resolution is not None:
        parameters["resolution"] = args.resolution.upper()
    if args.duration is not None:
        parameters["duration"] = args.duration
    if args.seed is not None:
        parameters["seed"] = args.seed
    if args.shot_type is not None:
        parameters["shot_type"] = args.shot_type
    if args.no_audio:
        parameters["audio"] = False
    if args.watermark:
        parameters["watermark"] = True
    if args.no_prompt_extend:
        parameters["prompt_extend"] = False

    body: dict[str, Any] = {"input": task_input}
    if args.model is not None:
        body["model"] = args.model
    if parameters:
        body["parameters"] = parameters
    metadata = parse_metadata(args.metadata)
    if metadata:
        body["metadata"] = metadata
    if args.priority is not None:
        body["priority"] = args.priority
    return body
