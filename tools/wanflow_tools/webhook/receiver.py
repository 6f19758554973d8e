"""A webhook receiver on loopback that verifies every delivery with the standardwebhooks library, as a user's
receiver would: `wanflow webhook listen` prints what it verifies, and the end-to-end tests receive through it.

An unverified request (no or a wrong signature, a stale timestamp) is answered 401 and counted, never recorded as
a delivery. `respond` chooses the answer to a verified delivery (tests: fail first, then recover; redirect).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

MAX_BODY_BYTES = 1024 * 1024
# (path, how many verified deliveries this path has had before this one) -> (status, headers)
Responder = Callable[[str, int], tuple[int, dict[str, str]]]


@dataclass(frozen=True)
class VerifiedDelivery:
    path: str
    webhook_id: str
    timestamp: str
    event: dict[str, Any]
    body: bytes
    headers: dict[str, str]


def _no_content(path: str, seen: int) -> tuple[int, dict[str, str]]:
    return 204, {}


class WebhookReceiver:
    def __init__(
        self,
        secret: str,
        *,
        port: int = 0,
        respond: Responder = _no_content,
        on_delivery: Callable[[VerifiedDelivery], None] | None = None,
        on_rejected: Callable[[str], None] | None = None,
    ) -> None:
        self._webhook = Webhook(secret)
        self._respond = respond
        self._on_delivery = on_delivery
        self._on_rejected = on_rejected
        self._changed = threading.Condition()
        self.deliveries: list[VerifiedDelivery] = []
        self.rejected = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[list[VerifiedDelivery]], bool], timeout: float) -> list[VerifiedDelivery]:
        """Block until `predicate(deliveries)` holds; TimeoutError after `timeout` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.deliveries), timeout=timeout):
                raise TimeoutError(f"webhook deliveries not as expected within {timeout} s: {self.deliveries}")
            return list(self.deliveries)

    def _receive(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        try:
            event = self._webhook.verify(body, headers)
        except (WebhookVerificationError, ValueError) as exc:
            with self._changed:
                self.rejected += 1
            if self._on_rejected is not None:
                self._on_rejected(str(exc))
            return 401, {"content-type": "application/json"}, json.dumps({"error": str(exc)}).encode()
        lowered = {name.lower(): value for name, value in headers.items()}
        delivery = VerifiedDelivery(
            path=path,
            webhook_id=lowered["webhook-id"],
            timestamp=lowered["webhook-timestamp"],
            event=event,
            body=body,
            headers=lowered,
        )
        with self._changed:
            seen = sum(1 for earlier in self.deliveries if earlier.path == path)
            status, reply_headers = self._respond(path, seen)
            self.deliveries.append(delivery)
            self._changed.notify_all()
        if self._on_delivery is not None:
            self._on_delivery(delivery)
        return status, reply_headers, b""

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_BODY_BYTES:
                    self._reply(413, {}, b"")
                    return
                body = self.rfile.read(length)
                status, headers, reply = receiver._receive(self.path, body, dict(self.headers.items()))
                self._reply(status, headers, reply)

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the receiver prints verified deliveries itself

        return Handler
