"""What the browser tests and their fixtures share (conftest.py holds the fixtures)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import httpx
import pytest

from wanflow_tools.local_mode.runner import LocalMode

T = TypeVar("T")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver", "chromium-driver")
INSTALL_HINT = "apt-get install chromium chromium-driver (Debian), as .ci/run does"
# The model the cancel test uses: the emulator never starts its tasks, so its jobs stay PENDING at DashScope.
NEVER_STARTS_MODEL = "wan2.2-i2v-plus"
DESKTOP = (1280, 1000)
PHONE = (390, 844)


def chromium_and_driver() -> tuple[str, str] | str:
    """The paths of a Chromium and its driver, or why there are none."""
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    driver = next((found for name in DRIVERS if (found := shutil.which(name))), None)
    if browser is None:
        return f"no Chromium on PATH (looked for {', '.join(BROWSERS)}); {INSTALL_HINT}"
    if driver is None:
        return f"no chromedriver on PATH for {browser}; {INSTALL_HINT}"
    return browser, driver


def skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI=true and the browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Polls `check` until it returns something truthy; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


@dataclass
class Console:
    """The local stack with its console, and the API beside it for setting up and checking."""

    mode: LocalMode
    url: str

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.mode.api_url, timeout=30)
