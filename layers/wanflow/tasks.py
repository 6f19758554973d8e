"""DashScope's task model: statuses, a task's info, the task list, parsed from the wire (docs/dashscope.md
"Responses"). Plain data, no HTTP: the use cases and ports depend on this, the client in `wanflow.dashscope` fills it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"  # the task id is unknown to DashScope: never existed, or older than 24 hours

    @property
    def is_terminal(self) -> bool:
        return self not in (TaskStatus.PENDING, TaskStatus.RUNNING)


_TASK_STATUSES = frozenset(status.value for status in TaskStatus)

# DashScope's task times: "2026-01-22 23:24:46.527" (no zone given; the times follow the region's clock).
_DASHSCOPE_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S")


def parse_dashscope_time(value: str | None) -> datetime | None:
    """A DashScope "YYYY-MM-DD HH:mm:ss.SSS" time as a naive datetime (DashScope does not state the zone)."""
    if not value:
        return None
    for time_format in _DASHSCOPE_TIME_FORMATS:
        try:
            return datetime.strptime(value, time_format)
        except ValueError:
            continue
    raise ValueError(f"Unrecognised DashScope time {value!r}")


@dataclass(frozen=True)
class TaskInfo:
    """One task as DashScope reports it (create answer or query answer).

    Times stay DashScope's strings, exactly as received, so they can be stored and shown unchanged;
    `submitted_at`/`scheduled_at`/`ended_at` parse them. Empty strings from DashScope become None.
    """

    task_id: str
    status: TaskStatus
    request_id: str | None = None
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    video_url: str | None = None
    orig_prompt: str | None = None
    actual_prompt: str | None = None
    code: str | None = None  # FAILED tasks: DashScope's failure code
    message: str | None = None  # FAILED tasks: DashScope's failure message
    usage: dict[str, Any] = field(default_factory=dict)  # SUCCEEDED tasks: billing figures, per-model keys

    @property
    def submitted_at(self) -> datetime | None:
        return parse_dashscope_time(self.submit_time)

    @property
    def scheduled_at(self) -> datetime | None:
        return parse_dashscope_time(self.scheduled_time)

    @property
    def ended_at(self) -> datetime | None:
        return parse_dashscope_time(self.end_time)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields; `status` as its string value."""
        data = asdict(self)
        data["status"] = self.status.value
        return data

    def __repr__(self) -> str:
        # The video URL is a bearer credential for 24 h (signed OSS URL): keep it out of reprs and tracebacks.
        return (
            f"TaskInfo(task_id={self.task_id!r}, status={self.status.value!r}, "
            f"request_id={self.request_id!r}, code={self.code!r}, has_video_url={self.video_url is not None})"
        )


@dataclass(frozen=True)
class TaskSummary:
    """One entry of the task list. DashScope gives these times as epoch milliseconds; here they are UTC."""

    task_id: str
    status: str  # kept as sent: the list may carry statuses the query API does not
    model_name: str | None = None
    request_id: str | None = None  # the request id of the create call that made the task
    region: str | None = None
    created_at: datetime | None = None  # gmt_create
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True)
class TaskPage:
    """One page of `GET /tasks`, in the shape the DashScope SDKs read."""

    tasks: tuple[TaskSummary, ...]
    total: int
    total_page: int
    page_no: int
    page_size: int
    request_id: str | None = None


def text_or_none(value: Any) -> str | None:
    """DashScope uses "" and null interchangeably for absent strings."""
    if value is None or value == "":
        return None
    return str(value)


