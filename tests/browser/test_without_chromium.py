"""Without Chromium the browser tests skip and say why; under CI=true they fail instead (no test needs Chromium)."""

from __future__ import annotations

from pathlib import Path

import pytest
from console_support import chromium_and_driver, skip_or_fail


def test_a_machine_without_chromium_is_told_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = chromium_and_driver()
    assert isinstance(reason, str)
    assert "no Chromium on PATH" in reason and "apt-get install chromium chromium-driver" in reason


def test_a_chromium_without_its_driver_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\n")
    browser.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = chromium_and_driver()
    assert isinstance(reason, str) and reason.startswith(f"no chromedriver on PATH for {browser}")


def test_outside_ci_the_browser_tests_are_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="browser tests skipped: no Chromium"):
        skip_or_fail("no Chromium")


def test_under_ci_a_missing_chromium_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and the browser tests cannot run: no Chromium"):
        skip_or_fail("no Chromium")
