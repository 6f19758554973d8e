"""Fixtures for the DashScope emulator tests: started emulators on free loopback ports, with short timings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from emulator_support import StaticFiles

from wanflow_tools.emulator import Emulator, EmulatorConfig


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., Emulator]]:
    """Starts emulators with test-friendly defaults (port 0, short timings, no rate limits); stops them all."""
    started: list[Emulator] = []

    def start(**overrides: Any) -> Emulator:
        settings: dict[str, Any] = {
            "port": 0,
            "pending_seconds": 0.2,
            "running_seconds": 0.2,
            "rate_limits": False,
            "render_workers": 2,
        }
        settings.update(overrides)
        emulator = Emulator(EmulatorConfig(**settings))
        emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(start_emulator: Callable[..., Emulator]) -> Emulator:
    return start_emulator()


@pytest.fixture
def client(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url, timeout=10.0) as http:
        yield http


@pytest.fixture
def static_files() -> Iterator[StaticFiles]:
    server = StaticFiles()
    yield server
    server.close()