def task_info_from_payload(payload: Mapping[str, Any]) -> TaskInfo:
    """Parse a create or query answer: {"request_id": ..., "output": {...}, "usage": {...}}.

    Raises ValueError when the answer has no task id or an unrecognised task status.
    """
    output = payload.get("output")
    if not isinstance(output, Mapping):
        raise ValueError("answer has no 'output' object")
    task_id = text_or_none(output.get("task_id"))
    if task_id is None:
        raise ValueError("answer has no output.task_id")
    raw_status = output.get("task_status")
    if not isinstance(raw_status, str) or raw_status not in _TASK_STATUSES:
        raise ValueError(f"unrecognised output.task_status {raw_status!r}")
    status = TaskStatus(raw_status)
    usage = payload.get("usage")
    message = text_or_none(output.get("message"))
    return TaskInfo(
        task_id=task_id,
        status=status,
        request_id=text_or_none(payload.get("request_id")),
        submit_time=text_or_none(output.get("submit_time")),
        scheduled_time=text_or_none(output.get("scheduled_time")),
        end_time=text_or_none(output.get("end_time")),
        video_url=text_or_none(output.get("video_url")),
        orig_prompt=text_or_none(output.get("orig_prompt")),
        actual_prompt=text_or_none(output.get("actual_prompt")),
        code=text_or_none(output.get("code")),
        message=redact_text(message) if message is not None else None,
        usage=dict(usage) if isinstance(usage, Mapping) else {},
    )


def _epoch_millis(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def task_page_from_payload(payload: Mapping[str, Any]) -> TaskPage:
    """Parse a list answer. Raises ValueError if it is malformed.

    Shape: {"request_id", "data": [{task_id, status, model_name, request_id, region, gmt_create,
    start_time, end_time, ...}], "total", "total_page", "page_no", "page_size"}, times in epoch milliseconds.
    Field names as the DashScope Java SDK's VideoSynthesisListResult and AsyncTaskInfo declare them (the
    Python SDK's VideoSynthesis.list passes the whole body through unparsed).
    """
    entries = payload.get("data") or []
    if not isinstance(entries, list):
        raise ValueError("list answer's 'data' is not a list")
    tasks = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not text_or_none(entry.get("task_id")):
            raise ValueError("list entry without task_id")
        tasks.append(
            TaskSummary(
                task_id=str(entry["task_id"]),
                status=str(entry.get("status") or ""),
                model_name=text_or_none(entry.get("model_name")),
                request_id=text_or_none(entry.get("request_id")),
                region=text_or_none(entry.get("region")),
                created_at=_epoch_millis(entry.get("gmt_create")),
                start_time=_epoch_millis(entry.get("start_time")),
                end_time=_epoch_millis(entry.get("end_time")),
            )
        )
    return TaskPage(
        tasks=tuple(tasks),
        total=int(payload.get("total") or len(tasks)),
        total_page=int(payload.get("total_page") or 1),
        page_no=int(payload.get("page_no") or 1),
        page_size=int(payload.get("page_size") or len(tasks)),
        request_id=text_or_none(payload.get("request_id")),
    )


# DashScope's wall clock for the list API's start_time/end_time filters. The documentation gives only the format
# (YYYYMMDDhhmmss, e.g. 20230420000000), not the zone; DashScope runs on Beijing time (UTC+8, also Singapore's),
# which is assumed here. The list's own gmt_create/start_time/end_time are epoch milliseconds, so callers that
# must be exact should pad the filter window and compare those.
DASHSCOPE_CLOCK = timezone(timedelta(hours=8), "UTC+08:00")


def format_list_time(moment: datetime) -> str:
    """The list API's time filter, YYYYMMDDhhmmss. An aware datetime is converted to `DASHSCOPE_CLOCK`; a naive
    one is taken to be on DashScope's clock already."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(DASHSCOPE_CLOCK)
    return moment.strftime("%Y%m%d%H%M%S")


_DATA_URI = re.compile(r"data:[\w.+-]*/?[\w.+-]*;base64,[A-Za-z0-9+/=_-]+")
_MAX_TEXT_CHARS = 500


def redact_text(text: str, *, secrets: tuple[str, ...] = ()) -> str:
    """Text safe to log or raise: data: URIs cut down to type and size, secrets masked, length capped."""

    def shorten(match: re.Match[str]) -> str:
        uri = match.group(0)
        head = uri.split(",", 1)[0]
        return f"{head},<{len(uri) - len(head) - 1} chars>"

    text = _DATA_URI.sub(shorten, text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    if len(text) > _MAX_TEXT_CHARS:
        text = text[:_MAX_TEXT_CHARS] + "..."
    return text
