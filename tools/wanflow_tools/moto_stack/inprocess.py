"""AWS calls of this process to the local moto server, handed to the server's WSGI application directly.

Every boto3 call of the handlers (and of moto's Step Functions interpreter, which invokes the Lambda functions
through the same endpoint) normally crosses loopback HTTP: a new TCP connection per request (werkzeug's server
closes each one), a new server thread, the request written, parsed, answered and parsed again, with the GIL changing
hands at every blocking step on both sides. In one Python process that costs more than moto's own work: a DynamoDB
GetItem takes about 2.2 ms of CPU over HTTP and 1.2 ms handed over in-process (bench/burst.py needed the
difference: about 150 such requests per job).

`InProcessAws` patches botocore's `Endpoint._send` so that a request to the local server's address becomes a WSGI
call of the same application the server runs (`DomainDispatcherApplication`: moto's routing, parsing and backends,
the same patches), in the calling thread; requests to any other address go over the network as before. Clients
outside this process (the AWS CLI, the emulator fetching presigned URLs) still use the server. It is opt-in
(`MotoStack(in_process_aws=True)`): the default keeps the local stack's requests on the wire.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

_LOOPBACK_NAMES = ("127.0.0.1", "localhost")


class InProcessAws:
    def __init__(self, app: Any, host: str, port: int) -> None:
        """`app`: the WSGI application of the moto server listening on `host`:`port`."""
        self._app = app
        self._hosts = {host, *_LOOPBACK_NAMES}
        self._port = port
        self._original: Any = None

    def install(self) -> None:
        endpoint_class = _endpoint_class()
        if self._original is not None:
            return
        original = endpoint_class._send
        transport = self

        def _send(endpoint: Any, request: Any) -> Any:
            if not transport.serves(request.url):
                return original(endpoint, request)
            return transport.send(request)

        self._original = original
        endpoint_class._send = _send

    def uninstall(self) -> None:
        if self._original is not None:
            _endpoint_class()._send = self._original
            self._original = None

    def serves(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.port == self._port and (parts.hostname or "") in self._hosts

    def send(self, request: Any) -> Any:
        """The moto application's answer to a botocore `AWSPreparedRequest`, as a botocore `AWSResponse`."""
        from botocore.awsrequest import AWSResponse

        environ = wsgi_environ(request.method, request.url, request.headers.items(), _body_bytes(request.body))
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None  # the legacy write() callable; moto never uses it

        try:
            chunks = self._app(environ, start_response)
            try:
                body = b"".join(chunks)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        except Exception:  # what the server would answer for an error that escaped the application
            log.exception("moto failed on %s %s", request.method, request.url)
            captured = {"status": "500 INTERNAL SERVER ERROR", "headers": [("Content-Type", "text/plain")]}
            body = b"Internal Server Error"
        headers: dict[str, str] = {}
        for name, value in captured["headers"]:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        status = int(captured["status"].split(" ", 1)[0])
        return AWSResponse(request.url, status, cast(Any, headers), _RawBody(body))  # any mapping will do


def _endpoint_class() -> Any:
    from botocore.endpoint import Endpoint

    return Endpoint  # typed as Any: `_send` is private, so botocore's stubs leave it out


def wsgi_environ(method: str, url: str, header_items: Iterable[tuple[str, Any]], body: bytes) -> dict[str, Any]:
    """The WSGI environ werkzeug's server (with moto's `MotoRequestHandler`) builds for this request."""
    from moto.core.request import (
        PRESERVED_HEADER_NAMES_ENVIRON_KEY,
        environ_key_for_header,
        should_preserve_original_header_name,
    )

    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    environ: dict[str, Any] = {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": parts.scheme or "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "SERVER_SOFTWARE": "wanflow-in-process",
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": _latin1(unquote(parts.path)),
        "QUERY_STRING": _latin1(parts.query),
        "REQUEST_URI": _latin1(target),
        "RAW_URI": _latin1(target),
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": 0,
        "SERVER_NAME": parts.hostname or "127.0.0.1",
        "SERVER_PORT": str(parts.port or 80),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": parts.netloc,  # urllib3 adds Host when it sends; botocore's prepared request has none
        "CONTENT_LENGTH": str(len(body)),
    }
    headers = [(name, value.decode() if isinstance(value, bytes) else str(value)) for name, value in header_items]
    for name, value in headers:
        if "_" in name:
            continue  # werkzeug's server drops these (WSGI cannot tell X_Foo from X-Foo); moto restores them below
        if name.lower() == "transfer-encoding":
            continue  # the body is whole here, never in HTTP chunks: CONTENT_LENGTH says how long it is
        key = name.upper().replace("-", "_")
        value = value.replace("\r\n", "")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = f"HTTP_{key}"
            if key in environ and key != "HTTP_HOST":
                value = f"{environ[key]},{value}"
        environ[key] = value
    # MotoRequestHandler.make_environ: headers whose names have underscores (S3 metadata) keep their spelling.
    dashed = {environ_key_for_header(name) for name, _ in headers if "_" not in name}
    names: dict[str, str] = {}
    values: dict[str, list[str]] = {}
    for name, value in headers:
        if not should_preserve_original_header_name(name):
            continue
        key = environ_key_for_header(name)
        if key in dashed:
            continue
        names.setdefault(key, name)
        values.setdefault(key, []).append(value.replace("\r\n", ""))
    for key, key_values in values.items():
        environ[key] = ",".join(key_values)
    environ[PRESERVED_HEADER_NAMES_ENVIRON_KEY] = names
    return environ


class _RawBody(io.BytesIO):
    """The `raw` of an AWSResponse: botocore reads it with stream(), streaming bodies with read()."""

    def stream(self, **_: Any) -> Any:
        chunk = self.read()
        while chunk:
            yield chunk
            chunk = self.read()


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    return b"".join(iter(lambda: body.read(1024 * 1024), b""))  # a file-like body: botocore rewinds it on retries


def _latin1(text: str) -> str:
    """PEP 3333's "bytes as latin-1" strings, as werkzeug's server passes paths."""
    return text.encode("utf-8").decode("latin-1")
