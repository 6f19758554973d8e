"""Per-job webhooks (docs/product.md, "Webhooks"), the rules only: the request's `webhook` field and its checks, what
a job records of its deliveries, which addresses a delivery may reach, the Standard Webhooks headers and the retry
schedule. Delivering is `wanflow.usecases.webhooks`; the HTTP side is `wanflow.adapters.webhook_http`.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from wanflow.errors import FieldError

JOB_STARTED = "job.started"
ENDING_EVENTS = ("job.succeeded", "job.failed", "job.canceled")
EVENT_TYPES = (*ENDING_EVENTS, JOB_STARTED)
# Without `events`, a webhook hears how its job ended.
DEFAULT_EVENTS = ENDING_EVENTS
URL_MAX_CHARS = 2048
# A job item must stay far below DynamoDB's 400 KB and its event below SNS's 256 KB: only the latest deliveries
# are kept, each with at most RESPONSE_BODY_MAX_BYTES of the receiver's answer.
MAX_DELIVERIES_KEPT = 20
RESPONSE_BODY_MAX_BYTES = 1024
DELIVERY_TIMEOUT_SECONDS = 10.0
# Waits after each failed attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h. Eight attempts over at least 27.6 h
# (jitter only lengthens a wait), so a receiver that is down for a whole day still gets the event.
DEFAULT_RETRY_SECONDS = (5, 300, 1800, 7200, 18000, 36000, 36000)
# SQS ChangeMessageVisibility takes at most 12 hours.
MAX_RETRY_DELAY_SECONDS = 43200
RETRY_JITTER = 0.2  # each wait is its schedule entry plus up to 20%, so retries of many deliveries spread out

# Addresses a delivery never goes to, whatever the URL's host name resolves to: cloud metadata endpoints first
# (they are link-local or private too, but deserve their own word in the message).
_METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# IPv6 prefixes that embed an IPv4 address (NAT64, 6to4): judged by the embedded address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

DeliveryState = Literal["pending", "retrying", "delivered", "failed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class WebhookRequest(_Strict):
    """The `webhook` field of a job request, as sent; `check_webhook` validates it and fills `events`."""

    url: str
    # Any: every item is checked by `check_webhook`, which names it as `webhook.events[i]`.
    events: list[Any] | None = None


class Delivery(BaseModel):
    """One attempt to deliver one event."""

    event_id: str
    type: str
    attempt: int
    at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: int = 0
    # The start of the receiver's answer, for debugging a refusal (at most RESPONSE_BODY_MAX_BYTES).
    response: str | None = None

    def public_view(self) -> dict[str, Any]:
        from wanflow.jobs import rfc3339  # here, not at the top: wanflow.jobs imports this module

        view: dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.type,
            "attempt": self.attempt,
            "at": rfc3339(self.at),
            "duration_ms": self.duration_ms,
        }
        if self.status_code is not None:
            view["status_code"] = self.status_code
        if self.error is not None:
            view["error"] = self.error
        if self.response:
            view["response"] = self.response
        return view


class JobWebhook(BaseModel):
    """A job's webhook: where its events go, and what happened to the latest deliveries."""

    url: str
    events: list[str]
    state: DeliveryState = "pending"
    deliveries: list[Delivery] = Field(default_factory=list)
    # job.started went to the webhook queue (set once, by a conditional update: it is never sent twice).
    started_sent: bool = False

    def record(self, delivery: Delivery, state: DeliveryState) -> None:
        self.deliveries = [*self.deliveries, delivery][-MAX_DELIVERIES_KEPT:]
        self.state = state

    def public_view(self, *, reveal_url: bool = True) -> dict[str, Any]:
        """The webhook as its owner sees it; `reveal_url=False` (events, the job document beside the video) shows
        only the URL's origin (see `redacted_url`)."""
        return {
            "url": self.url if reveal_url else redacted_url(self.url),
            "events": list(self.events),
            "state": self.state,
            "deliveries": [delivery.public_view() for delivery in self.deliveries],
        }


def redacted_url(url: str) -> str:
    """What an event shows of a webhook URL: its origin only. The path or query of a webhook URL is often its only
    secret (Slack-style URLs, `?token=`), and events reach every subscriber of the topic and stay in the output
    bucket; the owner sees the whole URL with GET."""
    parts = urlsplit(url)
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{parts.netloc}/" + ("..." if hidden else "")


