"""A DashScope (Model Studio) stand-in for Wan image-to-video, on loopback: `wanflow emulator`, or in code:

    from wanflow_tools.emulator import Emulator, EmulatorConfig

    with Emulator(EmulatorConfig(pending_seconds=0.2, running_seconds=0.2)) as emulator:
        dashscope.base_http_api_url = emulator.base_url

See docs/emulator.md for the behaviour, the fault plan format and the control endpoints.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wanflow_tools.emulator.config import EmulatorConfig
    from wanflow_tools.emulator.faults import FaultPlan, FaultPlanError
    from wanflow_tools.emulator.server import Emulator
    from wanflow_tools.emulator.store import TaskStatus

__all__ = ["Emulator", "EmulatorConfig", "FaultPlan", "FaultPlanError", "TaskStatus"]

# Imported on first use: the `wanflow` CLI imports this package to find its subcommand, and should not pay for
# PyAV and numpy unless the emulator actually runs.
_EXPORTS = {
    "Emulator": "wanflow_tools.emulator.server",
    "EmulatorConfig": "wanflow_tools.emulator.config",
    "FaultPlan": "wanflow_tools.emulator.faults",
    "FaultPlanError": "wanflow_tools.emulator.faults",
    "TaskStatus": "wanflow_tools.emulator.store",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
