"""`wanflow local`: serve the whole stack on loopback until Ctrl-C.

stdout carries what a person or a script watches: the endpoint table and examples, then the line "ready" once
`GET /v1/jobs` answers, then one JSON line per SNS notification (the same record as in
`<state dir>/notifications.jsonl`). Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TextIO

from wanflow_tools.local_mode.banner import Endpoints, banner
from wanflow_tools.local_mode.runner import LocalMode, LocalModeError, LocalModeOptions

SWEEP_INTERVAL_SECONDS = 60.0
READY_TIMEOUT_SECONDS = 60.0

log = logging.getLogger(__name__)


class NotificationPrinter:
    """Writes each notification record as one JSON line; called from the notification sink's thread."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, notification: dict[str, object]) -> None:
        # The same serialisation as the sink's notifications.jsonl, so both show identical lines.
        line = json.dumps(notification, sort_keys=False)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (a second one exits at once); the previous handlers come back after."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            # Asked twice: the user does not want to wait for a clean shutdown.
            os._exit(128 + signum)
        stop.set()

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def busy_ports(host: str, ports: dict[str, int]) -> list[str]:
    """The named ports that something else already listens on (0 means "any free port" and is never busy).

    Checked before starting because a moto server whose port is taken fails in its own thread, unnoticed.
    """
    busy = []
    for name, port in ports.items():
        if port == 0:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the servers do: connections of a previous run still in TIME_WAIT must not count as busy.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                busy.append(f"{name} {host}:{port} ({error.strerror or error})")
    return busy


def endpoints_of(mode: LocalMode) -> Endpoints:
    assert mode.stack is not None
    stack = mode.stack
    env = stack.env
    credentials = {"AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"]}
    return Endpoints(
        api_url=mode.api_url,
        aws_endpoint=stack.aws_endpoint,
        region=stack.region,
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        dashscope_base_url=mode.dashscope_base_url,
        dashscope_is_emulator=mode.emulator is not None,
        intake_bucket=env["WANFLOW_INTAKE_BUCKET"],
        output_bucket=env["WANFLOW_OUTPUT_BUCKET"],
        jobs_table=env["WANFLOW_JOBS_TABLE"],
        topic_arn=env["WANFLOW_TOPIC_ARN"],
        state_machine_arn=env["WANFLOW_STATE_MACHINE_ARN"],
        notifications_path=stack.notifications_path,
        poll_interval_seconds=mode.options.poll_interval_seconds,
    )


def wanflow_command() -> str:
    """How the user started us, so that printed `wanflow ...` examples work as printed (.venv/bin/wanflow)."""
    invoked = sys.argv[0] if sys.argv else ""
    return shlex.quote(invoked) if Path(invoked).name == "wanflow" else "wanflow"


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # werkzeug (under moto's server) sets itself to INFO and logs every AWS call; only DEBUG wants those.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # Metrics are switched off locally (no CloudWatch); Powertools still warns on every invocation about it.
    warnings.filterwarnings("ignore", message="No application metrics to publish")


def run_local(
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[LocalMode], None] | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM (or `stop` is set); 0 after a clean stop, 1 when it cannot start."""
    stdout = stdout or sys.stdout
    stop = stop or threading.Event()
    configure_logging(args.log_level)
    try:
        options = LocalModeOptions.from_environment(
            os.environ,
            host=args.host,
            api_port=args.port,
            aws_port=args.aws_port,
            state_dir=Path(args.state_dir),
            webhook_secret=getattr(args, "webhook_secret", None),
        )
    except LocalModeError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    busy = busy_ports(options.host, {"--port": options.api_port, "--aws-port": options.aws_port})
    if busy:
        sys.stderr.write(
            f"error: port in use: {', '.join(busy)}; is another `wanflow local` running? "
            "choose other ports with --port/--aws-port (0 picks a free one)\n"
        )
        return 1
    with stop_on_signals(stop):
        mode = LocalMode(options, on_notification=NotificationPrinter(stdout))
        try:
            mode.start()
        except LocalModeError as error:
            sys.stderr.write(f"error: {error}\n")
            return 2
        except OSError as error:
            sys.stderr.write(
                f"error: cannot start the local stack: {error}\n"
                "(is another `wanflow local` running? choose other ports with --port/--aws-port)\n"
            )
            return 1
        try:
            stdout.write(banner(endpoints_of(mode), wanflow_command()) + "\n")
            # Local only: a deployed stack keeps it in Secrets Manager (output WebhookSecretArn).
            stdout.write(
                f"webhook signing secret: {mode.webhook_secret}\n"
                f"  try: {wanflow_command()} webhook listen --port 9000 --secret {mode.webhook_secret}\n"
                '  and add "webhook": {"url": "http://127.0.0.1:9000/"} to a job body\n'
            )
            stdout.flush()
            if not mode.wait_until_ready(READY_TIMEOUT_SECONDS, stop):
                return 0  # interrupted while starting
            assert mode.stack is not None
            # The sweeper's template schedule is every few minutes; locally every minute finds stuck jobs sooner.
            mode.stack.start_schedules(SWEEP_INTERVAL_SECONDS)
            stdout.write("ready\n")
            stdout.flush()
            if on_ready is not None:
                on_ready(mode)
            # In slices, not one untimed wait: a signal taken by another thread (one just being created, as the
            # servers do per request) only flags it, and Python runs the handler when this thread next runs.
            while not stop.wait(0.5):
                pass
            sys.stderr.write("stopping...\n")
        except TimeoutError as error:
            sys.stderr.write(f"error: {error}\n")
            return 1
        finally:
            mode.stop()
    sys.stderr.write("stopped\n")
    return 0
