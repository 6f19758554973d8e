"""Log lines of concurrent invocations (local mode runs every handler in threads of one process): each line
carries the function and the job of the invocation that wrote it, and nothing of an invocation outlives it.

The handlers are the real ones with their use cases stubbed out; the stubs log through the domain's standard
library loggers, as the use cases do, and meet at a barrier, so that every invocation has set its keys before
any of them logs.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from functions.finalize import app as finalize
from functions.record_failure import app as record_failure
from functions.status import app as status
from functions.sweeper import app as sweeper
from wanflow.observability import logger
from wanflow.usecases.sweep import Gauges
from wanflow_tools.testing import lambda_context as context

TIMEOUT = 10.0
domain_log = logging.getLogger("wanflow.usecases.test")


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON log lines the handlers write, as Powertools formats them for CloudWatch."""
    stream = io.StringIO()
    capture = logging.StreamHandler(stream)
    capture.setFormatter(logger.registered_formatter)
    logger.addHandler(capture)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger._logger.removeHandler(capture)


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> threading.Barrier:
    """The use cases of status, finalize and record_failure, stubbed: each logs, waits for the others, logs again."""
    barrier = threading.Barrier(3, timeout=TIMEOUT)

    def work(what: str, job_id: str) -> None:
        domain_log.info("%s started", what, extra={"job": job_id})
        barrier.wait()  # every invocation has set its keys, none has logged since
        domain_log.info("%s done", what, extra={"job": job_id})

    def check_status(deps: Any, job_id: str, poll: Any) -> Any:
        work("status", job_id)
        return SimpleNamespace(next="wait", polls=1, as_state=lambda: {"job_id": job_id})

    def ended(what: str) -> Callable[..., Any]:
        def end(deps: Any, job_id: str, *args: Any, **kwargs: Any) -> Any:
            work(what, job_id)
            return SimpleNamespace(job_id=job_id, status=SimpleNamespace(value="succeeded"))

        return end

    for module in (status, finalize, record_failure, sweeper):
        monkeypatch.setattr(module, "dependencies", lambda: None)
    monkeypatch.setattr(status, "check_status", check_status)
    monkeypatch.setattr(finalize, "finalize_job", ended("finalize"))
    monkeypatch.setattr(record_failure, "record_failure", ended("record_failure"))
    monkeypatch.setattr(sweeper, "sweep", lambda deps: domain_log.info("sweeping") or {})
    monkeypatch.setattr(sweeper, "gauges", lambda deps: Gauges())
    return barrier


def test_concurrent_invocations_log_their_own_function_and_job(
    stubbed: threading.Barrier, lines: Callable[[], list[dict[str, Any]]]
) -> None:
    invocations = {
        "job-status": (status.lambda_handler, "wanflow-status"),
        "job-finalize": (finalize.lambda_handler, "wanflow-finalize"),
        "job-failure": (record_failure.lambda_handler, "wanflow-record-failure"),
    }
    errors: list[BaseException] = []

    def invoke(job_id: str) -> None:
        handler, function_name = invocations[job_id]
        try:
            handler({"job_id": job_id}, context(function_name))
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)
            stubbed.abort()

    threads = [threading.Thread(target=invoke, args=(job_id,)) for job_id in invocations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not errors, errors

    logged = lines()
    assert len(logged) == 7  # started and done per job, and the status handler's "polled"
    for line in logged:
        job_id = "job-status" if line["message"] == "polled" else line["job"]
        assert (line["function_name"], line["correlation_id"]) == (invocations[job_id][1], job_id), line
        assert line["function_request_id"] == f"request-of-{invocations[job_id][1]}"


def test_nothing_of_an_invocation_outlives_it(
    stubbed: threading.Barrier, lines: Callable[[], list[dict[str, Any]]]
) -> None:
    stubbed.abort()  # no partners here: the stub's barrier wait raises at once
    with pytest.raises(threading.BrokenBarrierError):
        status.lambda_handler({"job_id": "job-1"}, context("wanflow-status"))
    domain_log.info("between invocations")
    sweeper.lambda_handler({}, context("wanflow-sweeper"))

    started, between, *swept = lines()
    assert (started["function_name"], started["correlation_id"]) == ("wanflow-status", "job-1")
    assert "function_name" not in between and "correlation_id" not in between
    assert [line["message"] for line in swept] == ["sweeping", "sweep done"]
    for line in swept:
        assert line["function_name"] == "wanflow-sweeper" and "correlation_id" not in line
