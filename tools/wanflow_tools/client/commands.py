"""The client subcommands: `wanflow submit | status | wait | list | cancel | download` (and `wanflow batch ...`,
from `wanflow_tools.client.batches`).

`register()` adds them to the `wanflow` argparse dispatcher. Each handler takes the parsed arguments and a
`ClientContext` (streams, HTTP transport, clock), so tests can run the real commands against a fake API.
Failures are `ClientError`s, shown by `run()` as `error: Code: message (HTTP n)` plus one line per field error,
and turned into the documented exit code (see `exit_codes.ExitCode`).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from wanflow_tools.client import batches
from wanflow_tools.client.api import DEFAULT_TIMEOUT_SECONDS, LOCAL_API_URL, ApiClient, auth_for, resolve_api_url
from wanflow_tools.client.display import (
    TERMINAL_STATUSES,
    format_bytes,
    format_job,
    format_job_table,
    print_error,
    print_json,
)
from wanflow_tools.client.download import download_job_output, target_path
from wanflow_tools.client.errors import ClientError, UsageError
from wanflow_tools.client.exit_codes import ExitCode
from wanflow_tools.client.progress import DEFAULT_INTERVAL_SECONDS, Clock, ProgressDisplay, wait_for_job
from wanflow_tools.client.request_body import build_job_body
from wanflow_tools.client.sources import content_type_for, is_local_path, resolve_source

JOB_STATUSES = ("QUEUED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED")
# With --idempotency-key a local image is sent inline (data URI) rather than uploaded: every upload gets a new
# s3:// key, so a retried submit would send a different body and get 409 instead of the same job. The limit
# keeps the base64 body well under API Gateway's and Lambda's payload limits.
INLINE_IMAGE_MAX_BYTES = 4 * 1024 * 1024

EXIT_CODES_HELP = """exit codes:
  0  ok
  1  the job ended FAILED or CANCELED (wait, submit --wait, download; batch submit --wait: any of its jobs)
  2  usage or validation error (bad arguments; HTTP 400, 401, 403, 404, 409, 413)
  3  throttled or unavailable (HTTP 429, 5xx; connection refused); try again later
  4  timeout (wait --timeout passed, or an HTTP request timed out)
  5  the downloaded video failed verification against output.sha256 (nothing saved)"""


@dataclass
class ClientContext:
    """What a command needs from its surroundings."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    transport: httpx.BaseTransport | None = None
    clock: Clock = field(default_factory=Clock)
    # Whether progress goes to a terminal; None asks stderr itself.
    tty: bool | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def is_tty(self) -> bool:
        if self.tty is not None:
            return self.tty
        return hasattr(self.stderr, "isatty") and self.stderr.isatty()

    def api(self, args: argparse.Namespace) -> ApiClient:
        url = resolve_api_url(args.api, self.environ)
        return ApiClient(
            url, auth=auth_for(url, args.auth, self.environ), timeout=args.http_timeout, transport=self.transport
        )


Handler = Callable[[argparse.Namespace, ClientContext], int]


def run(handler: Handler, args: argparse.Namespace, context: ClientContext | None = None) -> int:
    """Run one command; a ClientError becomes a message on stderr and its exit code."""
    context = context or ClientContext()
    try:
        return handler(args, context)
    except ClientError as error:
        print_error(error, context.stderr)
        return int(error.exit_code)


# ------------------------------------------------------------------------------------------------- handlers


def submit(args: argparse.Namespace, context: ClientContext) -> int:
    with context.api(args) as api:
        img_url = _image_source(api, args.image, inline=bool(args.idempotency_key), context=context)
        audio_url = resolve_source(api, args.audio, kind="audio") if args.audio else None
        body = build_job_body(args, img_url=img_url, audio_url=audio_url)
        job = api.create_job(body, idempotency_key=args.idempotency_key)
        if not args.wait:
            _show_job(job, args, context)
            if not args.json:
                context.stderr.write(f"follow it with: wanflow wait {job.get('job_id')}\n")
            return int(ExitCode.OK)
        return _wait_and_show(api, str(job["job_id"]), args, context)


