"""Registers `wanflow webhook listen` with the `wanflow` dispatcher."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from wanflow_tools.foreground import serve_until_interrupted

LISTEN_DESCRIPTION = """Receive wanflow webhook deliveries on 127.0.0.1:PORT, verify each with the standardwebhooks
library and the signing secret, and print one line per verified delivery (webhook-id, event type, job id,
status). Unverified requests are answered 401 and reported on stderr. Point a job's webhook at
http://127.0.0.1:PORT/ while `wanflow local` runs (it allows loopback targets, and prints its secret). Ctrl-C
stops it."""


def _listen(args: argparse.Namespace) -> int:
    from wanflow_tools.webhook.receiver import VerifiedDelivery, WebhookReceiver

    def show(delivery: VerifiedDelivery) -> None:
        job = delivery.event.get("job") or {}
        sys.stdout.write(
            f"{delivery.webhook_id} {delivery.event.get('type')} job={job.get('job_id')} "
            f"status={job.get('status')} timestamp={delivery.timestamp}\n"
        )
        sys.stdout.flush()

    def rejected(reason: str) -> None:
        sys.stderr.write(f"rejected an unverified request (401): {reason}\n")

    try:
        receiver = WebhookReceiver(args.secret, port=args.port, on_delivery=show, on_rejected=rejected)
    except Exception as exc:  # a secret that is not whsec_<base64>, a port in use
        sys.stderr.write(f"error: {exc}\n")
        return 2
    with receiver:
        serve_until_interrupted(f"listening on {receiver.url}/ (Ctrl-C stops)")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("webhook", help="try out webhooks: a local receiver that verifies deliveries")
    webhook_commands = parser.add_subparsers(title="webhook commands", metavar="COMMAND")
    listen = webhook_commands.add_parser(
        "listen",
        help="receive and verify webhook deliveries on loopback",
        description=LISTEN_DESCRIPTION,
    )
    listen.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 to listen on")
    listen.add_argument("--secret", required=True, help="the signing secret, whsec_... (wanflow local prints it)")
    listen.set_defaults(func=_listen)
