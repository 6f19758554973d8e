"""`wanflow emulator`: serve the DashScope emulator on loopback until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

from wanflow_tools.emulator.config import EmulatorConfig

DEFAULT_PORT = 8080


def register(subparsers: Any) -> None:
    """Adds the `emulator` subcommand to `subparsers` (from `ArgumentParser.add_subparsers()`)."""
    parser = subparsers.add_parser(
        "emulator",
        help="serve a DashScope stand-in (Wan image-to-video) on loopback",
        description="Serve a DashScope stand-in on loopback: the real wire protocol, model rules and rate limits, "
        "task and URL expiry, real H.264 MP4s, and faults on request. Point DashScope clients at the printed "
        "base URL (e.g. dashscope.base_http_api_url or DASHSCOPE_BASE_URL).",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


add_parser = register


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = EmulatorConfig()
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port; 0 picks a free one (default %(default)s)")
    parser.add_argument("--api-key", help="accept only this API key (default: any Bearer key)")
    parser.add_argument(
        "--pending-seconds", type=_seconds, default=defaults.pending_seconds, help="time PENDING (default %(default)s)"
    )
    parser.add_argument(
        "--running-seconds",
        type=_seconds,
        default=defaults.running_seconds,
        help="minimum time RUNNING; longer while the video renders (default %(default)s)",
    )
    parser.add_argument(
        "--task-ttl-seconds",
        type=_seconds,
        default=defaults.task_ttl_seconds,
        help="after this long a task answers UNKNOWN (default %(default)s)",
    )
    parser.add_argument(
        "--url-ttl-seconds",
        type=_seconds,
        default=defaults.url_ttl_seconds,
        help="video URLs stop serving this long after the task ended (default %(default)s)",
    )
    parser.add_argument("--faults", metavar="FILE", help="JSON fault plan (see docs/emulator.md)")
    parser.add_argument(
        "--region", help="accept only the model names of this region (e.g. ap-southeast-1); default: all"
    )
    parser.add_argument("--no-rate-limits", action="store_true", help="disable submit-RPS and 20 queries/s limits")
    parser.add_argument(
        "--max-running",
        metavar="MODEL=N",
        action="append",
        type=_model_count,
        default=[],
        help="running tasks per model for an account with raised quotas, e.g. wan2.6-i2v-flash=12 (repeatable; "
        "default: the capability table's)",
    )
    parser.add_argument("--results-dir", help="where videos are kept (default: a temporary directory)")
    parser.add_argument("--render-processes", action="store_true", help="render in worker processes instead of threads")
    parser.add_argument(
        "--utc-offset-hours",
        type=float,
        default=defaults.utc_offset_hours,
        help="zone of the task time strings and list filters (default %(default)s, DashScope's UTC+8)",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING... (default %(default)s)")


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    faults: list[dict[str, Any]] = []
    if args.faults:
        with open(args.faults, encoding="utf-8") as plan:
            faults = json.load(plan)
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        pending_seconds=args.pending_seconds,
        running_seconds=args.running_seconds,
        task_ttl_seconds=args.task_ttl_seconds,
        url_ttl_seconds=args.url_ttl_seconds,
        faults=faults,
        region=args.region,
        rate_limits=not args.no_rate_limits,
        max_running=dict(args.max_running),
        results_dir=args.results_dir,
        render_in_processes=args.render_processes,
        utc_offset_hours=args.utc_offset_hours,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        from wanflow_tools.emulator.server import Emulator  # PyAV and numpy load only when the emulator runs

        emulator = Emulator(config)
    except (OSError, ValueError) as error:  # unreadable or malformed fault plan, bad settings
        print(f"wanflow emulator: {error}", file=sys.stderr)
        return 2
    try:
        base_url = emulator.start()
    except OSError as error:
        print(f"wanflow emulator: cannot listen on {config.host}:{config.port}: {error}", file=sys.stderr)
        return 1

    finished = threading.Event()
    # SIGINT explicitly too: a shell starts background jobs with SIGINT ignored, and `kill -INT` should still stop it.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: finished.set())
    keys = "only the configured API key" if config.api_key else "any Bearer API key"
    print(f"DashScope emulator ready: {base_url}  (accepting {keys}; Ctrl-C stops)", flush=True)
    print(f"  export DASHSCOPE_BASE_URL={base_url}", flush=True)
    try:
        # In slices, not one untimed wait: a signal taken by another thread (one just being created, as the
        # server does per request) only flags it, and Python runs the handler when this thread next runs.
        while not finished.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    print("DashScope emulator stopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wanflow emulator")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or more seconds")
    return value


def _model_count(text: str) -> tuple[str, int]:
    from wanflow.capabilities import find_model

    name, _, count = text.partition("=")
    spec = find_model(name.strip())
    if spec is None:
        raise argparse.ArgumentTypeError(f"unknown model {name.strip()!r}")
    try:
        value = int(count)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("expected MODEL=N with N at least 1")
    return spec.name, value
