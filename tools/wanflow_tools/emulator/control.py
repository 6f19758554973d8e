"""The emulator's own control endpoints under /_emulator (no API key; the emulator only listens on loopback).

- GET    /_emulator/health  -> {"status": "ok", "base_url": ...}
- GET    /_emulator/tasks   -> {"tasks": [...]}: every task with its internal state (timings, video facts)
- GET    /_emulator/faults  -> {"faults": [...]}: the rules that have not fired yet
- POST   /_emulator/faults  -> replaces the fault plan with the JSON list in the body (see faults.py)
- DELETE /_emulator/faults  -> clears the fault plan
- POST   /_emulator/reset   -> forgets every task, fault, rate-limit count and logged request
- GET    /_emulator/requests -> {"requests": {kind: {...}}}: DashScope API requests by kind (create, query, list,
  cancel), their statuses, 429s and busiest second (emulator.request_log); `?times=1` adds every request's time
  (`times`) and every 429's (`throttled_times`)
"""

from __future__ import annotations

import json
from collections.abc import Callable

from wanflow_tools.emulator.faults import FaultPlan, FaultPlanError
from wanflow_tools.emulator.protocol import Outcome, Request, json_response
from wanflow_tools.emulator.request_log import RequestLog
from wanflow_tools.emulator.store import TaskStore


class Control:
    def __init__(
        self,
        store: TaskStore,
        faults: FaultPlan,
        advance: Callable[[], None],
        reset: Callable[[], None],
        base_url: Callable[[str], str],
        requests: RequestLog,
    ) -> None:
        self.store = store
        self.faults = faults
        self.advance = advance
        self.reset_all = reset
        self.base_url = base_url
        self.requests = requests

    def health(self, request: Request) -> Outcome:
        return json_response(200, {"status": "ok", "base_url": self.base_url(request.host)})

    def tasks(self, request: Request) -> Outcome:
        self.advance()
        return json_response(200, {"tasks": [task.internal_view() for task in self.store.all()]})

    def get_faults(self, request: Request) -> Outcome:
        return json_response(200, {"faults": self.faults.remaining()})

    def set_faults(self, request: Request) -> Outcome:
        try:
            rules = json.loads(request.body or b"null")
            if isinstance(rules, dict) and "faults" in rules:
                rules = rules["faults"]
            self.faults.replace(rules)
        except (json.JSONDecodeError, UnicodeDecodeError, FaultPlanError) as error:
            return json_response(400, {"code": "InvalidFaultPlan", "message": str(error)})
        return json_response(200, {"faults": self.faults.remaining()})

    def clear_faults(self, request: Request) -> Outcome:
        self.faults.clear()
        return json_response(200, {"faults": []})

    def request_log(self, request: Request) -> Outcome:
        with_times = request.query.get("times") in {"1", "true"}
        return json_response(200, {"requests": self.requests.summary(with_times=with_times)})

    def reset(self, request: Request) -> Outcome:
        self.reset_all()
        return json_response(200, {"status": "reset"})
