"""A local stand-in for API Gateway HTTP APIs with Lambda proxy integrations (payload format 2.0).

Routes come from the template's HttpApi events. Each request becomes the event API Gateway would send
(https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html)
and the function's answer is turned back into an HTTP response by the same rules: a dict with
`statusCode` is used as is; any other JSON value is a 200 application/json body. Unknown routes get
API Gateway's 404 `{"message":"Not Found"}`; function errors its 500 `{"message":"Internal Server Error"}`.
Local mode has no auth: requests carry a fixed local IAM principal in `requestContext.authorizer.iam`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from wanflow_tools.moto_stack.lambdas import InvocationResult
from wanflow_tools.moto_stack.template import HttpRoute

log = logging.getLogger(__name__)

# API Gateway HTTP API quota: request payload at most 10 MB.
MAX_REQUEST_BYTES = 10 * 1024 * 1024
LOCAL_ACCOUNT_ID = "123456789012"
LOCAL_PRINCIPAL = {
    "accessKey": "AKIALOCALWANFLOW0000",
    "accountId": LOCAL_ACCOUNT_ID,
    "callerId": "AIDALOCALWANFLOW0000",
    "cognitoIdentity": None,
    "principalOrgId": None,
    "userArn": f"arn:aws:iam::{LOCAL_ACCOUNT_ID}:user/wanflow-local",
    "userId": "AIDALOCALWANFLOW0000",
}
# Content types API Gateway passes as text; every other body arrives base64-encoded.
_TEXT_TYPES = re.compile(r"^(text/.*|application/(json|xml|javascript|.*\+json|.*\+xml))$")


@dataclass(frozen=True)
class RouteMatch:
    route: HttpRoute
    path_parameters: dict[str, str]


class Router:
    """Matches method + path against the template's routes, API Gateway style."""

    def __init__(self, routes: Sequence[HttpRoute]) -> None:
        compiled = []
        for route in routes:
            compiled.append((route, _path_pattern(route.path)))
        # Most specific first: literal segments beat parameters, parameters beat greedy {proxy+}.
        compiled.sort(key=lambda item: (item[0].path.count("+}"), item[0].path.count("{"), -len(item[0].path)))
        self._routes = compiled

    def match(self, method: str, path: str) -> RouteMatch | None:
        for route, pattern in self._routes:
            if route.method not in (method, "ANY"):
                continue
            found = pattern.fullmatch(path)
            if found:
                return RouteMatch(route, {name: unquote(value) for name, value in found.groupdict().items()})
        return None


