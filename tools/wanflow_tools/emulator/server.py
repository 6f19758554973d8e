"""The emulator: an HTTP server on loopback (standard library ThreadingHTTPServer) plus its parts.

`ThreadingHTTPServer` is used on purpose: each request owns its socket, so faults can hang, drop the connection
after the task was accepted, or cut a download short, which higher-level frameworks make hard.

    with Emulator(EmulatorConfig(pending_seconds=0.2, running_seconds=0.2)) as emulator:
        dashscope.base_http_api_url = emulator.base_url     # http://127.0.0.1:<port>/api/v1
        ...
        assert emulator.store.count() == 1
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from wanflow_tools.emulator.api import DashScopeApi
from wanflow_tools.emulator.config import EmulatorConfig
from wanflow_tools.emulator.control import Control
from wanflow_tools.emulator.downloads import Downloads, VideoUrls
from wanflow_tools.emulator.faults import FaultPlan
from wanflow_tools.emulator.lifecycle import Lifecycle, delete_files
from wanflow_tools.emulator.protocol import (
    API_PREFIX,
    CONTROL_PREFIX,
    CREATE_PATH,
    INTERNAL_ERROR,
    RESULTS_PREFIX,
    TASKS_PATH,
    URL_ERROR,
    ApiError,
    CloseConnection,
    FileResponse,
    Outcome,
    Request,
    Response,
    error_response,
    json_response,
    new_request_id,
)
from wanflow_tools.emulator.ratelimit import SlidingWindowLimiter
from wanflow_tools.emulator.request_log import DROPPED, RequestLog
from wanflow_tools.emulator.rules import output_size
from wanflow_tools.emulator.store import TaskStore, Timings
from wanflow_tools.emulator.video_render import Renderer

logger = logging.getLogger("wanflow_tools.emulator")

Endpoint = Callable[..., Outcome]
_CHUNK_BYTES = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: Endpoint
    kind: str | None = None  # DashScope API requests are logged under this name (emulator.request_log)


def route(method: str, path_pattern: str, endpoint: Endpoint, kind: str | None = None) -> Route:
    return Route(method, re.compile(f"^{path_pattern}$"), endpoint, kind)


class Emulator:
    """A DashScope stand-in; `start()` returns the base URL for DashScope clients (ending in /api/v1)."""

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        self.config = dataclasses.replace(config or EmulatorConfig(), **overrides)
        config = self.config
        self.faults = FaultPlan(config.faults)
        self.store = TaskStore(
            Timings(config.pending_seconds, config.running_seconds, config.task_ttl_seconds, config.url_ttl_seconds),
            max_running=config.max_running,
        )
        self.results_dir: str | None = None  # set while running
        self.renderer = Renderer(workers=config.render_workers, use_processes=config.render_in_processes)
        self.lifecycle = Lifecycle(
            self.store, self.renderer, clock=config.clock, size_rule=output_size, tick_seconds=config.tick_seconds
        )
        self.limiter = SlidingWindowLimiter(config.clock)
        self.requests = RequestLog(config.clock)
        self._stopping = threading.Event()
        urls = VideoUrls()
        self.api = DashScopeApi(config, self.store, self.faults, self.limiter, urls, self.advance, self._stopping)
        self.downloads = Downloads(self.store, self.faults, urls, config.clock)
        self.control = Control(self.store, self.faults, self.advance, self.reset, self._base_url_for, self.requests)
        self.routes = [
            route("POST", CREATE_PATH, self.api.create_task, "create"),
            route("GET", TASKS_PATH, self.api.list_tasks, "list"),
            route("GET", f"{TASKS_PATH}/(?P<task_id>[^/]+)", self.api.get_task, "query"),
            route("POST", f"{TASKS_PATH}/(?P<task_id>[^/]+)/cancel", self.api.cancel_task, "cancel"),
            route("GET", f"{RESULTS_PREFIX}/(?P<task_id>[^/]+)\\.mp4", self.downloads.download),
            route("HEAD", f"{RESULTS_PREFIX}/(?P<task_id>[^/]+)\\.mp4", self.downloads.download),
            route("GET", f"{CONTROL_PREFIX}/health", self.control.health),
            route("GET", f"{CONTROL_PREFIX}/tasks", self.control.tasks),
            route("GET", f"{CONTROL_PREFIX}/faults", self.control.get_faults),
            route("POST", f"{CONTROL_PREFIX}/faults", self.control.set_faults),
            route("DELETE", f"{CONTROL_PREFIX}/faults", self.control.clear_faults),
            route("POST", f"{CONTROL_PREFIX}/reset", self.control.reset),
            route("GET", f"{CONTROL_PREFIX}/requests", self.control.request_log),
        ]
        self._server: _Server | None = None
        self._serving: threading.Thread | None = None

    def set_timings(self, **changes: float) -> None:
        """Change task timings while running (pending_seconds, running_seconds, task_ttl_seconds, url_ttl_seconds).

        They apply to every task from the next lifecycle step, so a test can hold a task PENDING or RUNNING for as
        long as it needs instead of racing a fixed timing.
        """
        self.store.timings = dataclasses.replace(self.store.timings, **changes)

    # -- lifecycle of the emulator itself ----------------------------------------------------------

    def start(self) -> str:
        if self._server is not None:
            return self.base_url
        self._stopping.clear()
        self._server = _Server((self.config.host, self.config.port), self)
        self.results_dir = self.config.results_dir or tempfile.mkdtemp(prefix="wanflow-emulator-")
        os.makedirs(self.results_dir, exist_ok=True)
        self.renderer.reopen()
        self.lifecycle.start(self.results_dir)
        self._serving = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="emulator-http", daemon=True
        )
        self._serving.start()
        logger.info("DashScope emulator listening on %s", self.base_url)
        return self.base_url

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # cuts injected hangs and slow downloads short
        self._server.shutdown()
        self._server.server_close()
        if self._serving is not None:
            self._serving.join()
        self._server = None
        self.lifecycle.stop()
        self.renderer.shutdown()
        if self.config.results_dir is None and self.results_dir is not None:
            shutil.rmtree(self.results_dir, ignore_errors=True)  # the temporary directory start() made
        self.results_dir = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def stopping(self) -> threading.Event:
        """Set while the emulator shuts down; long waits (hangs, slow downloads) watch it."""
        return self._stopping

    # -- addresses --------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return self._server.server_address[1]

    @property
    def root_url(self) -> str:
        """http://host:port (the results and control endpoints hang off this)."""
        return f"http://{self._address()}"

    @property
    def base_url(self) -> str:
        """What DashScope clients take as their base URL: http://host:port/api/v1."""
        return self._base_url_for(self._address())

    def _address(self) -> str:
        host = self.config.host
        if host in ("", "0.0.0.0", "::"):  # noqa: S104 - only to print a usable address
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    def _base_url_for(self, host: str) -> str:
        return f"http://{host}{API_PREFIX}"

    # -- operations -------------------------------------------------------------------------------

    def advance(self) -> None:
        """Advances task lifecycles to the clock's current time (the background ticker does this too)."""
        self.lifecycle.advance()

    def reset(self) -> None:
        """Forgets all tasks, faults and rate-limit counts."""
        delete_files(self.store.clear())
        self.faults.clear()
        self.limiter.reset()
        self.requests.reset()

    def _answer(self, candidate: Route, request: Request, arguments: dict[str, str]) -> Outcome:
        try:
            return candidate.endpoint(request, **arguments)
        except ApiError as error:
            return error_response(error, new_request_id())
        except Exception:  # a bug: answer like DashScope's own 500 rather than dropping the connection
            logger.exception("%s %s failed", request.method, request.path)
            return error_response(ApiError(INTERNAL_ERROR), new_request_id())

    def handle(self, request: Request) -> Outcome:
        """Routes one request; DashScope-style errors for anything that goes wrong."""
        path_matched = False
        for candidate in self.routes:
            match = candidate.pattern.match(request.path)
            if match is None:
                continue
            path_matched = True
            if candidate.method != request.method:
                continue
            outcome = self._answer(candidate, request, match.groupdict())
            if candidate.kind is not None:
                status = outcome.status if isinstance(outcome, Response) else DROPPED
                self.requests.record(candidate.kind, status)
            return outcome
        if request.path.startswith(API_PREFIX) or path_matched:
            return error_response(ApiError(URL_ERROR), new_request_id())
        return json_response(404, {"code": "NotFound", "message": f"No such path: {request.path}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that give up (timeouts, dropped downloads) are part of the job; anything else is a bug.
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real service
    server: _Server
    server_version = "wanflow-dashscope-emulator"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and the client's
        # delayed ACK add ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # _dispatch logs each request itself, without the query string (video URLs carry signatures) and never
        # with headers (the API key travels in one).
        pass

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        host, port = self.server.server_address[:2]
        assert isinstance(host, str)  # a bound AF_INET address is (str, int); the stubs also allow bytes
        request = Request(
            method=self.command,
            path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            host=self.headers.get("Host") or f"{host}:{port}",
        )
        outcome = self.server.emulator.handle(request)
        logger.info("%s %s -> %s", request.method, request.path, _describe(outcome))
        if isinstance(outcome, CloseConnection):
            self._hang_up()
        elif isinstance(outcome, FileResponse):
            self._send_file(outcome)
        else:
            self._send(outcome)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _send_file(self, download: FileResponse) -> None:
        size = os.path.getsize(download.path)
        start, end = 0, size - 1
        status = 200
        requested = _RANGE.match(self.headers.get("Range") or "")
        if requested and (requested[1] or requested[2]):
            if requested[1]:
                start, end = int(requested[1]), min(int(requested[2] or size - 1), size - 1)
            else:  # "bytes=-N": the last N bytes
                start = max(size - int(requested[2]), 0)
            if start > end:
                self._send(Response(416, b"", headers={"Content-Range": f"bytes */{size}"}))
                return
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", download.content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        to_send = length if download.truncate_fraction is None else int(length * download.truncate_fraction)
        stopping = self.server.emulator.stopping
        with open(download.path, "rb") as video:
            video.seek(start)
            chunk_bytes = _CHUNK_BYTES
            pause = 0.0
            if download.bytes_per_second is not None:
                chunk_bytes = max(1, download.bytes_per_second // 20)
                pause = chunk_bytes / download.bytes_per_second
            while to_send > 0:
                chunk = video.read(min(chunk_bytes, to_send))
                if not chunk:
                    break
                self.wfile.write(chunk)
                to_send -= len(chunk)
                if pause and to_send > 0 and stopping.wait(pause):
                    break
        if download.truncate_fraction is not None or to_send > 0:
            self._hang_up()

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _describe(outcome: Outcome) -> str:
    if isinstance(outcome, CloseConnection):
        return "connection closed without an answer"
    if isinstance(outcome, FileResponse):
        shaping = " (truncated)" if outcome.truncate_fraction is not None else ""
        shaping += f" (at {outcome.bytes_per_second} B/s)" if outcome.bytes_per_second is not None else ""
        return f"video file{shaping}"
    return str(outcome.status)
