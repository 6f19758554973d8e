"""Registers `wanflow console` with the `wanflow` dispatcher."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from wanflow_tools.foreground import serve_until_interrupted

DESCRIPTION = """Serve the web console for a deployed wanflow stack on http://127.0.0.1:PORT/ and forward the
page's API calls to --api, signed with SigV4 with your AWS credentials (the same chain as the AWS CLI: AWS_PROFILE,
environment variables, SSO, ...). The deployed API keeps IAM auth; nothing is exposed beyond this machine's
loopback. `make local` serves the same console at http://127.0.0.1:8000/ without this command. Ctrl-C stops it."""


def _serve(args: argparse.Namespace) -> int:
    from wanflow_tools.client.api import AuthMode, auth_for, resolve_api_url
    from wanflow_tools.client.errors import ClientError
    from wanflow_tools.console.proxy import ConsoleProxy

    mode: AuthMode = args.auth
    try:
        api_url = resolve_api_url(args.api)
        auth = auth_for(api_url, mode)
    except ClientError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    try:
        proxy = ConsoleProxy(api_url, auth=auth, port=args.port)
    except OSError as error:
        sys.stderr.write(f"error: cannot listen on 127.0.0.1:{args.port}: {error.strerror or error}\n")
        return 2
    with proxy:
        signing = "signed with SigV4" if auth is not None else "unsigned"
        serve_until_interrupted(f"wanflow console: {proxy.url}/  (API {api_url}, {signing}; Ctrl-C stops)")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "console", help="serve the web console on loopback for a deployed stack", description=DESCRIPTION
    )
    parser.add_argument(
        "--api", help="the stack's API URL (the ApiUrl output); default: WANFLOW_API_URL, else the local stack"
    )
    parser.add_argument("--port", type=int, default=8001, help="port on 127.0.0.1 to serve the console on (8001)")
    parser.add_argument(
        "--auth",
        choices=["auto", "sigv4", "none"],
        default="auto",
        help="how to sign API calls: auto = SigV4 for https URLs, none for the local stack (default auto)",
    )
    parser.set_defaults(func=_serve)
