"""Fixtures for the DashScope emulator tests: started emulators on free loopback ports, with short timings."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from emulator_support import StaticFiles

from wanflow_tools.emulator import Emulator


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
