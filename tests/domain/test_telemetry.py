"""What the domain counts for the dashboard and the alarms (the `Telemetry` port): each job submitted once, each
ending once whoever ends it, DashScope calls without a verdict by operation, and the sweeper's gauges."""

from __future__ import annotations

from decimal import Decimal

from wanflow.errors import OutcomeUnknownError, RetryLaterError, ThrottledError
from wanflow.events import PollState
from wanflow.jobs import Job
from wanflow.tasks import TaskStatus
from wanflow.telemetry import CREATE, QUERY
from wanflow.usecases import ending
from wanflow.usecases.batches import submit_api_batch
from wanflow.usecases.cancel import cancel_job
from wanflow.usecases.finalize import finalize_job
from wanflow.usecases.poll import check_status
from wanflow.usecases.submit import submit_api_job
from wanflow.usecases.sweep import gauges
from wanflow_tools.fakes import FakeWorld, caller, fake_settings, sample_job_body

VIDEO = b"\x00\x00\x00\x18ftypmp42 a small video"


def test_a_job_is_counted_as_submitted_once_even_when_its_request_is_repeated(world: FakeWorld) -> None:
    job, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key="k-1", caller=caller())
    again, created = submit_api_job(world.deps, sample_job_body(), idempotency_key="k-1", caller=caller())
    assert not created and again.job_id == job.job_id
    assert world.telemetry.submitted == [job.job_id]


def test_every_job_of_a_batch_is_counted_as_submitted(world: FakeWorld) -> None:
    body = {"jobs": [sample_job_body(), sample_job_body()]}
    batch, _ = submit_api_batch(world.deps, body, idempotency_key=None, caller=caller())
    assert sorted(world.telemetry.submitted) == sorted(world.jobs.batch_statuses(batch.batch_id))
    assert len(world.telemetry.submitted) == 2


def test_a_succeeded_job_is_counted_once_whoever_finishes_it(world: FakeWorld, submitted: Job) -> None:
    world.dashscope.succeed("task-1", "https://video/1")
    world.objects.videos["https://video/1"] = VIDEO
    assert check_status(world.deps, submitted.job_id, PollState(next="wait")).next == "finalize"
    finalize_job(world.deps, submitted.job_id)
    finalize_job(world.deps, submitted.job_id)  # a repeated step
    ending.record_failure(world.deps, submitted.job_id, None)  # a late failure path changes nothing
    assert world.telemetry.ended == [(submitted.job_id, "SUCCEEDED")]


def test_a_failed_task_counts_one_failed_job(world: FakeWorld, submitted: Job) -> None:
    world.dashscope.set_status("task-1", TaskStatus.FAILED, code="DataInspectionFailed", message="refused")
    result = check_status(world.deps, submitted.job_id, PollState(next="wait"))
    assert result.next == "fail"
    ending.record_failure(world.deps, submitted.job_id, result.error)
    ending.record_failure(world.deps, submitted.job_id, result.error)  # Step Functions may run a step twice
    assert world.telemetry.ended == [(submitted.job_id, "FAILED")]


def test_a_job_canceled_while_queued_counts_as_canceled() -> None:
    world = FakeWorld(settings=fake_settings(model_slots="wan2.2-i2v-flash=1"))
    first, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    queued, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    cancel_job(world.deps, queued.job_id, caller())
    assert world.telemetry.ended == [(queued.job_id, "CANCELED")]
    assert world.telemetry.submitted == [first.job_id, queued.job_id]


def test_a_throttled_create_and_an_unanswered_one_are_counted_apart(world: FakeWorld) -> None:
    job, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    world.dashscope.create_errors = [ThrottledError("slow down", code="Throttling.RateQuota")]
    world.run_create_step(job.job_id)
    world.dashscope.create_errors = [OutcomeUnknownError("no answer", code="RequestTimeOut")]
    world.run_create_step(job.job_id)
    assert world.telemetry.no_verdicts == [(CREATE, True), (CREATE, False)]
    assert world.telemetry.ended == []  # neither is a verdict


def test_a_throttled_query_and_a_failed_one_are_counted_by_kind(world: FakeWorld, submitted: Job) -> None:
    world.dashscope.get_errors = [
        ThrottledError("slow down", code="Throttling.RateQuota"),
        RetryLaterError("busy", code="ServiceUnavailable"),
    ]
    for _ in range(2):
        assert check_status(world.deps, submitted.job_id, PollState(next="wait")).next == "wait"
    assert world.telemetry.no_verdicts == [(QUERY, True), (QUERY, False)]


def submit_three(world: FakeWorld) -> list[Job]:
    return [submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())[0] for _ in range(3)]


def test_the_sweepers_gauges_count_jobs_waiting_for_a_slot_and_todays_spend() -> None:
    world = FakeWorld(settings=fake_settings(model_slots="wan2.2-i2v-flash=1"))
    jobs = submit_three(world)  # the first runs, two wait for its slot
    measured = gauges(world.deps)
    assert measured.queue_depths == {"wan2.2-i2v-flash": 2}
    assert measured.reserved_usd == Decimal(str(jobs[0].cost_estimate_usd))
    assert measured.spent_usd == Decimal(0)


def test_the_sweepers_gauges_count_jobs_the_spend_cap_holds() -> None:
    price = submit_three(FakeWorld())[0].cost_estimate_usd
    assert price is not None
    world = FakeWorld(settings=fake_settings(daily_budget_usd=price))  # room for one job today
    jobs = submit_three(world)  # slots for two: the second and third are held for the cap
    held = [world.jobs.get(job.job_id) for job in jobs[1:]]
    assert [job.queue_reason if job else None for job in held] == ["budget", "budget"]
    assert gauges(world.deps).queue_depths == {"wan2.2-i2v-flash": 2}


def test_an_idle_deployment_reports_no_queue_and_no_spend(world: FakeWorld) -> None:
    measured = gauges(world.deps)
    assert measured.queue_depths == {}
    assert (measured.reserved_usd, measured.spent_usd) == (Decimal(0), Decimal(0))