def status(args: argparse.Namespace, context: ClientContext) -> int:
    with context.api(args) as api:
        _show_job(api.get_job(args.job_id), args, context)
    return int(ExitCode.OK)


def wait(args: argparse.Namespace, context: ClientContext) -> int:
    with context.api(args) as api:
        return _wait_and_show(api, args.job_id, args, context)


def list_jobs(args: argparse.Namespace, context: ClientContext) -> int:
    with context.api(args) as api:
        page = api.list_jobs(status=args.status, limit=args.limit, cursor=args.cursor)
    if args.json:
        print_json(page, context.stdout)
        return int(ExitCode.OK)
    jobs = page.get("jobs") or []
    context.stdout.write((format_job_table(jobs) if jobs else "no jobs") + "\n")
    if page.get("next_cursor"):
        context.stdout.write(f"more: wanflow list --cursor {page['next_cursor']}\n")
    return int(ExitCode.OK)


def cancel(args: argparse.Namespace, context: ClientContext) -> int:
    with context.api(args) as api:
        _show_job(api.cancel_job(args.job_id), args, context)
    return int(ExitCode.OK)


def download(args: argparse.Namespace, context: ClientContext) -> int:
    with context.api(args) as api:
        job = api.get_job(args.job_id)
        job_status = job.get("status")
        if job_status != "SUCCEEDED":
            if job_status in TERMINAL_STATUSES:
                context.stderr.write(f"job {args.job_id} ended {job_status}: there is no video\n")
                return int(ExitCode.JOB_UNSUCCESSFUL)
            raise UsageError(f"job {args.job_id} is {job_status}: no video yet (wanflow wait {args.job_id})")
        path = download_job_output(api, job, target_path(args.job_id, args.output))
    size = path.stat().st_size
    context.stdout.write(f"{path}\n")
    context.stderr.write(f"saved {format_bytes(size)}, SHA-256 verified\n")
    return int(ExitCode.OK)


# ------------------------------------------------------------------------------------------------- helpers


def _image_source(api: ApiClient, value: str, *, inline: bool, context: ClientContext) -> str:
    if inline and is_local_path(value):
        path = Path(value).expanduser()
        content_type = content_type_for(path)
        if path.is_file() and content_type and content_type.startswith("image/"):
            if path.stat().st_size <= INLINE_IMAGE_MAX_BYTES:
                return f"data:{content_type};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
            context.stderr.write(
                "warning: the image is too large to send inline; it is uploaded, so repeating this submit "
                "with the same --idempotency-key will get 409\n"
            )
    return resolve_source(api, value, kind="image")


def _wait_and_show(api: ApiClient, job_id: str, args: argparse.Namespace, context: ClientContext) -> int:
    display = ProgressDisplay(context.stderr, tty=context.is_tty())
    job = wait_for_job(api, job_id, display=display, interval=args.interval, timeout=args.timeout, clock=context.clock)
    _show_job(job, args, context)
    return int(ExitCode.OK if job.get("status") == "SUCCEEDED" else ExitCode.JOB_UNSUCCESSFUL)


def _show_job(job: dict[str, Any], args: argparse.Namespace, context: ClientContext) -> None:
    if args.json:
        print_json(job, context.stdout)
    else:
        context.stdout.write(format_job(job, context.clock.now()) + "\n")


