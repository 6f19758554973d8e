"""The webhook HTTP adapter against a receiver on loopback: redirects not followed, at most 1 KB of the answer kept,
the resolved address checked on every attempt and the connection pinned to it, a time budget."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from wanflow.adapters.webhook_http import HttpWebhookSender
from wanflow.webhooks import RESPONSE_BODY_MAX_BYTES


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, Any]] = []
        self.release = threading.Event()  # a /hang request waits for it

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.seen.append({"path": self.path, "host": self.headers["host"], "body": body})
        if self.path == "/redirect":
            self._reply(302, b"", {"location": "https://elsewhere.example/"})
        elif self.path == "/big":
            self._reply(200, b"x" * 100_000)
        elif self.path == "/hang":
            self.server.release.wait(10)
            self._reply(200, b"late")
        else:
            self._reply(204, b"")

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client stopped reading: what it should do past 1 KB
            self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def resolving_to(address: str) -> Any:
    """A resolver that answers every name with `address` (what a hostile DNS record would do)."""

    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    return resolve


def test_a_2xx_is_success(receiver: Receiver) -> None:
    response = HttpWebhookSender().post(
        f"http://127.0.0.1:{receiver.port}/ok", b"{}", {"webhook-id": "msg_1"}, allow_loopback=True
    )
    assert response.ok and response.status_code == 204 and response.error is None
    assert receiver.seen[0]["body"] == b"{}"


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    response = HttpWebhookSender().post(f"http://127.0.0.1:{receiver.port}/redirect", b"{}", {}, allow_loopback=True)
    assert not response.ok and response.status_code == 302
    assert response.error == "redirects are not followed"
    assert [seen["path"] for seen in receiver.seen] == ["/redirect"]


def test_at_most_1_kb_of_the_answer_is_kept(receiver: Receiver) -> None:
    response = HttpWebhookSender().post(f"http://127.0.0.1:{receiver.port}/big", b"{}", {}, allow_loopback=True)
    assert response.ok and response.body == "x" * RESPONSE_BODY_MAX_BYTES


def test_loopback_is_refused_without_the_local_mode_setting(receiver: Receiver) -> None:
    response = HttpWebhookSender().post(f"http://127.0.0.1:{receiver.port}/ok", b"{}", {}, allow_loopback=False)
    assert response.status_code is None and response.error is not None
    assert "refused" in response.error and "loopback" in response.error
    assert receiver.seen == []


@pytest.mark.parametrize("address", ["10.0.0.7", "169.254.169.254", "::ffff:192.168.0.1", "fd00:ec2::254"])
def test_a_name_resolving_to_a_forbidden_address_is_refused_before_connecting(address: str) -> None:
    sender = HttpWebhookSender(resolve=resolving_to(address))
    response = sender.post("https://hooks.example.com/x", b"{}", {}, allow_loopback=True)
    assert response.status_code is None and response.error is not None
    assert response.error.startswith(f"refused: hooks.example.com resolves to {ipaddress.ip_address(address)}")


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(receiver: Receiver) -> None:
    # The name resolves (once, for this attempt) to the receiver's loopback address: the request connects there,
    # and the receiver sees the name in Host, as a TLS receiver would in SNI.
    sender = HttpWebhookSender(resolve=resolving_to("127.0.0.1"))
    response = sender.post(f"http://hooks.example.com:{receiver.port}/ok", b"{}", {}, allow_loopback=True)
    assert response.ok
    assert receiver.seen[0]["host"] == f"hooks.example.com:{receiver.port}"


def test_an_unanswered_attempt_ends_at_the_timeout(receiver: Receiver) -> None:
    sender = HttpWebhookSender(timeout=0.3)
    response = sender.post(f"http://127.0.0.1:{receiver.port}/hang", b"{}", {}, allow_loopback=True)
    receiver.release.set()
    assert response.status_code is None and response.error == "no answer within 0.3 s"


def test_an_unresolvable_name_is_a_failed_attempt() -> None:
    def broken(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    response = HttpWebhookSender(resolve=broken).post("https://nowhere.invalid/", b"{}", {}, allow_loopback=False)
    assert response.status_code is None and response.error is not None and "could not resolve" in response.error


# ------------------------------------------------------------------------------------------- TLS to a pinned address


def _certificate(common_name: str, issuer: tuple[Any, Any] | None = None) -> tuple[Any, Any]:
    """(certificate, key): a CA when `issuer` is None, else a server certificate for `common_name` it signs."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_certificate, issuer_key = issuer if issuer is not None else (None, key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_certificate.subject if issuer_certificate is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
    )
    # The extensions Python 3.13's strict verification (VERIFY_X509_STRICT, on by default) requires.
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    from cryptography.hazmat.primitives import hashes

    return builder.sign(issuer_key, hashes.SHA256()), key


@pytest.fixture
def tls_receiver(tmp_path: Any) -> Iterator[tuple[Receiver, ssl.SSLContext]]:
    """The receiver over TLS with a certificate for hooks.example.com from a test CA; the client context trusts
    only that CA."""
    from cryptography.hazmat.primitives import serialization

    authority = _certificate("wanflow test CA")
    certificate, key = _certificate("hooks.example.com", authority)
    (tmp_path / "server.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    client_context = ssl.create_default_context(cadata=authority[0].public_bytes(serialization.Encoding.PEM).decode())
    server = Receiver()
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server, client_context
    server.shutdown()
    server.server_close()


def test_tls_to_the_pinned_address_verifies_the_host_name(tls_receiver: tuple[Receiver, ssl.SSLContext]) -> None:
    server, trusted = tls_receiver
    sender = HttpWebhookSender(resolve=resolving_to("127.0.0.1"), verify=trusted)
    response = sender.post(f"https://hooks.example.com:{server.port}/ok", b"{}", {}, allow_loopback=True)
    assert response.ok, response
    assert server.seen[0]["host"] == f"hooks.example.com:{server.port}"
    # The same address under another name: the certificate does not match it, so nothing is sent.
    other = HttpWebhookSender(resolve=resolving_to("127.0.0.1"), verify=trusted)
    refused = other.post(f"https://elsewhere.example.com:{server.port}/ok", b"{}", {}, allow_loopback=True)
    assert refused.status_code is None and refused.error is not None and "CERTIFICATE_VERIFY_FAILED" in refused.error
    assert len(server.seen) == 1
