"""`wanflow batch submit | status | cancel`: batches of jobs (docs/product.md section 9).

`batch submit FILE.jsonl` sends one job body a line (blank lines skipped) as `POST /v1/batches`; with `--wait`
it follows the batch with ONE progress line, its jobs counted per status: redrawn in place on a terminal, a
plain line per change of the counts otherwise (as `wanflow wait` does for a job).

Exit codes as for jobs: 0 when every job SUCCEEDED (or, without --wait, when the batch was accepted); 1 when the
batch ended with a job FAILED or CANCELED; 2, 3, 4 as for any command.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from wanflow_tools.client.api import ApiClient
from wanflow_tools.client.display import format_duration, print_json
from wanflow_tools.client.errors import UsageError
from wanflow_tools.client.exit_codes import ExitCode
from wanflow_tools.client.progress import poll_until

if TYPE_CHECKING:
    from wanflow_tools.client.commands import ClientContext

JOB_STATUSES = ("QUEUED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED")
_SPINNER = "|/-\\"
_CLEAR_LINE = "\r\x1b[2K"


def read_jsonl(path: Path) -> list[Any]:
    """The job bodies of a .jsonl file, one a line; a line that is not JSON is a usage error naming it."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    items: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except ValueError as error:
            raise UsageError(f"{path} line {number} is not JSON: {error}") from None
    if not items:
        raise UsageError(f"{path} has no job bodies (one JSON job body a line)")
    return items


def submit(args: argparse.Namespace, context: ClientContext) -> int:
    body: dict[str, Any] = {"jobs": read_jsonl(Path(args.file))}
    if args.partial:
        body["partial"] = True
    with context.api(args) as api:
        batch = api.create_batch(body, idempotency_key=args.idempotency_key)
        if not args.wait:
            _show(batch, args, context)
            if not args.json:
                context.stderr.write(f"follow it with: wanflow batch status {batch.get('batch_id')}\n")
            return int(ExitCode.OK)
        for rejected in batch.get("rejected") or []:
            context.stderr.write(f"item {rejected.get('index')} refused (--partial): {_errors(rejected)}\n")
        return _wait_and_show(api, str(batch["batch_id"]), args, context)


def status(args: argparse.Namespace, context: ClientContext) -> int:
    with context.api(args) as api:
        _show(api.get_batch(args.batch_id), args, context)
    return int(ExitCode.OK)


def cancel(args: argparse.Namespace, context: ClientContext) -> int:
    with context.api(args) as api:
        _show(api.cancel_batch(args.batch_id), args, context)
    return int(ExitCode.OK)


