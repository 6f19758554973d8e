"""The web console in headless Chromium, against the real local stack (docs/console.md).

The browser is Debian's `chromium` with its `chromium-driver` (`.ci/run` installs both); nothing is downloaded at
test time. Without them the browser tests are skipped with the reason, except under CI (`CI=true`), where a
skipped browser test would hide a console nobody checked: there they fail.

Screenshots go to a temporary folder, or to `WANFLOW_CONSOLE_SCREENSHOTS` when set (`make screenshots` writes
the ones in docs/console/).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import DESKTOP, NEVER_STARTS_MODEL, Console, chromium_and_driver, skip_or_fail

from wanflow_tools.local_mode.runner import LocalMode, LocalModeOptions


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    found = chromium_and_driver()
    if isinstance(found, str):
        skip_or_fail(found)
    return found


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, chromium_paths: tuple[str, str]) -> Iterator[Console]:
    options = LocalModeOptions(
        api_port=0,
        aws_port=0,
        state_dir=tmp_path_factory.mktemp("console-state"),
        poll_interval_seconds=1,
        emulator_overrides={
            "pending_seconds": 0.3,
            "running_seconds": 0.5,
            "rate_limits": False,
            "render_workers": 2,
            "max_running": {NEVER_STARTS_MODEL: 0},
        },
    )
    with LocalMode(options) as mode:
        mode.wait_until_ready(timeout=60)
        yield Console(mode=mode, url=mode.api_url)


@pytest.fixture(scope="module")
def browser(chromium_paths: tuple[str, str]) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser_path, driver_path = chromium_paths
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--mute-audio",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    # The driver is the one given: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    wanted = os.environ.get("WANFLOW_CONSOLE_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
