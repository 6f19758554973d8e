"""A local stand-in for API Gateway HTTP APIs with Lambda proxy integrations (payload format 2.0).

Routes come from the template's HttpApi events. Each request becomes the event API Gateway would send
(https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html)
and the function's answer is turned back into an HTTP response by the same rules: a dict with
`statusCode` is used as is; any other JSON value is a 200 application/json body. Unknown routes get
API Gateway's 404 `{"message":"Not Found"}`; function errors its 500 `{"message":"Internal Server Error"}`.

Local mode has no auth: requests carry one implicit local IAM principal in `requestContext.authorizer.iam` (the
same principal the local S3 events name as uploader), unless the header `X-Wanflow-Principal` names another, so
that caller isolation can be tried offline.

`pages` serves static pages beside the routes (local mode's web console at `/`); API Gateway itself serves none.

Malformed HTTP gets a JSON answer and never a hang: a bad or negative Content-Length is a 400, a body over the
limit a 413 (read no further), an unknown method a 405, and a body that no Lambda could receive (over 6 MB) is
answered with wanflow's own 413 instead of API Gateway's bare 500, so that the documented limit holds at the edge.
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
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from wanflow_tools.moto_stack.lambdas import MAX_PAYLOAD_BYTES as LAMBDA_MAX_PAYLOAD_BYTES
from wanflow_tools.moto_stack.lambdas import InvocationResult
from wanflow_tools.moto_stack.template import HttpRoute

log = logging.getLogger(__name__)

# API Gateway HTTP API quota: request payload at most 10 MB.
MAX_REQUEST_BYTES = 10 * 1024 * 1024
# Methods API Gateway routes; anything else is answered 405 without looking for a route.
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
PRINCIPAL_HEADER = "x-wanflow-principal"
_PRINCIPAL_NAME = re.compile(r"^[A-Za-z0-9_+=,.@-]{1,64}$")
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
# Room for the rest of the event around the body (headers, request context); a body that fills the Lambda payload
# alone cannot be delivered.
EVENT_OVERHEAD_BYTES = 64 * 1024
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

    def methods_at(self, path: str) -> list[str]:
        """The methods routed at `path` (for a 405's Allow header)."""
        return sorted({route.method for route, pattern in self._routes if pattern.fullmatch(path)})

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
        "authorizer": {"iam": local_principal(joined.get(PRINCIPAL_HEADER))},
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


def local_principal(name: str | None) -> dict[str, Any]:
    """The IAM context of the implicit local caller, or of the IAM user `name` (header X-Wanflow-Principal)."""
    if not name:
        return dict(LOCAL_PRINCIPAL)
    return {
        **LOCAL_PRINCIPAL,
        "callerId": name,
        "userId": name,
        "userArn": f"arn:aws:iam::{LOCAL_ACCOUNT_ID}:user/{name}",
    }


class BadRequest(Exception):
    """The request cannot be parsed: answered with `status` and a JSON message, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Page(Protocol):
    """A static page served beside the API (the web console), not through a function."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> list[tuple[str, str]]: ...

    @property
    def body(self) -> bytes: ...


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
        pages: Callable[[str, str], Page | None] | None = None,
    ) -> None:
        self._router = Router(routes)
        self._invoke = invoke
        self._pages = pages
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
        page = self._pages(method, raw_path) if self._pages is not None else None
        if page is not None:
            return HttpResponse(page.status, list(page.headers), page.body)
        match = self._router.match(method, raw_path)
        principal = next((value for name, value in headers if name.lower() == PRINCIPAL_HEADER), None)
        allowed = self._router.methods_at(raw_path)
        if match is None and allowed:  # the path exists, with other methods
            response = _json_response(405, {"message": "Method Not Allowed"})
            response.headers.append(("allow", ", ".join(allowed)))
        elif match is None:
            response = _json_response(404, {"message": "Not Found"})
        elif len(body) > MAX_REQUEST_BYTES:
            response = _json_response(413, {"message": "Request Entity Too Large"})
        elif principal is not None and not _PRINCIPAL_NAME.match(principal):
            response = _json_response(400, {"message": "X-Wanflow-Principal must be 1-64 of A-Z a-z 0-9 _+=,.@-"})
        elif len(body) > LAMBDA_MAX_PAYLOAD_BYTES - EVENT_OVERHEAD_BYTES:
            # Deployed, Lambda refuses such an event and API Gateway answers a bare 500; locally the documented
            # limit holds: wanflow's own 413, in its error shape.
            response = _json_response(
                413,
                {
                    "code": "PayloadTooLarge",
                    "message": "the request body is larger than the API accepts; upload the image with "
                    "POST /v1/uploads and pass its s3:// URI as img_url",
                    "errors": [],
                    "request_id": request_id,
                },
            )
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
                try:
                    body = self._read_body()
                except BadRequest as refused:
                    self.close_connection = True  # what is left of the body cannot be told from a next request
                    self._reply(_json_response(refused.status, {"message": refused.message}))
                    return
                response = api.handle(
                    method=self.command,
                    target=self.path,
                    headers=list(self.headers.items()),
                    body=body,
                    source_ip=self.client_address[0],
                    host=self.headers.get("Host", ""),
                )
                self._reply(response)

            def _read_body(self) -> bytes:
                lengths = self.headers.get_all("Content-Length") or []
                chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
                if chunked and lengths:
                    raise BadRequest(400, "Bad Request: both Content-Length and Transfer-Encoding")
                if chunked:
                    return self._read_chunked()
                if not lengths:
                    return b""  # HTTP/1.1: no length and no chunking means no body (curl -X POST sends none)
                if len(set(lengths)) > 1 or not lengths[0].strip().isdigit():
                    raise BadRequest(400, "Bad Request: Content-Length must be one non-negative whole number")
                length = int(lengths[0])
                if length > MAX_REQUEST_BYTES:
                    raise BadRequest(413, "Request Entity Too Large")
                return self.rfile.read(length) if length else b""

            def _read_chunked(self) -> bytes:
                body = bytearray()
                while True:
                    size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
                    try:
                        size = int(size_line, 16)
                    except ValueError:
                        raise BadRequest(400, "Bad Request: malformed chunk") from None
                    if size < 0 or len(body) + size > MAX_REQUEST_BYTES:
                        raise BadRequest(413, "Request Entity Too Large")
                    if size == 0:
                        while self.rfile.readline(1024).strip():  # trailers
                            pass
                        return bytes(body)
                    body += self.rfile.read(size)
                    self.rfile.readline(1024)

            def __getattr__(self, name: str) -> Any:
                # BaseHTTPRequestHandler answers a method it has no do_<METHOD> for with 501 HTML; route every
                # method through _serve, which answers 405 JSON for the ones API Gateway does not know.
                if name.startswith("do_"):
                    return self._serve
                raise AttributeError(name)

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                # Malformed request lines and headers: JSON like every other answer, then close. A request line
                # that did not parse leaves the version at HTTP/0.9, which would suppress the status line.
                self.close_connection = True
                self.request_version = "HTTP/1.1"
                self._reply(_json_response(code, {"message": message or HTTPStatus(code).phrase}))

            def _reply(self, response: HttpResponse) -> None:
                self.send_response(response.status)
                names = {name.lower() for name, _ in response.headers}
                for name, value in response.headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                if "date" not in names:
                    self.send_header("date", formatdate(usegmt=True))
                if self.close_connection:
                    self.send_header("connection", "close")
                self.send_header("content-length", str(len(response.body)))
                try:
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):
                    # The client hung up before its reply (e.g. Ctrl-C); API Gateway would drop it silently too.
                    self.close_connection = True

            def send_response(self, code: int, message: str | None = None) -> None:
                # BaseHTTPRequestHandler adds its own Server/Date headers; keep only ours.
                self.log_request(code)
                self.send_response_only(code, message)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http api: " + format, *args)

        return Handler