class BatchProgress:
    """One line for the whole batch: `[mm:ss] batch <id> open: 10 jobs, 4 SUCCEEDED, 1 RUNNING, 5 QUEUED`."""

    def __init__(self, stream: TextIO, *, tty: bool) -> None:
        self.stream = stream
        self.tty = tty
        self._last: str | None = None
        self._frame = 0
        self._line_open = False

    def show(self, batch: dict[str, Any], elapsed: float) -> None:
        counts = describe_counts(batch)
        change = f"{batch.get('status')}: {counts}"
        if not self.tty:
            if change != self._last:  # a log gets a line when the counts change, not every poll
                self.stream.write(f"{_describe(batch, counts, elapsed)}\n")
        elif batch.get("status") == "open":
            spinner = _SPINNER[self._frame % len(_SPINNER)]
            self._frame += 1
            self.stream.write(f"{_CLEAR_LINE}{spinner} {_describe(batch, counts, elapsed)}")
            self._line_open = True
        else:  # the end replaces the line with a permanent one
            self.stream.write(f"{_CLEAR_LINE}{_describe(batch, counts, elapsed)}\n")
            self._line_open = False
        self._last = change
        self.stream.flush()

    def note(self, message: str) -> None:
        prefix = _CLEAR_LINE if self._line_open else ""
        self._line_open = False
        self.stream.write(f"{prefix}{message}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._line_open:
            self.stream.write(_CLEAR_LINE)
            self.stream.flush()
            self._line_open = False


def describe_counts(batch: dict[str, Any]) -> str:
    counts = batch.get("counts") or {}
    parts = [f"{batch.get('total', '?')} jobs"]
    # Ended first, then what is still on its way, as a batch is mostly read while it finishes.
    for name in ("SUCCEEDED", "FAILED", "CANCELED", "RUNNING", "PENDING", "QUEUED"):
        if counts.get(name):
            parts.append(f"{counts[name]} {name}")
    return ", ".join(parts)


def _describe(batch: dict[str, Any], counts: str, elapsed: float) -> str:
    return f"[{format_duration(elapsed)}] batch {batch.get('batch_id', '?')} {batch.get('status', '?')}: {counts}"


def format_batch(batch: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [
        ("batch", str(batch.get("batch_id", "?"))),
        ("status", str(batch.get("status", "?"))),
        ("jobs", describe_counts(batch)),
    ]
    if batch.get("cost_estimate_usd") is not None:
        rows.append(("cost", f"${batch['cost_estimate_usd']} (list-price estimate)"))
    for label in ("source", "created_at", "completed_at"):
        if batch.get(label):
            rows.append((label.removesuffix("_at"), str(batch[label])))
    for key, value in sorted((batch.get("metadata") or {}).items()):
        rows.append(("metadata", f"{key}={value}"))
    for rejected in batch.get("rejected") or []:
        rows.append(
            ("refused", f"item {rejected.get('index')}" + (f": {_errors(rejected)}" if "errors" in rejected else ""))
        )
    for job_id in batch.get("jobs") or []:
        rows.append(("job", str(job_id)))
    if batch.get("next_cursor"):
        rows.append(("more", "jobs: wanflow batch status --json (next_cursor)"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def _errors(rejected: dict[str, Any]) -> str:
    return "; ".join(f"{error.get('field')}: {error.get('message')}" for error in rejected.get("errors") or [])


def _wait_and_show(api: ApiClient, batch_id: str, args: argparse.Namespace, context: ClientContext) -> int:
    batch = poll_until(
        lambda: api.get_batch(batch_id),
        lambda batch: batch.get("status") != "open",
        what=f"batch {batch_id}",
        display=BatchProgress(context.stderr, tty=context.is_tty()),
        interval=args.interval,
        timeout=args.timeout,
        clock=context.clock,
    )
    _show(batch, args, context)
    counts = batch.get("counts") or {}
    everything_succeeded = counts.get("SUCCEEDED") == batch.get("total")
    return int(ExitCode.OK if everything_succeeded else ExitCode.JOB_UNSUCCESSFUL)


def _show(batch: dict[str, Any], args: argparse.Namespace, context: ClientContext) -> None:
    if args.json:
        print_json(batch, context.stdout)
    else:
        context.stdout.write(format_batch(batch) + "\n")


def add_commands(
    subparsers: Any,
    *,
    common: argparse.ArgumentParser,
    epilog: str,
    bind: Callable[[Callable[[argparse.Namespace, ClientContext], int]], Callable[[argparse.Namespace], int]],
    wait_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """`wanflow batch submit | status | cancel`; `bind` turns a handler into the parser's `func`."""
    batch = subparsers.add_parser("batch", help="submit, follow and cancel batches of up to 1,000 jobs")
    commands = batch.add_subparsers(title="batch commands", metavar="COMMAND", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace, ClientContext], int], text: str) -> Any:
        parser = commands.add_parser(
            name,
            parents=[common],
            help=text,
            description=text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(func=bind(handler))
        return parser

    parser = add("submit", submit, "submit a .jsonl file of job bodies (one a line) as one batch")
    parser.add_argument("file", metavar="FILE.jsonl")
    parser.add_argument("--partial", action="store_true", help="queue the valid lines and list the refused ones")
    parser.add_argument(
        "--idempotency-key", metavar="KEY", help="repeating the same submit with the same key returns the same batch"
    )
    parser.add_argument("--wait", action="store_true", help="wait for every job to end, showing one progress line")
    wait_options(parser)

    parser = add("status", status, "show a batch: its jobs counted per status")
    parser.add_argument("batch_id", metavar="BATCH")

    parser = add("cancel", cancel, "cancel every job of a batch that has not started")
    parser.add_argument("batch_id", metavar="BATCH")
