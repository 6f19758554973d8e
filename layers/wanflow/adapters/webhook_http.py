"""HTTP adapter of webhook deliveries: one POST to a checked, pinned address.

Every attempt resolves the target's host name again and checks EVERY address it resolves to
(`wanflow.webhooks.address_refusal`); the request then connects to the checked address itself, with the host name
kept for the Host header and for TLS (SNI and certificate verification, httpx's `sni_hostname` extension), so a
DNS answer that changes between the check and the connection (DNS rebinding) cannot send it elsewhere. Redirects
are never followed (a 3xx is a failed attempt), the whole attempt has a 10 s budget, and at most 1 KB of the
answer is read.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from wanflow.ports import WebhookResponse
from wanflow.webhooks import DELIVERY_TIMEOUT_SECONDS, RESPONSE_BODY_MAX_BYTES, address_refusal

if TYPE_CHECKING:
    import httpx

# socket.getaddrinfo, or a stand-in (tests: a name that resolves to a private address)
Resolver = Callable[..., list[tuple[Any, ...]]]


class HttpWebhookSender:
    """The `WebhookSender` port: httpx (imported on first use), never through a proxy, no redirects."""

    def __init__(
        self,
        resolve: Resolver | None = None,
        timeout: float = DELIVERY_TIMEOUT_SECONDS,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`resolve` and `verify` (the trusted certificates) are the system's unless a test gives its own."""
        self._resolve = resolve or socket.getaddrinfo
        self._timeout = timeout
        self._verify = verify
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def post(self, url: str, body: bytes, headers: dict[str, str], *, allow_loopback: bool) -> WebhookResponse:
        started = time.monotonic()

        def answer(status_code: int | None = None, error: str | None = None, text: str = "") -> WebhookResponse:
            return WebhookResponse(
                status_code=status_code,
                duration_ms=int((time.monotonic() - started) * 1000),
                error=error,
                body=text,
            )

        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = self._resolve(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            return answer(error=f"could not resolve {host}: {exc}")
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
        if not addresses:
            return answer(error=f"{host} has no address")
        for address in addresses:
            refusal = address_refusal(address, allow_loopback=allow_loopback)
            if refusal:
                return answer(error=f"refused: {host} resolves to {address}, {refusal}")
        pinned = addresses[0]
        netloc = f"[{pinned}]" if pinned.version == 6 else str(pinned)
        pinned_url = urlunsplit((parts.scheme, f"{netloc}:{port}", parts.path or "/", parts.query, ""))
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        if ":" in host and not host.startswith("["):
            host_header = f"[{host}]" if parts.port is None else f"[{host}]:{parts.port}"
        request_headers = {**headers, "host": host_header}
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        import httpx

        deadline = started + self._timeout
        try:
            with self._http().stream(
                "POST", pinned_url, content=body, headers=request_headers, extensions=extensions
            ) as response:
                received = bytearray()
                for chunk in response.iter_raw():
                    received.extend(chunk)
                    if len(received) >= RESPONSE_BODY_MAX_BYTES or time.monotonic() > deadline:
                        break
                text = bytes(received[:RESPONSE_BODY_MAX_BYTES]).decode("utf-8", "replace")
                error = None
                if 300 <= response.status_code < 400:
                    error = "redirects are not followed"
                elif time.monotonic() > deadline:
                    error = f"took longer than {self._timeout:g} s"
                return answer(response.status_code, error, text)
        except httpx.TimeoutException:
            return answer(error=f"no answer within {self._timeout:g} s")
        except httpx.HTTPError as exc:
            return answer(error=f"{type(exc).__name__}: {exc}"[:300])

    def _http(self) -> httpx.Client:
        import httpx

        with self._lock:
            if self._client is None:
                # trust_env=False: no proxy from the environment may see (or redirect) a delivery.
                self._client = httpx.Client(
                    follow_redirects=False, trust_env=False, timeout=httpx.Timeout(self._timeout), verify=self._verify
                )
            return self._client
