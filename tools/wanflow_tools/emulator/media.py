"""Fetching the inputs of a task (first-frame image, audio) the way DashScope would, but offline-friendly.

Sources are `data:` URIs or http(s) URLs (including plain-http loopback URLs such as presigned URLs from a local
moto server). Fetches use a short timeout because the emulator usually runs without Internet access; when an image
cannot be fetched the video shows a clearly labelled placeholder frame instead, and a missing audio file becomes a
generated tone.
"""

from __future__ import annotations

import base64
import binascii
import io
import textwrap
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlsplit

import httpx
from PIL import Image, ImageDraw, ImageFont, ImageOps

FETCH_TIMEOUT_SECONDS = 3.0
MAX_FETCH_BYTES = 32 * 1024 * 1024
# When no image is available the placeholder uses the aspect ratio of a 16:9 landscape frame.
PLACEHOLDER_SOURCE_SIZE = (1280, 720)


class FetchError(Exception):
    """The source could not be read; the message is safe to show (it never contains a data URI payload)."""


def describe_source(url: str) -> str:
    """A short, log-safe description of a source: data URIs are never shown in full."""
    if url.startswith("data:"):
        header = url.split(",", 1)[0]
        return f"{header},<{len(url)} chars>"
    return url if len(url) <= 200 else url[:200] + "..."


def fetch_bytes(url: str, *, timeout: float = FETCH_TIMEOUT_SECONDS) -> bytes:
    if url.startswith("data:"):
        return _decode_data_uri(url)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"unsupported URL scheme {scheme!r}")
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as client, client.stream("GET", url) as reply:
            if reply.status_code != 200:
                raise FetchError(f"HTTP {reply.status_code} from {describe_source(url)}")
            chunks: list[bytes] = []
            size = 0
            for chunk in reply.iter_bytes():
                size += len(chunk)
                if size > MAX_FETCH_BYTES:
                    raise FetchError(f"{describe_source(url)} is larger than {MAX_FETCH_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as error:
        raise FetchError(f"cannot fetch {describe_source(url)}: {type(error).__name__}") from error


def _decode_data_uri(url: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise FetchError("malformed data URI (no comma)")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as error:
            raise FetchError("malformed base64 in data URI") from error
    return unquote_to_bytes(payload)


@dataclass(frozen=True)
class FirstFrame:
    image: Image.Image  # RGB
    is_placeholder: bool
    note: str


def load_first_frame(url: str) -> FirstFrame:
    """The RGB first frame, or a labelled placeholder when the image cannot be fetched or decoded."""
    try:
        data = fetch_bytes(url)
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
        return FirstFrame(_to_rgb(image), is_placeholder=False, note="image")
    except (FetchError, OSError, Image.DecompressionBombError) as error:
        return FirstFrame(placeholder_frame(str(error)), is_placeholder=True, note=str(error))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (0, 0, 0))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def placeholder_frame(reason: str) -> Image.Image:
    """A gradient frame that says plainly that it is not the requested image."""
    width, height = PLACEHOLDER_SOURCE_SIZE
    horizontal = Image.linear_gradient("L").rotate(90).resize((width, height))
    vertical = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (horizontal, vertical, Image.new("L", (width, height), 96)))
    draw = ImageDraw.Draw(image)
    title = ImageFont.load_default(size=44)
    body = ImageFont.load_default(size=26)
    lines = textwrap.wrap(reason, width=70)[:5]
    draw.rectangle((60, 60, width - 60, 220 + 36 * len(lines)), fill=(0, 0, 0))
    draw.text((90, 90), "PLACEHOLDER - input image unavailable", font=title, fill=(255, 220, 80))
    draw.text((90, 150), "wanflow DashScope emulator", font=body, fill=(255, 255, 255))
    for number, line in enumerate(lines):
        draw.text((90, 200 + 36 * number), line, font=body, fill=(200, 200, 200))
    return image
