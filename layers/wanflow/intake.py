"""S3 intake: reading S3 event notifications and pacing submissions under DashScope's submit rate."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_plus

from wanflow.capabilities import ModelSpec
from wanflow.errors import RetryLaterError, ThrottledError
from wanflow.jobs import Job
from wanflow.service import application

INCOMING_PREFIX = "incoming/"


@dataclass(frozen=True)
class CreatedObject:
    bucket: str
    key: str
    version_id: str | None
    etag: str | None


def objects_in_message(body: str) -> list[CreatedObject]:
    """The created objects under incoming/ in one SQS message (an S3 event notification; test events are empty)."""
    notification = json.loads(body)
    objects = []
    for record in notification.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record["s3"]
        key = unquote_plus(s3["object"]["key"])  # S3 event keys are URL-encoded
        if not key.startswith(INCOMING_PREFIX) or key.endswith("/"):
            continue
        objects.append(
            CreatedObject(s3["bucket"]["name"], key, s3["object"].get("versionId"), s3["object"].get("eTag"))
        )
    return objects


class SubmitPacer:
    """Spaces creates so that all intake workers together stay under each model's DashScope submit rate.

    Each of `concurrency` workers (the intake function's maximum concurrency) gets an equal share of a model's
    requests-per-second budget. After a throttle the rest of the batch is handed back to SQS at once instead of
    being tried into the same wall.
    """

    def __init__(
        self,
        concurrency: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._concurrency = max(1, concurrency)
        self._clock, self._sleep = clock, sleep
        self._next_allowed: dict[str, float] = {}
        self._throttled_until = 0.0
        self._lock = threading.Lock()

    def __call__(self, spec: ModelSpec) -> None:
        """Wait for this model's next submit slot; RetryLaterError while the worker is throttled."""
        with self._lock:
            now = self._clock()
            if now < self._throttled_until:
                raise RetryLaterError(
                    "DashScope throttled this worker moments ago; the message will be retried", code="WorkerPaused"
                )
            slot = max(now, self._next_allowed.get(spec.name, 0.0))
            self._next_allowed[spec.name] = slot + self._concurrency / spec.submit_rps
        if slot > now:
            self._sleep(slot - now)

    def throttled(self, retry_after_seconds: float | None) -> None:
        with self._lock:
            self._throttled_until = self._clock() + (retry_after_seconds or 5.0)


_pacer: SubmitPacer | None = None


def submit_paced(created: CreatedObject) -> Job | None:
    """Submit the job for one object at the intake's share of the submit rate; RetryLaterError hands it back."""
    global _pacer
    app = application()
    if _pacer is None:
        _pacer = SubmitPacer(app.settings.intake_concurrency)
    try:
        return app.submit_from_s3(created.bucket, created.key, created.version_id, created.etag, pace=_pacer)
    except ThrottledError as exc:  # DashScope's own 429, not this pacer's refusal
        _pacer.throttled(exc.retry_after_seconds)
        raise
