"""Small helpers shared by wanflow's tests (and handy for tests users write against the local stack)."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import TypeVar

from PIL import Image, ImageDraw

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.02, what: str = "") -> T:
    """Poll `predicate` until it returns something truthy and return that; AssertionError after `timeout` s.

    For conditions of a system that offers nothing to wait on (another process, a server's state): a deadline
    instead of a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


class ManualClock:
    """An epoch-seconds clock that only moves when told to (starts at the real time unless given one)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def image_bytes(width: int = 300, height: int = 400, image_format: str = "PNG") -> bytes:
    """A small picture (a disc on a plain background) that every Wan model accepts as a first frame."""
    image = Image.new("RGB", (width, height), (30, 60, 120))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(240, 180, 60))
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


def image_data_uri(width: int = 300, height: int = 400, image_format: str = "PNG") -> str:
    mime = "image/png" if image_format == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(image_bytes(width, height, image_format)).decode()}"


def lambda_context(function_name: str) -> SimpleNamespace:
    """What a handler reads of Lambda's context object (Powertools' `inject_lambda_context` logs these keys)."""
    return SimpleNamespace(
        function_name=function_name,
        memory_limit_in_mb=512,
        aws_request_id=f"request-of-{function_name}",
        invoked_function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}",
    )
