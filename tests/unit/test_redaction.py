"""Secrets never reach a log: every record from any logger is scrubbed before a handler sees it."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from wanflow import redaction


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    redaction.install()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.mark.parametrize(
    ("message", "args", "secret"),
    [
        # botocore.parsers, GetSecretValue's response body (bytes repr of JSON holding JSON)
        (
            "Response body:\n%s",
            (b'{"ARN":"a","SecretString":"{\\"api_key\\": \\"kEy-0001x\\"}","Name":"n"}',),
            "kEy-0001x",
        ),
        # botocore.endpoint, CreateSecret's request parameters (a dict repr)
        ("Making request with params: %r", ({"body": {"SecretString": "plain-kEy-0002"}},), "plain-kEy-0002"),
        ("Making request with params: %r", ({"body": {"SecretBinary": b"binary-kEy-0003"}},), "binary-kEy-0003"),
        ("header %s", ("Authorization: Bearer tok3nVALUE99",), "tok3nVALUE99"),
        ("the key is %s", ("sk-0123456789abcdef0123456789abcdef",), "sk-0123456789abcdef"),
    ],
)
def test_secret_shaped_values_are_redacted_from_any_logger(
    captured: io.StringIO, message: str, args: tuple[object, ...], secret: str
) -> None:
    logging.getLogger("botocore.parsers").debug(message, *args)
    output = captured.getvalue()
    assert secret not in output and redaction.REDACTED in output


def test_registered_secrets_are_redacted_whatever_their_shape(captured: io.StringIO) -> None:
    redaction.register_secret("correct-horse-battery")
    logging.getLogger("some.library").warning("connecting with %s", "correct-horse-battery")
    logging.getLogger("tests.redaction.app").error("failed: correct-horse-battery")
    assert "correct-horse-battery" not in captured.getvalue()
    assert captured.getvalue().count(redaction.REDACTED) == 2


def test_ordinary_messages_are_untouched(captured: io.StringIO) -> None:
    logging.getLogger("tests.redaction.app").info("job %s is %s", "abc", "RUNNING")
    assert captured.getvalue().strip() == "job abc is RUNNING"
