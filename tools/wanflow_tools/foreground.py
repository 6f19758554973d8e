"""Running a loopback server in the foreground of a `wanflow` command until Ctrl-C."""

from __future__ import annotations

import sys
import threading


def serve_until_interrupted(banner: str) -> None:
    """Print `banner` (the server's address and what it does), then block until Ctrl-C (KeyboardInterrupt)."""
    sys.stdout.write(banner + "\n")
    sys.stdout.flush()
    stop = threading.Event()
    try:
        # Waiting in short steps keeps the main thread able to take the KeyboardInterrupt at once.
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
