"""Faults on request, deterministic by count.

A fault plan is a JSON list of rules, read from `--faults FILE`, from `EmulatorConfig.faults`, or sent to
`POST /_emulator/faults` (which replaces the plan; `GET` shows what is left, `DELETE` clears it). Rules are
consulted in order; the first rule that matches an event fires, counts down its `times`, and disappears when it
reaches zero.

    [
      {"on": "create", "status": 429},
      {"on": "create", "status": 500, "times": 2},
      {"on": "create", "action": "hang", "seconds": 30, "then": "respond"},
      {"on": "create", "action": "hang", "seconds": 30, "then": "close"},
      {"on": "create", "action": "drop_after_accept"},
      {"on": "query", "status": 500, "times": 2},
      {"on": "query", "status": 429},
      {"on": "task", "fail_code": "DataInspectionFailed"},
      {"on": "task", "fail_code": "InternalError", "message": "custom text", "model": "wan2.2-i2v-flash"},
      {"on": "task", "fail_code": "InternalError", "times": 2, "prompt": "flaky"},
      {"on": "download", "action": "truncate", "fraction": 0.5},
      {"on": "download", "action": "slow", "bytes_per_second": 65536},
      {"on": "download", "status": 404}
    ]

Events (`on`) and what a rule can do there:

- `create` (POST video-synthesis, after the API key and async header checks):
  `status` answers that HTTP status with a DashScope error body (429 Throttling.RateQuota, 500 InternalError, ...;
  `code`/`message` override the body); `action: "hang"` waits `seconds` (default 30) and then either handles the
  request normally (`then: "respond"`, the default: the task exists although the client has given up) or closes
  the connection without creating a task (`then: "close"`); `action: "drop_after_accept"` creates the task and
  then closes the connection without answering (the client cannot know that the task exists).
- `query` (GET /tasks/{id}): `status` or `action: "hang"`, as for create.
- `task` (consulted when a task is created): `fail_code` makes the task end FAILED with that code instead of
  SUCCEEDED, after its normal PENDING and RUNNING time, with a DashScope-like message (or `message`).
  Codes with built-in messages: DataInspectionFailed, IPInfringementSuspect, InternalError, InvalidParameter,
  InvalidURL, RequestTimeOut; any other code gets a generic message. With `times: N` the next N tasks fail: a
  provider-side code (InternalError) then plays DashScope failing N tasks in a row, e.g. before a retry succeeds.
- `download` (GET /results/...): `status` (404 NoSuchKey, 403 AccessDenied, or any status, with an OSS-style XML
  body); `action: "truncate"` sends the full Content-Length but closes the connection after `fraction`
  (default 0.5) of the bytes; `action: "slow"` sends at `bytes_per_second` (default 65536).

Common keys: `times` (default 1; -1 means every time), `skip` (let this many matching events pass first),
`model` (create and task rules: only requests for this model name), `prompt` (create and task rules: only
requests whose `input.prompt` contains this text) and `task_id` (query and download rules).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

ACTIONS_BY_EVENT: dict[str, frozenset[str]] = {
    "create": frozenset({"status", "hang", "drop_after_accept"}),
    "query": frozenset({"status", "hang"}),
    "task": frozenset({"fail"}),
    "download": frozenset({"status", "truncate", "slow"}),
}
HANG_THEN = ("respond", "close")
_KNOWN_KEYS = frozenset(
    {
        "on",
        "action",
        "status",
        "code",
        "message",
        "seconds",
        "then",
        "fail_code",
        "fraction",
        "bytes_per_second",
        "times",
        "skip",
        "model",
        "prompt",
        "task_id",
    }
)


class FaultPlanError(ValueError):
    """The fault plan is malformed; the message names the rule and the problem."""


@dataclass
class Fault:
    on: str
    action: str
    times: int = 1
    skip: int = 0
    status: int | None = None
    code: str | None = None
    message: str | None = None
    seconds: float = 30.0
    then: str = "respond"
    fail_code: str | None = None
    fraction: float = 0.5
    bytes_per_second: int = 65_536
    model: str | None = None
    prompt: str | None = None
    task_id: str | None = None

    def matches(
        self, event: str, actions: frozenset[str], model: str | None, task_id: str | None, prompt: str | None
    ) -> bool:
        return (
            self.on == event
            and self.action in actions
            and (self.model is None or self.model == model)
            and (self.prompt is None or (prompt is not None and self.prompt in prompt))
            and (self.task_id is None or self.task_id == task_id)
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"on": self.on, "action": self.action, "times": self.times, "skip": self.skip}
        for key in ("status", "code", "message", "fail_code", "model", "prompt", "task_id"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.action == "hang":
            data.update(seconds=self.seconds, then=self.then)
        if self.action == "truncate":
            data["fraction"] = self.fraction
        if self.action == "slow":
            data["bytes_per_second"] = self.bytes_per_second
        return data


def parse_fault(rule: Any, position: int) -> Fault:
    where = f"fault #{position + 1}"
    if not isinstance(rule, dict):
        raise FaultPlanError(f"{where}: must be a JSON object")
    unknown = set(rule) - _KNOWN_KEYS
    if unknown:
        raise FaultPlanError(f"{where}: unknown keys {sorted(unknown)}")
    event = rule.get("on")
    if event not in ACTIONS_BY_EVENT:
        raise FaultPlanError(f"{where}: 'on' must be one of {sorted(ACTIONS_BY_EVENT)}")
    action = rule.get("action") or ("fail" if "fail_code" in rule else "status" if "status" in rule else None)
    if action not in ACTIONS_BY_EVENT[event]:
        raise FaultPlanError(f"{where}: on {event!r} the action must be one of {sorted(ACTIONS_BY_EVENT[event])}")
    fault = Fault(on=event, action=action)
    try:
        fault.times = _integer(rule.get("times", 1), minimum=-1)
        if fault.times == 0:
            raise ValueError("times must be -1 (always) or at least 1")
        fault.skip = _integer(rule.get("skip", 0), minimum=0)
        if action == "status":
            fault.status = _integer(rule.get("status"), minimum=400, maximum=599)
        fault.seconds = _number(rule.get("seconds", fault.seconds))
        fault.fraction = _number(rule.get("fraction", fault.fraction), maximum=1.0)
        fault.bytes_per_second = _integer(rule.get("bytes_per_second", fault.bytes_per_second), minimum=1)
    except (TypeError, ValueError) as error:
        raise FaultPlanError(f"{where}: {error}") from None
    fault.then = rule.get("then", "respond")
    if fault.then not in HANG_THEN:
        raise FaultPlanError(f"{where}: 'then' must be one of {list(HANG_THEN)}")
    if action == "fail":
        fault.fail_code = rule.get("fail_code")
        if not isinstance(fault.fail_code, str) or not fault.fail_code:
            raise FaultPlanError(f"{where}: 'fail_code' must be a non-empty string")
    for key in ("code", "message", "model", "prompt", "task_id"):
        value = rule.get(key)
        if value is not None and not isinstance(value, str):
            raise FaultPlanError(f"{where}: {key!r} must be a string")
        setattr(fault, key, value)
    return fault


def _integer(value: Any, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{value} is out of range")
    return value


def _number(value: Any, *, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    if value < 0 or (maximum is not None and value > maximum):
        raise ValueError(f"{value} is out of range")
    return float(value)


class FaultPlan:
    """The active fault rules; thread-safe."""

    def __init__(self, rules: list[Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.replace(rules or [])

    def replace(self, rules: Any) -> None:
        if not isinstance(rules, list):
            raise FaultPlanError("a fault plan must be a JSON list of rules")
        faults = [parse_fault(rule, position) for position, rule in enumerate(rules)]
        with self._lock:
            self._faults = faults

    def clear(self) -> None:
        with self._lock:
            self._faults = []

    def remaining(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault.to_dict() for fault in self._faults]

    def take(
        self,
        event: str,
        *,
        actions: frozenset[str] | None = None,
        model: str | None = None,
        task_id: str | None = None,
        prompt: str | None = None,
    ) -> Fault | None:
        """The fault that fires for this event, if any (counted down, so each firing is used once)."""
        allowed = actions if actions is not None else ACTIONS_BY_EVENT[event]
        with self._lock:
            for fault in self._faults:
                if not fault.matches(event, allowed, model, task_id, prompt):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                fired = copy.copy(fault)
                if fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                return fired
        return None
