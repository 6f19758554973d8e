"""Registers `wanflow local` and `wanflow demo` with the `wanflow` dispatcher."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_API_PORT = 8000
DEFAULT_AWS_PORT = 5000
DEFAULT_STATE_DIR = ".wanflow"

LOCAL_DESCRIPTION = """Serve the whole wanflow stack on loopback: the HTTP API, an AWS endpoint (moto) holding the
buckets, table, topic and state machine from template.yaml, the Lambda handlers in-process, and the DashScope
emulator unless DASHSCOPE_BASE_URL points elsewhere. Prints its endpoints, then "ready", then every SNS
notification as one JSON line (also appended to <state dir>/notifications.jsonl). Ctrl-C stops it."""

LOCAL_EPILOG = """environment:
  DASHSCOPE_BASE_URL             a DashScope endpoint including /api/v1 (default: start the emulator)
  DASHSCOPE_API_KEY              the key for it (required with DASHSCOPE_BASE_URL)
  WANFLOW_POLL_INTERVAL_SECONDS  base interval of the state machine's status polls (default 15)"""

DEMO_DESCRIPTION = """Run one sample image through the whole pipeline offline (HTTP API -> DashScope emulator -> the
real state machine -> finalizer -> S3 -> SNS), save the MP4, check that it decodes, print the notification."""


def _local(args: argparse.Namespace) -> int:
    from wanflow_tools.local_mode.serve import run_local

    return run_local(args)


def _demo(args: argparse.Namespace) -> int:
    from wanflow_tools.local_mode.demo import run_demo

    return run_demo(args)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "local",
        help="serve the whole stack on loopback",
        description=LOCAL_DESCRIPTION,
        epilog=LOCAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_API_PORT, help="HTTP API port; 0 picks a free one (default %(default)s)"
    )
    parser.add_argument(
        "--aws-port",
        type=int,
        default=DEFAULT_AWS_PORT,
        help="AWS endpoint (moto server) port; 0 picks a free one (default %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument(
        "--state-dir", default=DEFAULT_STATE_DIR, help="where notifications.jsonl is written (default %(default)s)"
    )
    parser.add_argument("--log-level", default="WARNING", help="log level on stderr (default %(default)s)")
    parser.add_argument(
        "--webhook-secret",
        metavar="WHSEC",
        help="sign webhook deliveries with this whsec_... secret (default: the generated one, printed at start)",
    )
    parser.set_defaults(func=_local)

    from wanflow_tools.local_mode.demo import add_demo_arguments

    parser = subparsers.add_parser(
        "demo", help="run one sample image through the whole pipeline offline", description=DEMO_DESCRIPTION
    )
    add_demo_arguments(parser)
    parser.set_defaults(func=_demo)
