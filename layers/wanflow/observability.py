"""Powertools Logger, Tracer and Metrics, configured once for every handler.

Logs go to stderr as JSON (Lambda sends both streams to CloudWatch; the local stack keeps stdout for
notifications). Handlers are decorated with `inject_lambda_context` (below) and the job id is the correlation id:
handlers call `logger.set_correlation_id(job_id)`.

The keys of an invocation (the Lambda context's function_name, function_request_id and so on, and the correlation
id) belong to that invocation alone. In Lambda that changes nothing: one invocation at a time runs in a process.
In local mode every handler runs in one process, in many threads at once, and keys kept logger-wide (where
Powertools' `append_keys` keeps them) would land on the log lines of whichever invocation logs next.

Tracing: when Powertools would trace (in Lambda, unless `POWERTOOLS_TRACE_DISABLED` is set), `tracer` is the
usual Powertools Tracer on the X-Ray SDK, which patches botocore and httpx as the module is imported, exactly as
before. When Powertools would not (outside Lambda, under SAM local, or with `POWERTOOLS_TRACE_DISABLED`), `tracer`
is a Powertools Tracer whose provider records nothing, so the X-Ray SDK (about a quarter of a second of imports)
is never imported.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

from wanflow import telemetry
from wanflow.jobs import Job, model_of

Result = TypeVar("Result")


class _InvocationLogger(Logger):
    """Powertools' Logger whose appended keys live in Powertools' context-variable keys (its `thread_safe_*` ones).

    `append_keys` is what `set_correlation_id` and `inject_lambda_context` call, so the correlation id and the
    Lambda context's keys are those of the thread (the context) that set them; keys given to the constructor stay
    logger-wide.
    """

    def append_keys(self, **additional_keys: object) -> None:
        self.thread_safe_append_keys(**additional_keys)

    def get_correlation_id(self) -> str | None:
        return self.thread_safe_get_current_keys().get("correlation_id")


logger = _InvocationLogger(service="wanflow", logger_handler=logging.StreamHandler(sys.stderr))
metrics = Metrics(namespace=telemetry.NAMESPACE, service=telemetry.SERVICE)


def emit(name: str, value: float, unit: str = "Count", **dimensions: str) -> None:
    """Print one EMF document for one metric with its own dimensions, now.

    The shared `metrics` keeps one dimension set per flush (per invocation), so a handler that counts for several
    models, or the domain counting in any handler, emits here instead: each document is its own metric set, which
    is also safe when the local runtime runs handlers in threads. The dimension sets are the metric's in
    `wanflow.telemetry.DIMENSION_SETS`: the widest takes every dimension given, the others the subsets they name.
    Powertools' own switch applies (POWERTOOLS_METRICS_DISABLED: the local stack prints nothing). Never raises:
    a metric is never worth failing a job for.
    """
    try:
        given = {"service": telemetry.SERVICE, **dimensions}
        sets = sorted(telemetry.dimension_sets_of(name), key=len, reverse=True)
        if set(sets[0]) != set(given):
            raise ValueError(f"{name} takes dimensions {sets[0]}, not {sorted(given)}")
        document = AmazonCloudWatchEMFProvider(namespace=telemetry.NAMESPACE)
        document.add_metric(name=name, unit=unit, value=value)
        for key in sets[0]:
            document.add_dimension(name=key, value=given[key])
        for names in sets[1:]:
            document.add_dimensions(**{key: given[key] for key in names})
        document.flush_metrics()
    except Exception:
        logger.warning("could not emit metric %s", name, exc_info=True)


class EmfTelemetry:
    """The domain's `Telemetry` port as CloudWatch EMF metrics (names and dimensions: wanflow.telemetry)."""

    def job_submitted(self, job: Job) -> None:
        emit(telemetry.JOBS_SUBMITTED, 1, model=model_of(job))

    def job_ended(self, job: Job) -> None:
        model = model_of(job)
        emit(telemetry.JOBS_FINISHED, 1, model=model, outcome=job.status.value)
        seconds = telemetry.time_to_video_seconds(job)
        if seconds is not None:
            emit(telemetry.TIME_TO_VIDEO, seconds, "Seconds", model=model)

    def dashscope_no_verdict(self, operation: str, *, throttled: bool) -> None:
        name = telemetry.DASHSCOPE_THROTTLED if throttled else telemetry.DASHSCOPE_ERRORS
        emit(name, 1, operation=operation)


class _NoSegment(BaseSegment):
    """A subsegment that records nothing."""

    def close(self, end_time: int | None = None) -> None:
        pass

    def add_subsegment(self, subsegment: Any) -> None:
        pass

    def remove_subsegment(self, subsegment: Any) -> None:
        pass

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        pass


class _NoTracing(BaseProvider):
    """The provider of a disabled Tracer: what the X-Ray SDK does when switched off, without importing it."""

    @contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Iterator[BaseSegment]:
        yield _NoSegment()

    @asynccontextmanager
    async def in_subsegment_async(self, name: str | None = None, **kwargs: Any) -> AsyncIterator[BaseSegment]:
        yield _NoSegment()

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def patch(self, modules: Sequence[str]) -> None:
        pass

    def patch_all(self) -> None:
        pass


class _UntracedTracer(Tracer):
    """Powertools' Tracer, disabled, on a provider that needs no X-Ray SDK.

    Powertools switches the X-Ray SDK off globally when a Tracer is disabled; with no X-Ray SDK loaded there is
    nothing to switch off.
    """

    @staticmethod
    def _disable_tracer_provider() -> None:
        pass


def tracing_enabled() -> bool:
    """Whether Powertools would trace here: in Lambda, not under SAM local, and not POWERTOOLS_TRACE_DISABLED."""
    return not Tracer._is_tracer_disabled()


def _make_tracer() -> Tracer:
    if tracing_enabled():
        return Tracer(service="wanflow")
    return _UntracedTracer(service="wanflow", disabled=True, provider=_NoTracing())


tracer = _make_tracer()


def inject_lambda_context(handler: Callable[[Any, Any], Result]) -> Callable[[Any, Any], Result]:
    """`logger.inject_lambda_context` for a handler, with the keys of each invocation its own.

    Each invocation runs in a copy of the caller's context that starts with no keys, so it neither sees the keys of
    a previous invocation on the same thread (the local runtime's threads are reused) nor leaves its own behind.
    """
    logged = logger.inject_lambda_context(handler)

    def invocation(event: Any, context: Any) -> Result:
        logger.thread_safe_clear_keys()
        return logged(event, context)

    @functools.wraps(handler)
    def invoke(event: Any, context: Any) -> Result:
        return contextvars.copy_context().run(invocation, event, context)

    return invoke


# The domain modules log through the standard library; route them through the Powertools formatter.
for name in ("wanflow",):
    library_logger = logging.getLogger(name)
    library_logger.handlers = logger.handlers
    library_logger.setLevel(logger.log_level)
    library_logger.propagate = False
