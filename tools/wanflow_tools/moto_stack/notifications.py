"""The local stack's view of the SNS topic: a subscribed SQS queue, drained in the background.

The subscription keeps raw message delivery off, so each SQS message is the SNS envelope with the
message attributes, as an SQS subscriber in AWS would see it. Each notification becomes one record

    {"message": <the SNS Message, parsed from JSON when it is JSON>,
     "attributes": {"type": "job.succeeded", "status": ..., "model": ..., "source": ...},
     "message_id": "...", "topic_arn": "...", "timestamp": "...", "subject": ...}

appended as one JSON line to the notifications file and passed to the callback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECEIVE_WAIT_SECONDS = 1

Notification = dict[str, Any]


class NotificationSink:
    def __init__(
        self, *, sqs_client: Any, queue_url: str, path: Path, callback: Callable[[Notification], None] | None = None
    ) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._path = path
        self._callback = callback
        self._received: list[Notification] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        return self._path

    def notifications(self) -> list[Notification]:
        with self._changed:
            return list(self._received)

    def wait_for(self, count: int, timeout: float) -> list[Notification]:
        """Block until at least `count` notifications arrived; TimeoutError after `timeout` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._received) >= count, timeout=timeout):
                raise TimeoutError(f"{len(self._received)} of {count} notifications within {timeout} s")
            return list(self._received)

    def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._drain, name="notification-sink", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=RECEIVE_WAIT_SECONDS + 10)
            self._thread = None

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._sqs.receive_message(
                    QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=RECEIVE_WAIT_SECONDS
                )
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("receiving notifications failed")
                self._stop.wait(1)
                continue
            for message in response.get("Messages") or []:
                self._accept(parse_envelope(message["Body"]))
                self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _accept(self, notification: Notification) -> None:
        line = json.dumps(notification, sort_keys=False)
        with self._changed:
            with self._path.open("a", encoding="utf-8") as file:
                file.write(line + "\n")
            self._received.append(notification)
            self._changed.notify_all()
        if self._callback is not None:
            try:
                self._callback(notification)
            except Exception:
                log.exception("notification callback failed")


def parse_envelope(body: str) -> Notification:
    """An SNS-over-SQS envelope as a notification record."""
    envelope = json.loads(body)
    message: Any = envelope.get("Message")
    with contextlib.suppress(TypeError, ValueError):  # not JSON: keep the text
        message = json.loads(message)
    attributes = {name: attribute.get("Value") for name, attribute in (envelope.get("MessageAttributes") or {}).items()}
    return {
        "message": message,
        "attributes": attributes,
        "message_id": envelope.get("MessageId"),
        "topic_arn": envelope.get("TopicArn"),
        "timestamp": envelope.get("Timestamp"),
        "subject": envelope.get("Subject"),
    }
