"""Sealed tokens keep DashScope's signed video URL unreadable in Step Functions' execution history."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
import time

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wanflow.sealing import SealError, derive_key, seal, unseal

SECRET = "a-high-entropy-secret-from-secrets-manager"
KEY = derive_key(SECRET, "video-url")
OTHER_KEY = derive_key(SECRET, "something-else")
JOB = "job-0123456789abcdef"
URL = (
    "https://dashscope-result-sh.oss-cn-shanghai.aliyuncs.com/1d/ab/20260101/video.mp4"
    "?Expires=1767312000&OSSAccessKeyId=LTAI5tExampleKeyId&Signature=Zx9%2Bq3Wv%2FexampleSignature%3D"
)
NOW = 1_767_225_600.0
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
NONCE_BYTES, TAG_BYTES, EXPIRY_BYTES = 12, 16, 8


def _body(token: str) -> bytes:
    encoded = token.removeprefix("v1.")
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def _token(body: bytes) -> str:
    return "v1." + base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")


def _flip(body: bytes, index: int) -> bytes:
    return body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]


def _refused(token: str, *, key: bytes = KEY, context: str = JOB, now: float | None = NOW) -> SealError:
    with pytest.raises(SealError) as caught:
        unseal(key, token, context=context, now=now)
    message = str(caught.value)
    assert URL not in message and "video.mp4" not in message
    for form in (KEY.hex(), repr(KEY), base64.b64encode(KEY).decode(), SECRET):
        assert form not in message
    return caught.value


@pytest.mark.parametrize("text", [URL, "", "é ünïcode ✓ 视频"])
def test_round_trip(text: str) -> None:
    assert unseal(KEY, seal(KEY, text, context=JOB), context=JOB) == text


def test_token_is_ascii_and_versioned() -> None:
    assert re.fullmatch(r"v1\.[A-Za-z0-9_-]+", seal(KEY, URL, context=JOB))


def test_token_does_not_hold_the_plaintext_or_any_8_character_piece_of_it() -> None:
    token = seal(KEY, URL, context=JOB)
    pieces = {URL[i : i + 8] for i in range(len(URL) - 7)}
    assert not [piece for piece in pieces if piece in token]
    # nor its base64, which is what a careless "encoding" would leave readable
    assert base64.urlsafe_b64encode(URL.encode()).decode()[4:20] not in token


def test_two_seals_of_the_same_text_differ_down_to_the_nonce() -> None:
    first, second = seal(KEY, URL, context=JOB), seal(KEY, URL, context=JOB)
    assert first != second
    assert _body(first)[:NONCE_BYTES] != _body(second)[:NONCE_BYTES]


def test_layout_is_the_documented_one() -> None:
    """nonce || AES-256-GCM(expiry || text) with the version and job id as associated data: tokens in flight
    during a deploy must still open, so a change here is a new version, not an edit."""
    body = _body(seal(KEY, URL, context=JOB, ttl_seconds=600, now=NOW))
    opened = AESGCM(KEY).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], b"wanflow seal v1\x00" + JOB.encode())
    assert struct.unpack(">Q", opened[:EXPIRY_BYTES]) == (int(NOW) + 600,)
    assert opened[EXPIRY_BYTES:].decode() == URL


def test_wrong_key_is_refused() -> None:
    _refused(seal(KEY, URL, context=JOB), key=OTHER_KEY)


def test_another_jobs_token_is_refused() -> None:
    _refused(seal(KEY, URL, context=JOB), context="job-fedcba9876543210")
    _refused(seal(KEY, URL, context=JOB), context=JOB + "x")


def _regions() -> list[tuple[str, int]]:
    body = _body(seal(KEY, URL, context=JOB))
    tag_start = len(body) - TAG_BYTES
    return (
        [("nonce", i) for i in range(NONCE_BYTES)]
        + [("ciphertext", i) for i in range(NONCE_BYTES, tag_start)]
        + [("tag", i) for i in range(tag_start, len(body))]
    )


@pytest.mark.parametrize("region", ["nonce", "ciphertext", "tag"])
def test_a_changed_byte_anywhere_in_the_body_is_refused(region: str) -> None:
    token = seal(KEY, URL, context=JOB)
    body = _body(token)
    indexes = [i for name, i in _regions() if name == region]
    assert indexes
    for index in indexes:
        _refused(_token(_flip(body, index)))
    # the untouched token still opens, so the refusals above are the changed byte's doing
    assert unseal(KEY, token, context=JOB, now=NOW) == URL


def test_a_changed_expiry_is_refused() -> None:
    """The expiry is inside the ciphertext: a token cannot be given a longer life."""
    token = seal(KEY, URL, context=JOB, ttl_seconds=60, now=NOW)
    body = _body(token)
    _refused(_token(_flip(body, NONCE_BYTES + EXPIRY_BYTES - 1)), now=NOW + 120)


@pytest.mark.parametrize("prefix", ["v2.", "V1.", "v1,", "v1", "", "x1.", "v1.."])
def test_a_changed_prefix_is_refused(prefix: str) -> None:
    token = seal(KEY, URL, context=JOB)
    _refused(prefix + token.removeprefix("v1."))


def test_any_changed_character_of_the_token_is_refused() -> None:
    """Character by character, including a final character's spare bits, which lenient base64 decoders ignore."""
    token = seal(KEY, URL + "!", context=JOB)  # a length whose base64 leaves spare bits in the last character
    assert len(_body(token)) % 3 != 0
    for index, char in enumerate(token):
        for replacement in set(BASE64URL + "+/=.!é") - {char}:
            _refused(token[:index] + replacement + token[index + 1 :])


