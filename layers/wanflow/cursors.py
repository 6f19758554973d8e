"""Signed list cursors: a page's last key, bound to the listing and the caller it was handed to.

A cursor is `<payload>.<signature>` (URL-safe base64): the payload says which listing (caller scope and status)
and where it stopped; the signature is an HMAC-SHA256 with the deployment's cursor secret. A cursor that was
altered, forged, or handed to another caller or another listing is refused as a 400 naming `cursor`, before
DynamoDB sees it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from wanflow.errors import FieldError, InvalidRequest

MAX_CURSOR_CHARS = 2048


def sign(key: bytes, scope: str, last_key: dict[str, Any]) -> str:
    payload = _b64(json.dumps({"scope": scope, "key": last_key}, sort_keys=True, separators=(",", ":")).encode())
    return f"{payload}.{_signature(key, payload)}"


def verify(key: bytes, scope: str, cursor: str) -> dict[str, Any]:
    """The last key a cursor carries, if this deployment signed it for this scope; InvalidRequest otherwise."""
    payload, _, signature = cursor.partition(".")
    expected = _signature(key, payload).encode()
    if len(cursor) > MAX_CURSOR_CHARS or not hmac.compare_digest(signature.encode(errors="replace"), expected):
        raise _invalid()
    try:
        document = json.loads(base64.urlsafe_b64decode(payload.encode() + b"=" * (-len(payload) % 4)))
    except ValueError:
        raise _invalid() from None
    if not isinstance(document, dict) or document.get("scope") != scope or not isinstance(document.get("key"), dict):
        raise _invalid()
    return document["key"]


def _signature(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _invalid() -> InvalidRequest:
    return InvalidRequest([FieldError("cursor", "is not a cursor this listing handed out; start without one")])
