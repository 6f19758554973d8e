"""Event-source emulation: what Lambda's SQS event source mapping and EventBridge Scheduler do in AWS.

* `SqsEventSource` long-polls a queue in the moto server with up to `max_concurrency` pollers, calls the
  function with real SQS event batches and honours partial batch responses (`batchItemFailures`): only
  the messages that succeeded are deleted; the others become visible again after the queue's
  visibility timeout and, after maxReceiveCount receives, moto moves them to the dead-letter queue.
* `Schedule` invokes a function with the schedule's Input on demand and, optionally, periodically.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from wanflow_tools.moto_stack.lambdas import InvocationResult, LambdaRuntime

log = logging.getLogger(__name__)

# Long-poll wait per receive: short enough that stop() returns quickly.
RECEIVE_WAIT_SECONDS = 1


@dataclass
class SqsStats:
    """Counters of one event source; `in_flight` messages are received but not yet deleted or handed back."""

    batches: int = 0
    received: int = 0
    deleted: int = 0
    failed: int = 0
    in_flight: int = 0


class SqsEventSource:
    """A local SQS event source mapping (Lambda's poller) for one queue and one function."""

    def __init__(
        self,
        *,
        runtime: LambdaRuntime,
        function: str,
        sqs_client: Any,
        queue_url: str,
        queue_arn: str,
        region: str,
        batch_size: int = 10,
        max_concurrency: int = 2,
        report_batch_item_failures: bool = True,
    ) -> None:
        self._runtime = runtime
        self._function = function
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._region = region
        self._batch_size = batch_size
        self._max_concurrency = max(1, max_concurrency)
        self._report_batch_item_failures = report_batch_item_failures
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._changed = threading.Condition()
        self._stats = SqsStats()

    @property
    def stats(self) -> SqsStats:
        with self._changed:
            return SqsStats(**vars(self._stats))

    def wait_until(self, predicate: Callable[[SqsStats], bool], timeout: float) -> SqsStats:
        """Block until predicate(stats) holds (re-checked after every batch); TimeoutError after timeout."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self._stats), timeout=timeout):
                raise TimeoutError(
                    f"SQS event source for {self._function}: condition not met within {timeout} s (stats {self._stats})"
                )
            return SqsStats(**vars(self._stats))

    def start(self) -> None:
        for index in range(self._max_concurrency):
            thread = threading.Thread(target=self._poll, name=f"sqs-{self._function}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=RECEIVE_WAIT_SECONDS + 10)
        self._threads = []

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._sqs.receive_message(
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=self._batch_size,
                    WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("receiving from %s failed", self._queue_url)
                self._stop.wait(1)
                continue
            messages = response.get("Messages") or []
            if messages:
                self._process(messages)

    def _process(self, messages: list[dict[str, Any]]) -> None:
        with self._changed:
            self._stats.received += len(messages)
            self._stats.in_flight += len(messages)
            self._changed.notify_all()
        event = {"Records": [self._record(message) for message in messages]}
        result = self._runtime.invoke(self._function, event)
        failed_ids = self._failed_message_ids(result, messages)
        done = [message for message in messages if message["MessageId"] not in failed_ids]
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                for index, message in enumerate(done[start : start + 10])
            ]
            self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
        with self._changed:
            self._stats.batches += 1
            self._stats.in_flight -= len(messages)
            self._stats.deleted += len(done)
            self._stats.failed += len(messages) - len(done)
            self._changed.notify_all()

    def _failed_message_ids(self, result: InvocationResult, messages: list[dict[str, Any]]) -> set[str]:
        all_ids = {message["MessageId"] for message in messages}
        if not result.ok:
            log.warning("%s failed on a batch of %d: %s", self._function, len(messages), result.payload)
            return all_ids
        if not self._report_batch_item_failures:
            return set()
        response = result.value()
        if not isinstance(response, dict) or not response.get("batchItemFailures"):
            return set()
        failed = set()
        for item in response["batchItemFailures"]:
            identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not identifier or identifier not in all_ids:
                # Lambda treats a malformed partial batch response as a failure of the whole batch.
                log.warning("%s returned an invalid batchItemFailures entry %r", self._function, item)
                return all_ids
            failed.add(identifier)
        return failed

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        """One record of Lambda's SQS event."""
        attributes = message.get("Attributes") or {}
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {
                key: attributes[key]
                for key in (
                    "ApproximateReceiveCount",
                    "SentTimestamp",
                    "SenderId",
                    "ApproximateFirstReceiveTimestamp",
                    "MessageGroupId",
                    "MessageDeduplicationId",
                    "SequenceNumber",
                    "AWSTraceHeader",
                )
                if key in attributes
            },
            "messageAttributes": {
                name: _lambda_message_attribute(value)
                for name, value in (message.get("MessageAttributes") or {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._queue_arn,
            "awsRegion": self._region,
        }


def _lambda_message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    # Lambda's SQS records spell message attributes in camel case, with the list fields always present.
    return {
        "stringValue": value.get("StringValue"),
        "binaryValue": value.get("BinaryValue"),
        "stringListValues": value.get("StringListValues", []),
        "binaryListValues": value.get("BinaryListValues", []),
        "dataType": value.get("DataType"),
    }


_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float:
    """Seconds between runs of a `rate(...)` schedule expression."""
    match = _RATE.match(expression.strip())
    if not match:
        raise ValueError(f"only rate(...) schedules run locally, not {expression!r}")
    amount, unit = int(match.group(1)), match.group(2).rstrip("s")
    return float(amount * _UNIT_SECONDS[unit])


class Schedule:
    """A local EventBridge Scheduler schedule that targets one function."""

    def __init__(self, *, runtime: LambdaRuntime, function: str, expression: str, input_template: str | None) -> None:
        self._runtime = runtime
        self._function = function
        self.expression = expression
        self._input_template = input_template
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def event(self) -> Any:
        """The schedule's Input with Scheduler's context attributes filled in ({} without Input)."""
        if self._input_template is None:
            return {}
        text = (
            self._input_template.replace(
                "<aws.scheduler.scheduled-time>", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            )
            .replace("<aws.scheduler.execution-id>", str(uuid.uuid4()))
            .replace("<aws.scheduler.attempt-number>", "1")
        )
        return json.loads(text)

    def run(self) -> InvocationResult:
        return self._runtime.invoke(self._function, self.event())

    def start(self, interval_seconds: float | None = None) -> None:
        """Run periodically, every interval_seconds (default: the schedule's rate)."""
        if self._thread is not None:
            return
        interval = interval_seconds if interval_seconds is not None else rate_seconds(self.expression)
        self._stop.clear()

        def loop() -> None:
            # The wait doubles as the timer and the stop signal.
            while not self._stop.wait(interval):
                result = self.run()
                if not result.ok:
                    log.warning("scheduled %s failed: %s", self._function, result.payload)

        self._thread = threading.Thread(target=loop, name=f"schedule-{self._function}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