def check_webhook(webhook: WebhookRequest, *, allow_loopback: bool, errors: list[FieldError]) -> None:
    """Every rule of a request's `webhook`, each problem naming its field; fills the default events."""
    problem = url_problem(webhook.url, allow_loopback=allow_loopback)
    if problem:
        errors.append(FieldError("webhook.url", problem))
    if webhook.events is None:
        webhook.events = list(DEFAULT_EVENTS)
        return
    if not webhook.events:
        errors.append(FieldError("webhook.events", f"is empty; leave it out for {', '.join(DEFAULT_EVENTS)}"))
    seen: set[str] = set()
    for index, event in enumerate(webhook.events):
        if not isinstance(event, str) or event not in EVENT_TYPES:
            errors.append(FieldError(f"webhook.events[{index}]", f"must be one of {', '.join(EVENT_TYPES)}"))
        elif event in seen:
            errors.append(FieldError(f"webhook.events[{index}]", f"{event} is listed twice"))
        seen.add(str(event))


def url_problem(url: str, *, allow_loopback: bool) -> str | None:
    """Why `url` may not be a webhook target (None: it may, as far as its text tells; the resolved address of
    every attempt is checked again when it is sent). Plain http:// only to a loopback host, and only where
    loopback targets are allowed (local mode)."""
    if len(url) > URL_MAX_CHARS:
        return f"is {len(url)} characters; URLs may be at most {URL_MAX_CHARS}"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        return f"is not a valid URL: {exc}"
    host = parts.hostname
    if parts.scheme not in ("https", "http"):
        return "must be an https:// URL"
    if not host:
        return "is not a valid URL: it has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password (put a token in the path or query instead)"
    literal = ip_literal(host)
    if parts.scheme == "http" and not (allow_loopback and _is_loopback_host(host, literal)):
        if allow_loopback:
            return "must be an https:// URL (plain http:// only to a loopback host such as 127.0.0.1)"
        return "must be an https:// URL"
    if literal is not None:
        refusal = address_refusal(literal, allow_loopback=allow_loopback)
        if refusal:
            return f"points at {literal}, {refusal}; webhooks go to public addresses only"
    elif host.rstrip(".").lower() == "localhost" and not allow_loopback:
        return "points at localhost, a loopback address; webhooks go to public addresses only"
    return None


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _is_loopback_host(host: str, literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    if literal is not None:
        return literal.is_loopback
    return host.rstrip(".").lower() == "localhost"


def address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool) -> str | None:
    """Why a delivery may not connect to `address` ("a private address", ...), or None for a public address.

    Loopback is allowed only with `allow_loopback` (local mode). Anything that is not globally routable is refused:
    private, shared (CGNAT), link-local, metadata, multicast, unspecified, reserved and documentation ranges, and
    IPv6 addresses that embed a refused IPv4 address (IPv4-mapped, NAT64, 6to4).
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_refusal(embedded, allow_loopback=allow_loopback)
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a shared (CGNAT) address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private or not address.is_global:  # Python counts documentation ranges as private too
        return "a private address"
    return None


def event_id(job_id: str, event_type: str) -> str:
    """The Standard Webhooks `webhook-id` of a job's event: the same for every attempt and every redelivery, so
    that receivers can drop duplicates."""
    return f"msg_{job_id}_{event_type.replace('.', '_')}"


def signature_header(secrets: Sequence[str], message_id: str, timestamp: datetime, body: str) -> str:
    """`webhook-signature`: one `v1,<base64 HMAC-SHA256>` per signing secret, space-separated (two during a
    rotation, so receivers with either secret verify)."""
    from standardwebhooks import Webhook

    if not secrets:
        raise ValueError("no webhook signing secret")
    return " ".join(Webhook(secret).sign(message_id, timestamp, body) for secret in secrets)


def delivery_headers(secrets: Sequence[str], message_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "wanflow-webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(timestamp.timestamp())),
        "webhook-signature": signature_header(secrets, message_id, timestamp, body),
    }


def retry_delay(
    attempt: int, schedule: Sequence[float], uniform: Callable[[float, float], float] = random.uniform
) -> int | None:
    """Seconds before the attempt after failed attempt number `attempt` (1 = the first), jittered; None when
    `attempt` was the last one the schedule allows (the delivery is then given up)."""
    if attempt > len(schedule):
        return None
    base = schedule[attempt - 1]
    jittered = base * uniform(1, 1 + RETRY_JITTER)
    return max(0, min(MAX_RETRY_DELAY_SECONDS, round(jittered)))
