"""Seal a secret string (DashScope's signed video URL) for a trip through Step Functions state.

The poll step hands the video URL to the finalizer step through the execution's state, and Step Functions keeps
every state's input and output in the execution history, readable with `states:GetExecutionHistory` (and in the
console) for as long as the history is kept (90 days for a Standard workflow). The URL is a bearer credential: a
signed OSS URL that lets anyone holding it download the video for 24 hours. The history outlives the URL's use by
far, and is read by people and tools that have no business downloading customers' videos, so the URL must not be
readable there (docs/architecture.md will describe the URL's path from poll to finalizer and who holds the key).

`seal` encrypts with AES-256-GCM (the `cryptography` library, not hand-written crypto) under a key only the
Lambda functions can derive (`derive_key`), with a fresh random 96-bit nonce per token. The job id is bound as
associated data (`context`), so a token copied into another job's state does not open there; an optional expiry
is sealed with the text, so it is authenticated too, and a stale token is refused even by a holder of the key.

A token is ASCII: `v1.` and the URL-safe base64 (no padding) of nonce (12 bytes) || ciphertext || tag (16 bytes),
where the ciphertext is of the expiry (8 bytes, big-endian unix seconds, 0 for none) || the UTF-8 text.
`unseal` raises `SealError` for any token it cannot vouch for; its messages never hold the text or the key.
"""

from __future__ import annotations

import base64
import os
import struct
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["KEY_BYTES", "SealError", "derive_key", "seal", "unseal"]

KEY_BYTES = 32  # AES-256
_VERSION = "v1"
_PREFIX = _VERSION + "."
_NONCE_BYTES = 12  # 96 bits, the size GCM is defined for
_TAG_BYTES = 16
_EXPIRY = struct.Struct(">Q")
_NO_EXPIRY = 0
# The version is part of the associated data, so a body sealed as v1 can never be read as another version's.
_AAD_HEAD = b"wanflow seal " + _VERSION.encode("ascii") + b"\x00"


class SealError(Exception):
    """A token that is not ours, was tampered with, belongs to another context, or has expired."""


def derive_key(secret: str | bytes, purpose: str) -> bytes:
    """The 32-byte key for `purpose`, derived from `secret` with HKDF-SHA256 (info `b"wanflow " + purpose`).

    The same secret and purpose always give the same key, and different purposes give unrelated keys, so one
    stored secret can serve several uses without one use's tokens opening under another. HKDF is not a password
    hash: `secret` must already be high-entropy (random bytes from Secrets Manager, say), not something a person
    chose.
    """
    material = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not material:
        raise ValueError("derive_key needs a non-empty secret")
    if not purpose:
        raise ValueError("derive_key needs a non-empty purpose")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"wanflow " + purpose.encode("utf-8"))
    return hkdf.derive(material)


def seal(key: bytes, plaintext: str, *, context: str, ttl_seconds: int | None = None, now: float | None = None) -> str:
    """An ASCII token holding `plaintext`, which only `unseal` with the same key and `context` opens.

    With `ttl_seconds`, the token is refused from `now + ttl_seconds` (unix seconds, `now` defaulting to the clock).
    """
    aead = _aead(key)
    aad = _associated_data(context)
    expires_at = _NO_EXPIRY
    if ttl_seconds is not None:
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be a positive number of seconds")
        expires_at = int(time.time() if now is None else now) + ttl_seconds
    nonce = os.urandom(_NONCE_BYTES)
    sealed = aead.encrypt(nonce, _EXPIRY.pack(expires_at) + plaintext.encode("utf-8"), aad)
    return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")


def unseal(key: bytes, token: str, *, context: str, now: float | None = None) -> str:
    """The text `seal` put in `token` with this key and `context`; SealError if the token cannot be vouched for."""
    aead = _aead(key)
    aad = _associated_data(context)
    version, dot, encoded = token.partition(".")
    if not dot or version != _VERSION:
        raise SealError(f"not a {_VERSION} sealed token")
    body = _decode(encoded)
    if len(body) < _NONCE_BYTES + _EXPIRY.size + _TAG_BYTES:
        raise SealError("sealed token is truncated")
    try:
        opened = aead.decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:], aad)
    except InvalidTag:
        # Wrong key, wrong context and a changed byte look the same to GCM, and should: say no more than that.
        raise SealError("sealed token does not open with this key and context") from None
    (expires_at,) = _EXPIRY.unpack_from(opened)
    if expires_at != _NO_EXPIRY and (time.time() if now is None else now) >= expires_at:
        raise SealError(f"sealed token expired at {expires_at}")
    return opened[_EXPIRY.size :].decode("utf-8")


def _aead(key: bytes) -> AESGCM:
    # A key of another length is a wiring mistake, not a bad token: ValueError, not SealError (and no key in it).
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError(f"the sealing key must be {KEY_BYTES} bytes (see derive_key)")
    return AESGCM(key)


def _associated_data(context: str) -> bytes:
    if not context:
        raise ValueError("seal and unseal need a non-empty context (the job id)")
    return _AAD_HEAD + context.encode("utf-8")


def _decode(encoded: str) -> bytes:
    # Only the canonical encoding is accepted: base64 decoders skip stray characters, take "+" and "/" along with
    # "-" and "_", and ignore a final character's spare bits, so without the comparison below more than one string
    # would open as the same token.
    try:
        body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except ValueError:  # binascii.Error, or a non-ASCII character
        raise SealError("sealed token is not base64url") from None
    if base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii") != encoded:
        raise SealError("sealed token is not base64url")
    return body