# ------------------------------------------------------------------------------------------------- argparse


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("API")
    group.add_argument(
        "--api",
        metavar="URL",
        help=f"the wanflow API; default $WANFLOW_API_URL, else the local stack at {LOCAL_API_URL}",
    )
    group.add_argument(
        "--auth",
        choices=("auto", "sigv4", "none"),
        default="auto",
        help="request signing: auto = SigV4 (service execute-api) for https URLs, none for http (default auto)",
    )
    group.add_argument(
        "--http-timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"timeout of each HTTP request (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    group.add_argument("--json", action="store_true", help="print the API's JSON instead of a summary")
    return common


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="give up waiting after this long (exit 4); default: wait until the job ends",
    )
    parser.add_argument(
        "--interval",
        type=_positive_float,
        default=DEFAULT_INTERVAL_SECONDS,
        metavar="SECONDS",
        help=f"seconds between polls of the job (default {DEFAULT_INTERVAL_SECONDS:g})",
    )


def _add(
    subparsers: Any,
    name: str,
    handler: Handler,
    help_text: str,
    common: argparse.ArgumentParser,
    run_command: Callable[[Handler, argparse.Namespace], int],
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        parents=[common],
        help=help_text,
        description=help_text,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=lambda args: run_command(handler, args))
    return parser


def register(subparsers: Any, context_factory: Callable[[], ClientContext] = ClientContext) -> None:
    """Add the client subcommands to `subparsers` (from `ArgumentParser.add_subparsers()`).

    Each parser gets `func(args) -> int` as its default; `context_factory` supplies the context it runs with.
    """
    common = _common_options()

    def run_command(handler: Handler, args: argparse.Namespace) -> int:
        return run(handler, args, context_factory())

    parser = _add(
        subparsers, "submit", submit, "start a job from an image (file, https URL or s3:// URI)", common, run_command
    )
    parser.add_argument(
        "image",
        metavar="IMAGE",
        help="first frame: a local file (uploaded through POST /v1/uploads), https URL, s3:// URI or data: URI",
    )
    parser.add_argument("--prompt", "-p", help="what should happen in the video")
    parser.add_argument("--negative-prompt", help="what should not appear")
    parser.add_argument("--audio", metavar="FILE_OR_URL", help="soundtrack (wav/mp3; wan2.5/2.6 models)")
    parser.add_argument("--model", "-m", help="model name; default: the stack's default model")
    parser.add_argument("--resolution", "-r", help="480P, 720P or 1080P (as the model allows)")
    parser.add_argument("--duration", "-d", type=int, metavar="SECONDS", help="video length in seconds")
    parser.add_argument("--seed", type=int, help="random seed, 0 to 2147483647")
    parser.add_argument("--no-audio", action="store_true", help="silent video (wan2.6-i2v-flash; half price)")
    parser.add_argument("--shot-type", choices=("single", "multi"), help="single or multi-shot (wan2.6)")
    parser.add_argument("--watermark", action="store_true", help="add DashScope's watermark")
    parser.add_argument("--no-prompt-extend", action="store_true", help="do not let DashScope rewrite the prompt")
    parser.add_argument(
        "--metadata",
        action="append",
        metavar="KEY=VALUE",
        help="a label stored with the job and sent in its notification (repeatable)",
    )
    parser.add_argument(
        "--idempotency-key", metavar="KEY", help="repeating the same submit with the same key returns the same job"
    )
    parser.add_argument(
        "--priority",
        choices=("normal", "high"),
        help="place in wanflow's queue: high goes ahead of every normal job of its model (default: normal)",
    )
    parser.add_argument("--wait", action="store_true", help="wait for the job to end, showing progress")
    _wait_options(parser)

    parser = _add(subparsers, "status", status, "show a job", common, run_command)
    parser.add_argument("job_id", metavar="JOB")

    parser = _add(subparsers, "wait", wait, "wait for a job to end, showing progress", common, run_command)
    parser.add_argument("job_id", metavar="JOB")
    _wait_options(parser)

    parser = _add(subparsers, "list", list_jobs, "list jobs, newest first", common, run_command)
    parser.add_argument("--status", choices=JOB_STATUSES, help="only jobs with this status")
    parser.add_argument("--limit", type=int, metavar="N", help="page size")
    parser.add_argument("--cursor", metavar="C", help="the next_cursor of the previous page")

    parser = _add(
        subparsers,
        "cancel",
        cancel,
        "cancel a job (while it is QUEUED, at once, or while its DashScope task is PENDING)",
        common,
        run_command,
    )
    parser.add_argument("job_id", metavar="JOB")

    parser = _add(
        subparsers, "download", download, "save a job's video, verified against its SHA-256", common, run_command
    )
    parser.add_argument("job_id", metavar="JOB")
    parser.add_argument("-o", "--output", metavar="PATH", help="file or directory to save to (default ./JOB.mp4)")

    batches.add_commands(
        subparsers,
        common=common,
        epilog=EXIT_CODES_HELP,
        bind=lambda handler: lambda args: run_command(handler, args),
        wait_options=_wait_options,
    )
