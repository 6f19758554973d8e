"""What `wanflow local` prints when it starts: its endpoints and example commands that work as printed."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from wanflow_tools.client.api import LOCAL_API_URL

# The bundled first frame, so that every example runs without the user finding an image first.
SAMPLE_IMAGE = Path(__file__).resolve().parent.parent / "assets" / "sample.jpg"
SAMPLE_PROMPT = "a sailboat drifts slowly across the lake at sunset"
# The quickest model and size to render (and the cheapest, should the examples reach the real DashScope).
EXAMPLE_MODEL = "wan2.2-i2v-flash"
EXAMPLE_RESOLUTION = "480P"


@dataclass(frozen=True)
class Endpoints:
    api_url: str
    aws_endpoint: str
    region: str
    aws_access_key_id: str
    aws_secret_access_key: str
    dashscope_base_url: str
    dashscope_is_emulator: bool
    intake_bucket: str
    output_bucket: str
    jobs_table: str
    topic_arn: str
    state_machine_arn: str
    notifications_path: Path
    poll_interval_seconds: float


def endpoint_table(endpoints: Endpoints) -> list[str]:
    dashscope = endpoints.dashscope_base_url + ("  (emulator)" if endpoints.dashscope_is_emulator else "")
    rows = [
        ("web console", f"{endpoints.api_url}/  (open it in a browser)"),
        ("HTTP API", endpoints.api_url),
        ("AWS endpoint", f"{endpoints.aws_endpoint}  (moto; region {endpoints.region}, any credentials)"),
        ("DashScope", dashscope),
        ("intake bucket", f"{endpoints.intake_bucket}  (uploads; incoming/ starts jobs)"),
        ("output bucket", f"{endpoints.output_bucket}  (videos/yyyy/mm/dd/<job>.mp4)"),
        ("jobs table", endpoints.jobs_table),
        ("topic", endpoints.topic_arn),
        ("state machine", endpoints.state_machine_arn),
        ("notifications", f"{endpoints.notifications_path}  (and one JSON line each on stdout)"),
        ("poll interval", f"{endpoints.poll_interval_seconds:g} s"),
    ]
    width = max(len(label) for label, _ in rows)
    return [f"  {label.ljust(width)}  {value}" for label, value in rows]


def example_commands(endpoints: Endpoints, wanflow_command: str = "wanflow") -> list[str]:
    image = shlex.quote(str(SAMPLE_IMAGE))
    body_head = (
        f'{{"model": "{EXAMPLE_MODEL}", "input": {{"prompt": "{SAMPLE_PROMPT}", "img_url": "data:image/jpeg;base64,'
    )
    body_tail = f'"}}, "parameters": {{"resolution": "{EXAMPLE_RESOLUTION}", "duration": 5}}}}'
    curl = (
        f"(printf '%s' {shlex.quote(body_head)}; base64 -w0 {image}; printf '%s' {shlex.quote(body_tail)}) "
        f"| curl -s {endpoints.api_url}/v1/jobs -H 'content-type: application/json' -d @-"
    )
    aws_environment = (
        f"AWS_ACCESS_KEY_ID={endpoints.aws_access_key_id} AWS_SECRET_ACCESS_KEY={endpoints.aws_secret_access_key} "
        f"AWS_DEFAULT_REGION={endpoints.region}"
    )
    metadata = f"prompt={SAMPLE_PROMPT},model={EXAMPLE_MODEL},resolution={EXAMPLE_RESOLUTION}"
    aws = (
        f"{aws_environment} aws --endpoint-url {endpoints.aws_endpoint} s3 cp {image} "
        f"s3://{endpoints.intake_bucket}/incoming/sample.jpg --metadata {shlex.quote(metadata)}"
    )
    api_option = "" if endpoints.api_url == LOCAL_API_URL else f" --api {endpoints.api_url}"
    submit = (
        f"{wanflow_command} submit {image} --prompt {shlex.quote(SAMPLE_PROMPT)} --model {EXAMPLE_MODEL} "
        f"--resolution {EXAMPLE_RESOLUTION}{api_option} --wait"
    )
    return [
        "  # a job through the HTTP API, the image inline as a data URI:",
        f"  {curl}",
        "  # an image uploaded to the intake bucket, the prompt in its metadata:",
        f"  {aws}",
        "  # the client CLI (uploads the file, then shows progress):",
        f"  {submit}",
        f"  {wanflow_command} list{api_option}",
    ]


def banner(endpoints: Endpoints, wanflow_command: str = "wanflow") -> str:
    lines = [
        "wanflow local: the whole stack on loopback",
        *endpoint_table(endpoints),
        "",
        "try:",
        *example_commands(endpoints, wanflow_command),
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)