@pytest.mark.parametrize("junk", ["!!!!", "abc=", "ab+/", "ab cd", "a", "é"])
def test_bad_base64_is_refused(junk: str) -> None:
    _refused("v1." + junk)


def test_padding_is_refused() -> None:
    token = seal(KEY, URL + "!", context=JOB)
    assert len(token.removeprefix("v1.")) % 4
    _refused(token + "=" * (-len(token.removeprefix("v1.")) % 4))


def test_every_truncation_is_refused() -> None:
    token = seal(KEY, URL, context=JOB)
    for length in range(len(token)):
        _refused(token[:length])
    body = _body(token)
    for length in range(len(body)):
        _refused(_token(body[:length]))


def test_expired_token_is_refused_from_its_expiry_on() -> None:
    token = seal(KEY, URL, context=JOB, ttl_seconds=60, now=NOW)
    assert unseal(KEY, token, context=JOB, now=NOW + 59) == URL
    assert "expired" in str(_refused(token, now=NOW + 60))
    _refused(token, now=NOW + 86_400)


def test_a_token_without_ttl_does_not_expire() -> None:
    token = seal(KEY, URL, context=JOB, now=NOW)
    assert unseal(KEY, token, context=JOB, now=NOW + 10 * 365 * 86_400) == URL


def test_the_clock_is_the_default_now() -> None:
    before = time.time()
    token = seal(KEY, URL, context=JOB, ttl_seconds=3600)
    after = time.time()
    body = _body(token)
    opened = AESGCM(KEY).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], b"wanflow seal v1\x00" + JOB.encode())
    (expires_at,) = struct.unpack(">Q", opened[:EXPIRY_BYTES])
    assert int(before) + 3600 <= expires_at <= int(after) + 3600
    assert unseal(KEY, token, context=JOB) == URL
    _refused(seal(KEY, URL, context=JOB, ttl_seconds=60, now=before - 61), now=None)


@pytest.mark.parametrize("ttl", [0, -1, True])
def test_a_ttl_that_is_not_a_positive_number_of_seconds_is_a_mistake(ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        seal(KEY, URL, context=JOB, ttl_seconds=ttl)


@pytest.mark.parametrize("key", [b"", KEY[:16], KEY + b"\x00"])
def test_a_key_that_is_not_32_bytes_is_a_mistake_and_is_not_echoed(key: bytes) -> None:
    for call in (lambda: seal(key, URL, context=JOB), lambda: unseal(key, "v1.AAAA", context=JOB)):
        with pytest.raises(ValueError, match="32 bytes") as caught:
            call()
        assert not isinstance(caught.value, SealError)
        assert not key or key.hex() not in str(caught.value)


def test_an_empty_context_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="context"):
        seal(KEY, URL, context="")
    with pytest.raises(ValueError, match="context"):
        unseal(KEY, seal(KEY, URL, context=JOB), context="")


def _hkdf_sha256(secret: bytes, info: bytes) -> bytes:
    """RFC 5869 with no salt and a 32-byte output (one block), written out independently of the library."""
    prk = hmac.new(b"\x00" * 32, secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_derive_key_is_hkdf_sha256_with_a_wanflow_info() -> None:
    assert derive_key(SECRET, "video-url") == _hkdf_sha256(SECRET.encode(), b"wanflow video-url")
    assert len(KEY) == 32


def test_derive_key_is_deterministic_and_takes_str_or_bytes() -> None:
    assert (
        derive_key(SECRET, "video-url") == derive_key(SECRET, "video-url") == derive_key(SECRET.encode(), "video-url")
    )


def test_derive_key_separates_purposes_and_secrets() -> None:
    keys = {derive_key(SECRET, "video-url"), derive_key(SECRET, "video-url2"), derive_key(SECRET + "x", "video-url")}
    assert len(keys) == 3
    _refused(seal(derive_key(SECRET, "video-url2"), URL, context=JOB))


@pytest.mark.parametrize(("secret", "purpose"), [("", "video-url"), (b"", "video-url"), (SECRET, "")])
def test_derive_key_refuses_empty_inputs(secret: str | bytes, purpose: str) -> None:
    with pytest.raises(ValueError):
        derive_key(secret, purpose)
