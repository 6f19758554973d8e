"""The spend cap (docs/product.md section 8): a job's list price is reserved when it is granted, before its task is
created; a job that would pass the cap waits QUEUED (reason "budget") beside the queue, without holding up others;
a failure or cancel gives the reservation back once, a success keeps it once; threshold events are published once;
the sweeper lets held jobs go after midnight UTC or once the cap is raised; GET /v1/usage shows the day."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from wanflow.callers import Caller
from wanflow.dashscope import TaskStatus
from wanflow.errors import InvalidRequest
from wanflow.events import PollState, StepError
from wanflow.jobs import HELD_FOR_BUDGET, BudgetState, Job, JobStatus, Stage, utc_now
from wanflow.usecases import admission, budget, ending
from wanflow.usecases.cancel import cancel_job
from wanflow.usecases.finalize import finalize_job
from wanflow.usecases.poll import check_status
from wanflow.usecases.queries import get_job
from wanflow.usecases.submit import submit_api_job
from wanflow.usecases.sweep import sweep
from wanflow.usecases.views import job_view
from wanflow_tools.fakes import FakeWorld, caller, fake_settings, sample_job_body

REPO = Path(__file__).resolve().parents[2]
BUDGET_SCHEMA = json.loads((REPO / "schemas" / "budget-event.v1.schema.json").read_text())
MODEL = str(sample_job_body()["model"])  # wan2.2-i2v-flash, 2 running slots
PRICE = Decimal("0.075")  # its list price at 480P for 5 s (0.015 USD a second)
ALICE = caller("AIDAALICEEXAMPLE0001")
BOB = caller("AIDABOBEXAMPLE000001")
ADMIN = caller("AIDAADMINEXAMPLE0001", admin=True)


def capped(cap: str = "0", **callers: str) -> FakeWorld:
    budgets = ",".join(f"{name}={usd}" for name, usd in callers.items())
    return FakeWorld(settings=fake_settings(daily_budget_usd=cap, caller_budgets_usd=budgets))


def submit(world: FakeWorld, who: Caller = ALICE, **body: Any) -> Job:
    job, created = submit_api_job(world.deps, sample_job_body(**body), idempotency_key=None, caller=who)
    assert created
    return job


def stored(world: FakeWorld, job: Job) -> Job:
    current = world.jobs.get(job.job_id)
    assert current is not None
    return current


def reserved(world: FakeWorld, principal: str | None = None) -> Decimal:
    return world.budget.usage(budget.today(), principal).reserved_usd


def fail_task(world: FakeWorld, job: Job) -> Job:
    """The job's task fails at DashScope and the state machine records it."""
    created = world.run_create_step(job.job_id)
    assert created.provider.task_id is not None
    world.dashscope.set_status(created.provider.task_id, TaskStatus.FAILED, code="DataInspectionFailed")
    state = check_status(world.deps, job.job_id, PollState(next="wait"))
    assert state.next == "fail"
    return ending.record_failure(world.deps, job.job_id, state.error)


def succeed_task(world: FakeWorld, job: Job) -> Job:
    created = world.run_create_step(job.job_id)
    assert created.provider.task_id is not None
    url = f"https://video/{job.job_id}"
    world.dashscope.succeed(created.provider.task_id, url)
    world.objects.videos[url] = b"\x00\x00\x00\x18ftypmp42 video"
    state = check_status(world.deps, job.job_id, PollState(next="wait"))
    assert state.next == "finalize"
    return finalize_job(world.deps, job.job_id, state.video)


# ------------------------------------------------------------------------------------------------ reservation


def test_a_granted_job_reserves_its_list_price_before_its_task_is_created() -> None:
    world = capped("1")
    job = submit(world)
    granted = stored(world, job)
    assert granted.status is JobStatus.PENDING and world.dashscope.creates == 0
    assert granted.budget is not None
    assert (granted.budget.day, granted.budget.usd, granted.budget.state) == (budget.today(), 0.075, "reserved")
    assert reserved(world) == reserved(world, ALICE.principal) == PRICE
    day = world.budget.usage(budget.today())
    assert day.models[MODEL].jobs == 1 and day.models[MODEL].video_seconds == 5


def test_without_a_cap_jobs_still_reserve_so_that_usage_is_counted() -> None:
    world = FakeWorld()
    jobs = [submit(world) for _ in range(2)]
    assert all(stored(world, job).status is JobStatus.PENDING for job in jobs)
    assert reserved(world) == 2 * PRICE


