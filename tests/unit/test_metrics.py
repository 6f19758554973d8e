"""The EMF metrics the handlers print (what CloudWatch turns into metrics): names, units and dimension sets as
wanflow.telemetry declares them, which is what the dashboard and the alarms read (tests/unit/
test_operations_template.py). The handlers run on the in-memory fakes, with the real EMF telemetry."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from functions.api import app as api
from functions.finalize import app as finalize
from functions.record_failure import app as record_failure
from functions.status import app as status
from functions.sweeper import app as sweeper
from functions.webhook import app as webhook
from wanflow import telemetry
from wanflow.errors import RetryLaterError, ThrottledError
from wanflow.events import PollState
from wanflow.jobs import Job
from wanflow.observability import EmfTelemetry, emit
from wanflow.tasks import TaskStatus
from wanflow.usecases.poll import check_status
from wanflow.usecases.submit import submit_api_job
from wanflow.usecases.webhooks import Outcome
from wanflow_tools.fakes import FakeWorld, caller, fake_settings, sample_job_body
from wanflow_tools.testing import lambda_context as context

EVENTS = Path(__file__).resolve().parents[2] / "events"
MODEL = str(sample_job_body()["model"])
VIDEO = b"\x00\x00\x00\x18ftypmp42 a small video"


Metric = tuple[str, frozenset[tuple[str, ...]], dict[str, str], float, str]


def emitted(printed: str) -> list[Metric]:
    """Each metric of each EMF document printed: (name, its dimension sets, the dimension values, value, unit)."""
    metrics: list[Metric] = []
    for line in printed.splitlines():
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        if "_aws" not in document:
            continue
        for directive in document["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == telemetry.NAMESPACE
            sets = frozenset(tuple(sorted(names)) for names in directive["Dimensions"])
            values = {name: document[name] for names in sets for name in names}
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                total = sum(value) if isinstance(value, list) else value
                metrics.append((metric["Name"], sets, values, float(total), metric["Unit"]))
    return metrics


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWorld]:
    """The fakes, with the real EMF telemetry, as every handler's dependencies; Powertools' metrics switched on."""
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    world = FakeWorld(settings=fake_settings(model_slots=f"{MODEL}=1"))
    deps = dataclasses.replace(world.deps, telemetry=EmfTelemetry())
    for module in (api, finalize, record_failure, status, sweeper, webhook):
        monkeypatch.setattr(module, "dependencies", lambda: deps)
    yield world


@pytest.fixture
def printed(capsys: pytest.CaptureFixture[str]) -> Callable[[], list[Metric]]:
    capsys.readouterr()  # what the setup printed
    return lambda: emitted(capsys.readouterr().out)


def by_name(metrics: list[Metric], name: str) -> list[Metric]:
    return [metric for metric in metrics if metric[0] == name]


def running_job(world: FakeWorld) -> Job:
    job, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    return world.run_create_step(job.job_id)


def test_a_job_submitted_through_the_api_counts_for_its_model(
    world: FakeWorld, printed: Callable[[], list[Metric]]
) -> None:
    event = json.loads((EVENTS / "api-create-job.json").read_text())
    event["body"] = json.dumps(sample_job_body())
    response = api.lambda_handler(event, context("wanflow-api"))
    assert response["statusCode"] == 202
    ((_, sets, values, value, unit),) = by_name(printed(), telemetry.JOBS_SUBMITTED)
    assert sets == {("model", "service")} and values == {"model": MODEL, "service": "wanflow"}
    assert (value, unit) == (1, "Count")


def test_a_succeeded_job_counts_as_finished_with_its_model_and_outcome_and_its_time_to_video(
    world: FakeWorld, printed: Callable[[], list[Metric]]
) -> None:
    job = running_job(world)
    world.dashscope.succeed("task-1", "https://video/1")
    world.objects.videos["https://video/1"] = VIDEO
    poll = check_status(world.deps, job.job_id, PollState(next="wait"))
    printed()  # only what the finalize step prints from here
    finalize.lambda_handler({"job_id": job.job_id, "poll": poll.as_state()}, context("wanflow-finalize"))

    metrics = printed()
    ((_, sets, values, value, _),) = by_name(metrics, telemetry.JOBS_FINISHED)
    assert sets == {("model", "outcome", "service"), ("outcome", "service")}
    assert values == {"model": MODEL, "outcome": "SUCCEEDED", "service": "wanflow"} and value == 1
    ((_, sets, values, seconds, unit),) = by_name(metrics, telemetry.TIME_TO_VIDEO)
    assert sets == {("model", "service")} and values["model"] == MODEL and unit == "Seconds"
    stored = world.jobs.get(job.job_id)
    assert stored is not None and stored.completed_at is not None
    assert seconds == pytest.approx((stored.completed_at - stored.created_at).total_seconds())
    assert all(metric[1] <= telemetry.dimension_sets_of(metric[0]) for metric in metrics)


def test_a_failed_job_counts_as_finished_failed_once_and_has_no_time_to_video(
    world: FakeWorld, printed: Callable[[], list[Metric]]
) -> None:
    job = running_job(world)
    world.dashscope.set_status("task-1", TaskStatus.FAILED, code="DataInspectionFailed", message="refused")
    poll = check_status(world.deps, job.job_id, PollState(next="wait"))
    event = {"job_id": job.job_id, "poll": poll.model_dump(exclude_none=True)}
    record_failure.lambda_handler(event, context("wanflow-record-failure"))
    record_failure.lambda_handler(event, context("wanflow-record-failure"))  # a step Step Functions ran twice

    metrics = printed()
    ((_, _, values, value, _),) = by_name(metrics, telemetry.JOBS_FINISHED)
    assert values == {"model": MODEL, "outcome": "FAILED", "service": "wanflow"} and value == 1
    assert by_name(metrics, telemetry.TIME_TO_VIDEO) == []


def test_the_sweeper_reports_stuck_jobs_the_queue_per_model_and_todays_spend(
    world: FakeWorld, printed: Callable[[], list[Metric]]
) -> None:
    running_job(world)
    submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())  # waits for the slot
    printed()
    sweeper.lambda_handler({}, context("wanflow-sweeper"))

    metrics = printed()
    ((_, sets, _, value, _),) = by_name(metrics, telemetry.JOBS_PAST_DEADLINE)
    assert sets == {("service",)} and value == 0  # emitted on every sweep: the alarm sees data, not a gap
    ((_, sets, values, depth, _),) = by_name(metrics, telemetry.QUEUE_DEPTH)
    assert sets == {("model", "service")} and values["model"] == MODEL and depth == 1
    ((_, _, _, reserved, _),) = by_name(metrics, telemetry.SPEND_RESERVED_USD)
    ((_, _, _, spent, _),) = by_name(metrics, telemetry.SPEND_SPENT_USD)
    assert reserved > 0 and spent == 0


def test_a_throttled_query_and_a_failed_one_count_apart_by_operation(
    world: FakeWorld, printed: Callable[[], list[Metric]]
) -> None:
    job = running_job(world)
    world.dashscope.get_errors = [
        ThrottledError("slow down", code="Throttling.RateQuota"),
        RetryLaterError("busy", code="ServiceUnavailable"),
    ]
    printed()
    for _ in range(2):
        status.lambda_handler({"job_id": job.job_id, "poll": {"next": "wait"}}, context("wanflow-status"))

    metrics = printed()
    ((_, sets, values, value, _),) = by_name(metrics, telemetry.DASHSCOPE_THROTTLED)
    assert sets == {("operation", "service")} and values["operation"] == telemetry.QUERY and value == 1
    ((_, _, values, value, _),) = by_name(metrics, telemetry.DASHSCOPE_ERRORS)
    assert values["operation"] == telemetry.QUERY and value == 1


@pytest.mark.parametrize(
    ("outcome", "dimension"),
    [(Outcome.DELIVERED, "delivered"), (Outcome.RETRY, "retry"), (Outcome.GIVEN_UP, "given_up")],
)
def test_each_webhook_attempt_counts_by_outcome(
    world: FakeWorld,
    printed: Callable[[], list[Metric]],
    monkeypatch: pytest.MonkeyPatch,
    outcome: Outcome,
    dimension: str,
) -> None:
    monkeypatch.setattr(webhook, "deliver", lambda *args, **kwargs: outcome)
    event = json.loads((EVENTS / "sqs-webhook-delivery.json").read_text())
    if outcome is Outcome.RETRY:
        # The only record failed: the whole batch fails, and SQS hands the message back for its next attempt.
        with pytest.raises(BatchProcessingError):
            webhook.lambda_handler(event, context("wanflow-webhook"))
    else:
        webhook.lambda_handler(event, context("wanflow-webhook"))
    ((_, sets, values, value, _),) = by_name(printed(), telemetry.WEBHOOK_DELIVERIES)
    assert sets == {("outcome", "service")} and values == {"outcome": dimension, "service": "wanflow"} and value == 1


def test_a_dropped_event_is_no_delivery(
    world: FakeWorld, printed: Callable[[], list[Metric]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook, "deliver", lambda *args, **kwargs: Outcome.DROPPED)
    webhook.lambda_handler(json.loads((EVENTS / "sqs-webhook-delivery.json").read_text()), context("wanflow-webhook"))
    assert by_name(printed(), telemetry.WEBHOOK_DELIVERIES) == []


def test_a_metric_with_the_wrong_dimensions_is_refused_not_emitted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    emit(telemetry.JOBS_FINISHED, 1, model=MODEL)  # no outcome: a set the dashboard would never find
    assert emitted(capsys.readouterr().out) == []


def test_switched_off_metrics_print_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The local stack sets this: its stdout carries notifications, not EMF.
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    emit(telemetry.QUEUE_DEPTH, 3, model=MODEL)
    assert capsys.readouterr().out == ""
