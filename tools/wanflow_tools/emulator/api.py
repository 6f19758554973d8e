"""The DashScope endpoints: create a task, query it, cancel it, list tasks.

Every answer has DashScope's shape: `{"request_id", "output", "usage"}` on success, `{"code", "message",
"request_id"}` on error, with DashScope's status codes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import threading
import uuid
from collections.abc import Callable
from typing import Any

from wanflow_tools.emulator.config import EmulatorConfig
from wanflow_tools.emulator.downloads import VideoUrls
from wanflow_tools.emulator.faults import Fault, FaultPlan
from wanflow_tools.emulator.protocol import (
    CANCEL_REFUSED,
    MISSING_API_KEY,
    RATE_LIMITED,
    SYNC_NOT_SUPPORTED,
    ApiError,
    CloseConnection,
    ErrorKind,
    Outcome,
    Request,
    WallClock,
    epoch_millis,
    json_response,
    new_request_id,
    status_error,
    task_failure_message,
)
from wanflow_tools.emulator.protocol import INVALID_API_KEY as WRONG_API_KEY
from wanflow_tools.emulator.ratelimit import SlidingWindowLimiter
from wanflow_tools.emulator.rules import INVALID_PARAMETER, accept_create_body, actual_prompt_for, usage_for
from wanflow_tools.emulator.store import Task, TaskStatus, TaskStore

QUERY_LIMIT_KEY = "query"
PAGE_SIZE_MAX = 100


class DashScopeApi:
    def __init__(
        self,
        config: EmulatorConfig,
        store: TaskStore,
        faults: FaultPlan,
        limiter: SlidingWindowLimiter,
        urls: VideoUrls,
        advance: Callable[[], None],
        stopping: threading.Event,
    ) -> None:
        self.config = config
        self.store = store
        self.faults = faults
        self.limiter = limiter
        self.urls = urls
        self.advance = advance
        self.stopping = stopping
        self.clock = config.clock
        self.wall = WallClock(config.utc_offset_hours)

    # -- endpoints -------------------------------------------------------------------------------

    def create_task(self, request: Request) -> Outcome:
        api_key = self._authenticate(request)
        if (request.header("X-DashScope-Async") or "").strip().lower() != "enable":
            raise ApiError(SYNC_NOT_SUPPORTED)
        body = _json_body(request)
        model = body.get("model") if isinstance(body, dict) else None
        model_name = model if isinstance(model, str) else None
        prompt = _prompt_of(body)

        injected = self.faults.take("create", actions=frozenset({"status", "hang"}), model=model_name, prompt=prompt)
        if injected is not None and self._inject(injected) is not None:
            return CloseConnection()

        accepted = accept_create_body(body, region=self.config.region)
        spec = accepted.spec
        if self.config.rate_limits and not self.limiter.allow(f"submit:{spec.name}", spec.submit_rps):
            raise ApiError(RATE_LIMITED)

        request_id = new_request_id()
        task = Task(
            task_id=str(uuid.uuid4()),
            request_id=request_id,
            accepted=accepted,
            api_key_id=_api_key_id(api_key),
            submit_time=self.clock(),
        )
        planned = self.faults.take("task", model=accepted.model, prompt=prompt)
        if planned is not None and planned.fail_code is not None:
            task.planned_failure = (planned.fail_code, planned.message or task_failure_message(planned.fail_code))
        self.store.add(task)
        self.advance()

        dropped = self.faults.take("create", actions=frozenset({"drop_after_accept"}), model=model_name, prompt=prompt)
        if dropped is not None:
            return CloseConnection()
        return json_response(
            200, {"request_id": request_id, "output": {"task_id": task.task_id, "task_status": "PENDING"}}
        )

    def get_task(self, request: Request, task_id: str) -> Outcome:
        self._authenticate(request)
        self._limit_queries()
        injected = self.faults.take("query", task_id=task_id)
        if injected is not None and self._inject(injected) is not None:
            return CloseConnection()
        self.advance()
        task = self.store.get(task_id, self.clock())
        if task is None:
            return json_response(
                200, {"request_id": new_request_id(), "output": {"task_id": task_id, "task_status": "UNKNOWN"}}
            )
        payload: dict[str, Any] = {"request_id": new_request_id(), "output": self._task_output(task, request.host)}
        if task.status is TaskStatus.SUCCEEDED and task.render is not None:
            payload["usage"] = usage_for(task.accepted, task.render.width, task.render.height)
        return json_response(200, payload)

    def cancel_task(self, request: Request, task_id: str) -> Outcome:
        self._authenticate(request)
        self.advance()  # a task whose PENDING time is over is RUNNING now, and can no longer be cancelled
        if not self.store.cancel(task_id, self.clock()):
            raise ApiError(CANCEL_REFUSED)
        return json_response(200, {"request_id": new_request_id()})

    def list_tasks(self, request: Request) -> Outcome:
        self._authenticate(request)
        self._limit_queries()
        query = request.query
        page_no = _int_parameter(query, "page_no", 1, minimum=1)
        page_size = _int_parameter(query, "page_size", 10, minimum=1, maximum=PAGE_SIZE_MAX)
        start = self._time_parameter(query, "start_time")
        end = self._time_parameter(query, "end_time")
        model_name = query.get("model_name") or None
        status = (query.get("status") or "").upper() or None

        self.advance()
        tasks = [
            task
            for task in self.store.live(self.clock())
            if (start is None or task.submit_time >= start)
            and (end is None or task.submit_time <= end)
            and (model_name is None or model_name in (task.accepted.model, task.accepted.spec.name))
            and (status is None or task.status.value == status)
        ]
        tasks.reverse()  # newest first
        total = len(tasks)
        page = tasks[(page_no - 1) * page_size : page_no * page_size]
        return json_response(
            200,
            {
                "request_id": new_request_id(),
                "data": [self._list_entry(task) for task in page],
                "total": total,
                "total_page": math.ceil(total / page_size),
                "page_no": page_no,
                "page_size": page_size,
            },
        )

    # -- pieces ----------------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> str:
        """The caller's API key; raises 401 InvalidApiKey like DashScope when it is missing or wrong."""
        scheme, _, key = (request.header("Authorization") or "").strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(MISSING_API_KEY)
        expected = self.config.api_key
        if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
            raise ApiError(WRONG_API_KEY)
        return key

    def _limit_queries(self) -> None:
        if self.config.rate_limits and not self.limiter.allow(QUERY_LIMIT_KEY, self.config.query_rps):
            raise ApiError(RATE_LIMITED)

    def _inject(self, fault: Fault) -> CloseConnection | None:
        """Applies a status or hang fault: raises its error, or waits; returns CloseConnection to hang up."""
        if fault.action == "status":
            kind = status_error(fault.status or 500)
            raise ApiError(ErrorKind(kind.http_status, fault.code or kind.code, fault.message or kind.message))
        # hang: the emulator stopping cuts the wait short
        if self.stopping.wait(fault.seconds) or fault.then == "close":
            return CloseConnection()
        return None

    def _task_output(self, task: Task, host: str) -> dict[str, Any]:
        output: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": task.status.value,
            "submit_time": self.wall.format(task.submit_time),
        }
        if task.scheduled_time is not None:
            output["scheduled_time"] = self.wall.format(task.scheduled_time)
        if task.end_time is not None:
            output["end_time"] = self.wall.format(task.end_time)
        if task.status is TaskStatus.SUCCEEDED and task.url_expires_at is not None:
            output["video_url"] = self.urls.url(host, task.task_id, task.url_expires_at)
            if task.accepted.prompt is not None:
                output["orig_prompt"] = task.accepted.prompt
            actual_prompt = actual_prompt_for(task.accepted)
            if actual_prompt is not None:
                output["actual_prompt"] = actual_prompt
        if task.status is TaskStatus.FAILED and task.failure is not None:
            output["code"], output["message"] = task.failure
        return output

    def _list_entry(self, task: Task) -> dict[str, Any]:
        return {
            "api_key_id": task.api_key_id,
            "caller_parent_id": "emulator",
            "caller_uid": "emulator",
            "end_time": epoch_millis(task.end_time),
            "gmt_create": epoch_millis(task.submit_time),
            "model_name": task.accepted.model,
            "region": self.config.region or "emulator",
            "request_id": task.request_id,
            "start_time": epoch_millis(task.scheduled_time),
            "status": task.status.value,
            "task_id": task.task_id,
            "user_api_unique_key": f"apikey:v1:{task.api_key_id}",
        }

    def _time_parameter(self, query: dict[str, str], name: str) -> float | None:
        value = query.get(name)
        if not value:
            return None
        try:
            return self.wall.parse_list_filter(value)
        except ValueError:
            raise ApiError(INVALID_PARAMETER, f"{name} must be formatted as YYYYMMDDhhmmss") from None


def _json_body(request: Request) -> Any:
    try:
        return json.loads(request.body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(INVALID_PARAMETER, "The request body is not valid JSON.") from None


def _prompt_of(body: Any) -> str | None:
    """The create body's `input.prompt`, for faults that pick tasks by prompt (None if there is none)."""
    payload = body.get("input") if isinstance(body, dict) else None
    prompt = payload.get("prompt") if isinstance(payload, dict) else None
    return prompt if isinstance(prompt, str) else None


def _int_parameter(query: dict[str, str], name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ApiError(INVALID_PARAMETER, f"{name} must be an integer {bounds}")
    return value


def _api_key_id(api_key: str) -> str:
    """A stable, non-reversible id for a key (what the list API shows instead of the key)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]