def test_a_job_that_would_pass_the_cap_waits_queued_for_budget_and_is_not_lost() -> None:
    world = capped("0.1")  # room for one
    first, second = submit(world), submit(world)
    assert stored(world, first).status is JobStatus.PENDING
    held = stored(world, second)
    assert (held.status, held.stage, held.queue_reason) == (JobStatus.QUEUED, Stage.QUEUED, HELD_FOR_BUDGET)
    assert world.workflow.started == [first.job_id]  # no execution, so no task, for the held job
    assert second.job_id not in world.slots.holders(MODEL)  # it gave its slot back
    assert reserved(world) == PRICE
    # The POST answer and GET both say why it waits.
    assert second.queue_reason == HELD_FOR_BUDGET  # submit_api_job answers with the job as stored
    queue = get_job(world.deps, second.job_id, ALICE)["queue"]
    assert queue["reason"] == "budget" and queue["eta_seconds"] >= 1
    assert get_job(world.deps, first.job_id, ALICE)["queue"] is None


def test_the_post_answer_of_a_held_job_shows_queued_with_reason_budget() -> None:
    world = capped("0.05")  # less than one job
    job = submit(world)
    view = job_view(world.deps, job)
    assert view["status"] == "QUEUED" and view["queue"]["reason"] == "budget"


def test_a_job_waiting_for_a_slot_says_so() -> None:
    world = FakeWorld()
    jobs = [submit(world) for _ in range(3)]  # 2 slots
    assert get_job(world.deps, jobs[2].job_id, ALICE)["queue"]["reason"] == "slots"


def test_a_caller_over_their_own_cap_does_not_hold_up_other_callers() -> None:
    world = capped("10", AIDABOBEXAMPLE000001="0.1")
    bob_first, bob_second, bob_third = submit(world, BOB), submit(world, BOB), submit(world, BOB)
    alice = submit(world, ALICE)
    assert stored(world, bob_first).status is JobStatus.PENDING
    assert [stored(world, job).queue_reason for job in (bob_second, bob_third)] == [HELD_FOR_BUDGET] * 2
    assert stored(world, alice).status is JobStatus.PENDING  # behind bob's held jobs, yet granted
    assert reserved(world, BOB.principal) == PRICE and reserved(world) == 2 * PRICE


def test_a_role_arn_cap_applies_to_every_session_of_the_role() -> None:
    role = "arn:aws:iam::123456789012:role/batch"
    world = FakeWorld(settings=fake_settings(caller_budgets_usd=f"{role}=0.1"))
    session = Caller(principal="AROABATCHEXAMPLE0001", arn="arn:aws:sts::123456789012:assumed-role/batch/s1")
    first, second = submit(world, session), submit(world, session)
    assert stored(world, first).status is JobStatus.PENDING
    assert stored(world, second).queue_reason == HELD_FOR_BUDGET


def test_a_cheaper_job_that_still_fits_goes_ahead_of_a_held_one() -> None:
    world = capped("0.26")
    big = submit(world, parameters={"resolution": "720P", "duration": 5})  # 0.18
    bigger = submit(world, parameters={"resolution": "720P", "duration": 5})  # 0.36 in all: held
    small = submit(world)  # 0.255 in all: fits, and takes the slot the held job gave back
    assert stored(world, big).status is JobStatus.PENDING
    assert stored(world, bigger).queue_reason == HELD_FOR_BUDGET
    assert stored(world, small).status is JobStatus.PENDING
    assert reserved(world) == Decimal("0.255")


def test_one_dispatch_holds_a_bounded_number_of_jobs_and_held_jobs_leave_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = capped("0.05")
    with monkeypatch.context() as patch:
        patch.setattr(admission, "admit", lambda deps, job: None)  # queued, not dispatched yet
        jobs = [submit(world) for _ in range(5)]
    monkeypatch.setattr(admission, "MAX_HOLDS_PER_DISPATCH", 3)
    assert admission.dispatch(world.deps, MODEL) == 0
    assert sum(stored(world, job).queue_reason == HELD_FOR_BUDGET for job in jobs) == 3
    assert len(world.jobs.queued(MODEL, limit=10)) == 2  # the held ones are out of the queue's way
    admission.dispatch(world.deps, MODEL)
    assert len(world.jobs.queued(MODEL, limit=10)) == 0
    assert len(world.jobs.queued(f"{MODEL}#budget", limit=10)) == 5
    assert world.slots.holders(MODEL) == set() and world.workflow.started == []


