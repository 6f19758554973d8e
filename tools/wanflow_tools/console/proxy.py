"""`wanflow console --api URL`: the console on loopback for a deployed stack, its API calls signed with SigV4.

The deployed API keeps IAM auth and nothing public is added to AWS: the browser talks only to this server on
127.0.0.1, which serves the page and forwards `/v1/...` requests to the API, signed with the caller's own AWS
credentials (the botocore chain, as the client CLI uses).

A signing proxy on loopback spends the user's money for whoever can reach it, so it forwards only requests the
console page itself makes:
- the Host header must be this server's own loopback address (a DNS-rebinding page has its own host name);
- the request must carry `X-Wanflow-Console: 1`, a header another web site's page cannot add without a CORS
  preflight, which this server refuses (no OPTIONS, no CORS headers);
- an Origin header, when present, must be this server's own origin.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import httpx

from wanflow_tools.console.site import ConsoleSite, StaticResponse

log = logging.getLogger(__name__)

CONSOLE_HEADER = "x-wanflow-console"
LOOPBACK = "127.0.0.1"
# The HTTP API's own request limit (API Gateway HTTP APIs take at most 10 MB).
MAX_BODY_BYTES = 10 * 1024 * 1024
# Request headers the API reads; nothing else (cookies, the browser's own headers) leaves this machine.
FORWARDED_REQUEST_HEADERS = ("accept", "content-type", "idempotency-key")
# Response headers the page uses.
FORWARDED_RESPONSE_HEADERS = ("content-type", "location", "retry-after", "cache-control", "apigw-requestid")


def _json(status: int, code: str, message: str) -> StaticResponse:
    body = json.dumps({"code": code, "message": message, "errors": []}).encode()
    return StaticResponse(status, [("content-type", "application/json")], body)


class ConsoleProxy:
    """Serves the console on 127.0.0.1:`port` and forwards its `/v1/...` calls to `api_url` through `auth`."""

    def __init__(
        self,
        api_url: str,
        *,
        auth: httpx.Auth | None,
        port: int = 8001,
        site: ConsoleSite | None = None,
        timeout_seconds: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._site = site or ConsoleSite()
        self._http = httpx.Client(
            base_url=self.api_url, auth=auth, timeout=timeout_seconds, transport=transport, follow_redirects=False
        )
        self._server = ThreadingHTTPServer((LOOPBACK, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="wanflow-console", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def handle(self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes) -> StaticResponse:
        path = urlsplit(target).path or "/"
        page = self._site.respond(method, path)
        if page is not None:
            return page
        if not path.startswith("/v1/"):
            return _json(404, "NotFound", "no such page")
        lowered = {name.lower(): value for name, value in headers}
        refusal = self._refusal(lowered)
        if refusal is not None:
            log.warning("refused %s %s: %s", method, path, refusal)
            return _json(403, "Forbidden", refusal)
        forwarded = {name: lowered[name] for name in FORWARDED_REQUEST_HEADERS if name in lowered}
        try:
            response = self._http.request(method, target, headers=forwarded, content=body or None)
        except httpx.HTTPError as error:
            log.warning("%s %s: the API did not answer: %s", method, path, error)
            return _json(502, "ApiUnreachable", f"the wanflow API at {self.api_url} did not answer: {error}")
        kept = [(name, response.headers[name]) for name in FORWARDED_RESPONSE_HEADERS if name in response.headers]
        return StaticResponse(response.status_code, kept, response.content)

    def _refusal(self, headers: dict[str, str]) -> str | None:
        own_hosts = {self.url.removeprefix("http://"), f"localhost:{self._server.server_address[1]}"}
        if headers.get("host") not in own_hosts:
            return "the Host header is not this console's loopback address"
        origin = headers.get("origin")
        if origin is not None and origin.removeprefix("http://") not in own_hosts:
            return "requests from other web pages are not forwarded"
        if headers.get(CONSOLE_HEADER) != "1":
            return "only the console page's own requests (header X-Wanflow-Console: 1) are forwarded"
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "wanflow-console"

            def _serve(self) -> None:
                length_header = self.headers.get("Content-Length") or "0"
                if not length_header.isdigit() or int(length_header) > MAX_BODY_BYTES:
                    self.close_connection = True
                    self._reply(_json(413, "PayloadTooLarge", "the request body is missing a length or too large"))
                    return
                body = self.rfile.read(int(length_header)) if int(length_header) else b""
                self._reply(proxy.handle(self.command, self.path, self.headers.items(), body))

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

            def _reply(self, response: StaticResponse) -> None:
                self.send_response(response.status)
                for name, value in response.headers:
                    self.send_header(name, value)
                self.send_header("content-length", str(len(response.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(response.body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("console: " + format, *args)

        return Handler
