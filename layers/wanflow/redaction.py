"""Secrets never reach a log, at any level and from any library.

botocore logs request and response bodies at DEBUG, among them `CreateSecret` and `GetSecretValue` with the
DashScope key in `SecretString`; httpx logs request lines. Rather than trusting every library's log calls,
`install()` wraps the logging record factory, so that every record, from any logger, has the secrets this process
knows (`register_secret`) and anything shaped like one (a `SecretString`/`SecretBinary` value, an `sk-` API key,
a bearer token) replaced by `<redacted>` before any handler sees it. Records are only built for enabled levels,
so the cost is paid only by messages that are emitted anyway.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

REDACTED = "<redacted>"
_PATTERNS = (
    # JSON or Python-repr values of Secrets Manager fields ("SecretString": "..." / 'SecretString': '...'); a run of
    # backslashes and the character after it is escaped, so the value ends at the first bare closing quote.
    re.compile(
        r"""(?P<head>["']?Secret(?:String|Binary)["']?\s*[:=]\s*b?)(?P<quote>["'])(?P<value>(?:\\+.|[^\\])*?)(?P=quote)"""
    ),
    re.compile(r"(?P<head>Bearer\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})"),
    re.compile(r"(?P<head>)(?P<value>\bsk-[A-Za-z0-9_-]{8,})"),
)
_lock = threading.Lock()
_secrets: set[str] = set()
_installed = False


def register_secret(value: str) -> None:
    """Never log `value` (an API key read from Secrets Manager, say), whatever logs it."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(_replacement, text)
    return text


def _replacement(match: re.Match[str]) -> str:
    groups = match.groupdict()
    quote = groups.get("quote") or ""
    return f"{groups['head']}{quote}{REDACTED}{quote}"


def install() -> None:
    """Redact every log record this process creates from now on (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    make_record = logging.getLogRecordFactory()

    def redacting_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to logging to report
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(redacting_record)