def test_a_job_granted_again_after_a_crash_is_never_reserved_twice() -> None:
    world = capped("1")
    job = submit(world)
    granted = stored(world, job)
    # A dispatcher that reserved and died before recording the grant: the job is QUEUED again, holding its slot.
    granted.status, granted.stage, granted.budget = JobStatus.QUEUED, Stage.QUEUED, None
    world.jobs.put(granted)
    world.workflow.executions.clear()
    assert sweep(world.deps).get("grant_repaired") == 1
    assert stored(world, job).status is JobStatus.PENDING
    assert reserved(world) == PRICE and world.budget.usage(budget.today()).models[MODEL].jobs == 1


def test_a_ledger_that_fails_at_the_grant_leaves_the_job_queued_without_a_slot_for_the_sweeper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = capped("1")
    with monkeypatch.context() as patch:
        patch.setattr(world.budget, "reserve", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("down")))
        job = submit(world)  # accepted all the same
    assert stored(world, job).status is JobStatus.QUEUED and world.slots.holders(MODEL) == set()
    assert world.workflow.started == []
    assert sweep(world.deps)["granted"] == 1
    assert stored(world, job).status is JobStatus.PENDING and reserved(world) == PRICE


# ------------------------------------------------------------------------------------------- settling


def test_a_failed_job_gives_its_reservation_back_exactly_once() -> None:
    world = capped("1")
    job = submit(world)
    failed = fail_task(world, job)
    assert failed.status is JobStatus.FAILED
    assert reserved(world) == reserved(world, ALICE.principal) == 0
    assert world.budget.usage(budget.today()).models[MODEL].jobs == 0
    assert stored(world, job).budget.state is BudgetState.RELEASED  # type: ignore[union-attr]
    # Ending it again (a repeated step, the sweeper) gives nothing back twice.
    ending.record_failure(world.deps, job.job_id, StepError(code="TaskFailed", message="again"))
    budget.settle(world.deps, stored(world, job))
    assert reserved(world) == 0 and world.budget.usage(budget.today()).models[MODEL].reserved_usd == 0


def test_a_canceled_job_gives_its_reservation_back() -> None:
    world = capped("1")
    job = submit(world)  # granted, its task not created yet
    assert cancel_job(world.deps, job.job_id, ALICE).status is JobStatus.CANCELED
    assert reserved(world) == 0


def test_a_succeeded_job_keeps_its_reservation_as_spent_exactly_once() -> None:
    world = capped("1")
    job = submit(world)
    done = succeed_task(world, job)
    assert done.status is JobStatus.SUCCEEDED
    day = world.budget.usage(budget.today())
    assert (day.reserved_usd, day.spent_usd) == (PRICE, PRICE)
    assert day.models[MODEL].spent_usd == PRICE
    finalize_job(world.deps, job.job_id)  # a second run of the finalizer
    budget.settle(world.deps, stored(world, job))
    assert world.budget.usage(budget.today()).spent_usd == PRICE


def test_a_reservation_given_back_lets_a_held_job_go_at_once() -> None:
    world = capped("0.1")
    first, second = submit(world), submit(world)
    assert stored(world, second).queue_reason == HELD_FOR_BUDGET
    fail_task(world, first)
    assert stored(world, second).status is JobStatus.PENDING
    assert reserved(world) == PRICE


def test_the_sweeper_settles_a_reservation_an_ending_could_not(monkeypatch: pytest.MonkeyPatch) -> None:
    world = capped("1")
    job = submit(world)
    with monkeypatch.context() as patch:
        patch.setattr(world.budget, "settle", lambda job_id, spent: (_ for _ in ()).throw(RuntimeError("down")))
        cancel_job(world.deps, job.job_id, ALICE)
    assert reserved(world) == PRICE  # still held: the ledger was down
    assert sweep(world.deps).get("budget_settled") == 1
    assert reserved(world) == 0 and sweep(world.deps).get("budget_settled") is None


# ------------------------------------------------------------------------------------------- thresholds