def _path_pattern(path: str) -> re.Pattern[str]:
    parts = []
    for segment in re.split(r"(\{[^}]+\})", path):
        if segment.startswith("{") and segment.endswith("}"):
            name = segment[1:-1]
            if name.endswith("+"):
                parts.append(f"(?P<{name[:-1]}>.+)")
            else:
                parts.append(f"(?P<{name}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("".join(parts))


def build_event(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    match: RouteMatch,
    source_ip: str,
    host: str,
    request_id: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The HTTP API payload format 2.0 event for one request."""
    now = time.time() if now is None else now
    request_id = request_id or _api_request_id()
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        joined[lower] = f"{joined[lower]},{value}" if lower in joined else value
    joined.setdefault("x-forwarded-for", source_ip)
    joined.setdefault("x-forwarded-proto", "http")
    joined.setdefault("x-forwarded-port", host.rpartition(":")[2] if ":" in host else "80")

    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value

    domain = host or "localhost"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": match.route.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = joined
    if query:
        event["queryStringParameters"] = query
    if match.path_parameters:
        event["pathParameters"] = match.path_parameters
    event["requestContext"] = {
        "accountId": LOCAL_ACCOUNT_ID,
        "apiId": "local",
        "authorizer": {"iam": dict(LOCAL_PRINCIPAL)},
        "domainName": domain,
        "domainPrefix": domain.split(".")[0].split(":")[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": joined.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": match.route.route_key,
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if body:
        content_type = joined.get("content-type", "").split(";")[0].strip().lower()
        if _TEXT_TYPES.match(content_type):
            try:
                event["body"] = body.decode("utf-8")
                event["isBase64Encoded"] = False
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(body).decode("ascii")
                event["isBase64Encoded"] = True
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
    return event


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def build_response(result: InvocationResult) -> HttpResponse:
    """API Gateway's interpretation of a payload 2.0 Lambda response."""
    if not result.ok:
        return _json_response(500, {"message": "Internal Server Error"})
    value = result.value()
    if not (isinstance(value, dict) and "statusCode" in value):
        # No statusCode: API Gateway assumes 200 and a JSON body made of the whole result.
        return HttpResponse(200, [("content-type", "application/json")], result.payload.encode("utf-8"))
    try:
        status = int(value["statusCode"])
    except (TypeError, ValueError):
        return _json_response(500, {"message": "Internal Server Error"})
    headers = [(str(name), str(header)) for name, header in (value.get("headers") or {}).items()]
    for name, values in (value.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(item)) for item in values)
    headers.extend(("set-cookie", str(cookie)) for cookie in value.get("cookies") or [])
    body = value.get("body")
    if body is None:
        payload = b""
    elif value.get("isBase64Encoded"):
        payload = base64.b64decode(body)
    else:
        payload = str(body).encode("utf-8")
    return HttpResponse(status, headers, payload)


def _json_response(status: int, body: Any) -> HttpResponse:
    return HttpResponse(status, [("content-type", "application/json")], json.dumps(body).encode("utf-8"))


def _api_request_id() -> str:
    # API Gateway request ids look like "Ab1cDEfGhIjKlM=".
    return base64.b64encode(uuid.uuid4().bytes[:10]).decode("ascii")


class LocalHttpApi:
    """A threaded HTTP server that dispatches to functions as API Gateway would."""

    def __init__(
        self,
        *,
        routes: Sequence[HttpRoute],
        invoke: Callable[[str, dict[str, Any]], InvocationResult],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._router = Router(routes)
        self._invoke = invoke
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # a bound AF_INET address is (str, int); the stubs also allow bytes
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-http-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def handle(
        self, *, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes, source_ip: str, host: str
    ) -> HttpResponse:
        request_id = _api_request_id()
        split = urlsplit(target)
        raw_path = split.path or "/"
        match = self._router.match(method, raw_path)
        if match is None:
            response = _json_response(404, {"message": "Not Found"})
        elif len(body) > MAX_REQUEST_BYTES:
            response = _json_response(413, {"message": "Request Entity Too Large"})
        else:
            event = build_event(
                method=method,
                raw_path=raw_path,
                raw_query=split.query,
                headers=headers,
                body=body,
                match=match,
                source_ip=source_ip,
                host=host,
                request_id=request_id,
            )
            result = self._invoke(match.route.function, event)
            if not result.ok:
                log.warning("%s %s: function error %s", method, raw_path, result.payload)
            response = build_response(result)
        response.headers.append(("apigw-requestid", request_id))
        return response

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "wanflow-local"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                response = api.handle(
                    method=self.command,
                    target=self.path,
                    headers=list(self.headers.items()),
                    body=body,
                    source_ip=self.client_address[0],
                    host=self.headers.get("Host", ""),
                )
                self.send_response(response.status)
                names = {name.lower() for name, _ in response.headers}
                for name, value in response.headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                if "date" not in names:
                    self.send_header("date", formatdate(usegmt=True))
                self.send_header("content-length", str(len(response.body)))
                try:
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):
                    # The client hung up before its reply (e.g. Ctrl-C); API Gateway would drop it silently too.
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

            def send_response(self, code: int, message: str | None = None) -> None:
                # BaseHTTPRequestHandler adds its own Server/Date headers; keep only ours.
                self.log_request(code)
                self.send_response_only(code, message)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http api: " + format, *args)

        return Handler
