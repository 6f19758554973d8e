"""Text shown to people: a job, a page of jobs, an error. Machine-readable output is `--json` instead."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TextIO

from wanflow_tools.client.errors import ClientError

TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp from the API, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_queue(queue: Any) -> str | None:
    """A QUEUED job's place in the queue ("position 3 in queue, 2 ahead, ETA ~04:00"), or None without one."""
    if not isinstance(queue, dict):
        return None
    parts: list[str] = []
    if queue.get("position") is not None:
        parts.append(f"position {queue['position']} in queue")
    if queue.get("ahead") is not None:
        parts.append(f"{queue['ahead']} ahead")
    eta = queue.get("eta_seconds")
    if isinstance(eta, int | float):
        parts.append("starting" if eta <= 0 else f"ETA ~{format_duration(eta)}")
    return ", ".join(parts) or None


def elapsed_seconds(job: dict[str, Any], now: datetime) -> float | None:
    """Seconds from the job's creation to its completion, or to `now` while it runs."""
    created = parse_time(job.get("created_at"))
    if created is None:
        return None
    end = parse_time(job.get("completed_at")) if job.get("status") in TERMINAL_STATUSES else None
    return max(0.0, ((end or now) - created).total_seconds())


def format_bytes(count: Any) -> str:
    if not isinstance(count, int):
        return "?"
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"  # pragma: no cover - the loop always returns


def format_job(job: dict[str, Any], now: datetime) -> str:
    """A job as aligned `label  value` lines; absent parts are left out."""
    request = job.get("request") or {}
    parameters = request.get("parameters") or {}
    provider = job.get("provider") or {}
    output = job.get("output") or {}
    error = job.get("error") or {}
    rows: list[tuple[str, str]] = [("job", str(job.get("job_id", "?"))), ("status", str(job.get("status", "?")))]
    if job.get("priority") == "high":
        rows.append(("priority", "high"))
    place = format_queue(job.get("queue")) if job.get("status") == "QUEUED" else None
    if place:
        rows.append(("queue", place))
    shape = [str(job.get("model") or request.get("model") or "?")]
    if parameters.get("resolution"):
        shape.append(str(parameters["resolution"]))
    if parameters.get("duration") is not None:
        shape.append(f"{parameters['duration']} s")
    if parameters.get("audio") is not None:
        shape.append("audio" if parameters["audio"] else "silent")
    rows.append(("model", "  ".join(shape)))
    if job.get("source"):
        rows.append(("source", str(job["source"])))
    if provider.get("task_id"):
        task = f"{provider['task_id']}  {provider.get('task_status') or ''}".rstrip()
        rows.append(("provider", f"{task}  ({provider['region']})" if provider.get("region") else task))
    if job.get("cost_estimate_usd") is not None:
        rows.append(("cost", f"${job['cost_estimate_usd']} (list-price estimate)"))
    elapsed = elapsed_seconds(job, now)
    if elapsed is not None:
        rows.append(("elapsed", format_duration(elapsed)))
    if output.get("s3_uri"):
        rows.append(("output", f"{output['s3_uri']}  {format_bytes(output.get('bytes'))}"))
    if output.get("sha256"):
        rows.append(("sha256", str(output["sha256"])))
    if error:
        message = f"{error.get('code', '?')}: {error.get('message', '')}"
        if error.get("provider_request_id"):
            message += f" (DashScope request {error['provider_request_id']})"
        rows.append(("error", message))
    for label in ("created_at", "queued_at", "submitted_at", "completed_at", "finished_at"):
        # finished_at is the queue-era name of completed_at: shown only when it says something else.
        if job.get(label) and not (label == "finished_at" and job[label] == job.get("completed_at")):
            rows.append((label.removesuffix("_at"), str(job[label])))
    for key, value in sorted((job.get("metadata") or {}).items()):
        rows.append(("metadata", f"{key}={value}"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def format_job_table(jobs: list[dict[str, Any]]) -> str:
    headers = ("JOB", "STATUS", "MODEL", "SOURCE", "CREATED")
    rows = [
        (
            str(job.get("job_id", "?")),
            str(job.get("status", "?")),
            str(job.get("model", "")),
            str(job.get("source", "")),
            str(job.get("created_at", "")),
        )
        for job in jobs
    ]
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    )


def print_json(value: Any, stream: TextIO) -> None:
    stream.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def print_error(error: ClientError, stream: TextIO) -> None:
    stream.write(f"error: {error}\n")
    for line in error.details():
        stream.write(line + "\n")
