"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wanflow_tools.emulator import Emulator, EmulatorConfig


@pytest.fixture
def emulator_defaults() -> dict[str, Any]:
    """Settings of the emulators `start_emulator` starts; a test module overrides this fixture to change them."""
    return {"port": 0, "pending_seconds": 0.2, "running_seconds": 0.2, "rate_limits": False, "render_workers": 2}


@pytest.fixture
def start_emulator(emulator_defaults: dict[str, Any]) -> Iterator[Callable[..., Emulator]]:
    """Starts emulators on free loopback ports (defaults overridable per call) and stops them all afterwards."""
    started: list[Emulator] = []

    def start(**overrides: Any) -> Emulator:
        emulator = Emulator(EmulatorConfig(**{**emulator_defaults, **overrides}))
        emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()