def test_thresholds_are_announced_once_each_at_80_and_100_percent() -> None:
    world = capped("0.09")
    submit(world)  # 0.075 of 0.09: 83%
    assert [event["budget"]["threshold"] for event in world.notifier.budget_events] == [0.8]
    submit(world)  # held: the day's cap is reached
    submit(world)
    events = world.notifier.budget_events
    assert [event["budget"]["threshold"] for event in events] == [0.8, 1.0]
    for event in events:
        jsonschema.validate(event, BUDGET_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        assert event["budget"]["scope"] == "deployment" and event["budget"]["cap_usd"] == 0.09
    assert events[0]["budget"]["reserved_usd"] == 0.075 and events[0]["budget"]["date"] == budget.today()
    assert world.notifier.events == []  # no job event among them


def test_reaching_the_cap_exactly_announces_both_thresholds_once() -> None:
    world = capped("0.15")
    submit(world)
    submit(world)
    assert [event["budget"]["threshold"] for event in world.notifier.budget_events] == [0.8, 1.0]


def test_a_callers_thresholds_name_the_caller() -> None:
    world = capped(AIDABOBEXAMPLE000001="0.075")
    submit(world, BOB)
    assert [(e["budget"]["scope"], e["budget"]["threshold"]) for e in world.notifier.budget_events] == [
        (BOB.principal, 0.8),
        (BOB.principal, 1.0),
    ]


def test_no_threshold_events_without_a_cap() -> None:
    world = FakeWorld()
    for _ in range(3):
        submit(world)
    assert world.notifier.budget_events == []


# ------------------------------------------------------------------------------------------- release


def test_held_jobs_go_when_the_utc_day_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    world = capped("0.1")
    first, second = submit(world), submit(world)
    assert sweep(world.deps).get("budget_released") is None  # same day, no room: still held
    assert stored(world, second).queue_reason == HELD_FOR_BUDGET
    tomorrow = utc_now() + timedelta(days=1)
    monkeypatch.setattr(budget, "utc_now", lambda: tomorrow)
    counts = sweep(world.deps)
    assert counts["budget_released"] == 1 and counts["granted"] == 1
    released = stored(world, second)
    assert released.status is JobStatus.PENDING and released.budget is not None
    assert released.budget.day == tomorrow.date().isoformat() != stored(world, first).budget.day  # type: ignore[union-attr]
    assert world.budget.usage(tomorrow.date().isoformat()).reserved_usd == PRICE


def test_held_jobs_go_when_the_cap_is_raised_on_the_next_sweep() -> None:
    world = capped("0.1")
    jobs = [submit(world) for _ in range(3)]
    assert [stored(world, job).status for job in jobs] == [JobStatus.PENDING, JobStatus.QUEUED, JobStatus.QUEUED]
    world.settings = fake_settings(daily_budget_usd="0.16")  # a stack update: room for one more
    counts = sweep(world.deps)
    assert counts["budget_released"] == 1 and counts["granted"] == 1
    assert stored(world, jobs[1]).status is JobStatus.PENDING  # the oldest held first
    assert stored(world, jobs[2]).queue_reason == HELD_FOR_BUDGET
    assert reserved(world) == 2 * PRICE


# ------------------------------------------------------------------------------------------------ usage


def test_usage_shows_the_day_per_model_to_an_admin_and_their_own_to_a_caller() -> None:
    world = capped("0.2", AIDABOBEXAMPLE000001="0.1")
    succeed_task(world, submit(world, ALICE))
    fail_task(world, submit(world, BOB))
    submit(world, BOB)  # reserved, running
    submit(world, BOB)  # held by bob's cap
    deployment = budget.usage(world.deps, ADMIN, None)
    assert deployment == {
        "date": budget.today(),
        "scope": "deployment",
        "cap_usd": 0.2,
        "reserved_usd": 0.15,
        "spent_usd": 0.075,
        "held_jobs": 1,
        "models": {MODEL: {"jobs": 2, "video_seconds": 10, "reserved_usd": 0.15, "spent_usd": 0.075}},
    }
    own = budget.usage(world.deps, BOB, budget.today())
    assert own["scope"] == "principal" and own["principal"] == BOB.principal and own["cap_usd"] == 0.1
    assert (own["reserved_usd"], own["spent_usd"]) == (0.075, 0)
    assert budget.usage(world.deps, ALICE, None)["cap_usd"] is None  # no cap of her own


def test_usage_of_another_day_is_that_days() -> None:
    world = FakeWorld()
    submit(world)
    yesterday = (utc_now() - timedelta(days=1)).date().isoformat()
    view = budget.usage(world.deps, ADMIN, yesterday)
    assert view["date"] == yesterday and view["reserved_usd"] == 0 and view["models"] == {}
    assert "held_jobs" not in view  # held jobs are a fact of today


@pytest.mark.parametrize(
    "value",
    ["tomorrow", "2026-13-01", "2026-02-30", "20261130", "2026-11-30T00:00:00Z", "", "0001-01-01", "9999-12-31"],
)
def test_a_bad_usage_date_is_a_400_naming_date(value: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        budget.usage(FakeWorld().deps, ALICE, value)
    assert [error.field for error in caught.value.errors] == ["date"]
