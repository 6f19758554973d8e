"""The admission queue: jobs are accepted at once, submitted when their model has a free running slot (oldest first,
high priority ahead), slots come back the moment a task ends, and the sweeper repairs what a crash left."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

import pytest

from wanflow.capabilities import MODELS
from wanflow.errors import RejectedError, ThrottledError
from wanflow.events import PollState
from wanflow.jobs import Job, JobStatus, Stage, utc_now
from wanflow.tasks import TaskStatus
from wanflow.usecases import admission
from wanflow.usecases.cancel import cancel_job
from wanflow.usecases.poll import check_status
from wanflow.usecases.queries import get_job, list_jobs
from wanflow.usecases.submit import create_task_step, submit_api_job
from wanflow.usecases.sweep import sweep
from wanflow_tools.fakes import FakeWorld, caller, fake_settings, sample_job_body

MODEL = str(sample_job_body()["model"])
SLOTS = MODELS[MODEL].max_running  # 2 for the sample's wan2.2 model


def accept(world: FakeWorld, count: int, **body: object) -> list[Job]:
    return [
        submit_api_job(world.deps, sample_job_body(**body), idempotency_key=None, caller=caller())[0]
        for _ in range(count)
    ]


def status_of(world: FakeWorld, job: Job) -> tuple[JobStatus, Stage]:
    stored = world.jobs.get(job.job_id)
    assert stored is not None
    return stored.status, stored.stage


def test_a_valid_job_is_accepted_queued_and_granted_at_once_when_its_model_has_room(world: FakeWorld) -> None:
    (job,) = accept(world, 1)
    assert job.status is JobStatus.QUEUED and job.queued_at is not None
    assert status_of(world, job) == (JobStatus.PENDING, Stage.ACCEPTED)
    assert world.workflow.started == [job.job_id]
    assert world.dashscope.creates == 0  # the execution creates the task, not the API
    created = world.run_create_step(job.job_id)
    assert created.stage is Stage.SUBMITTED and world.dashscope.creates == 1
    assert created.submitted_at is not None


def test_a_burst_larger_than_the_slots_is_all_accepted_and_only_the_slots_are_submitted(world: FakeWorld) -> None:
    jobs = accept(world, SLOTS + 3)
    assert all(job.status is JobStatus.QUEUED for job in jobs)
    assert world.workflow.started == [job.job_id for job in jobs[:SLOTS]]
    assert [status_of(world, job)[0] for job in jobs[SLOTS:]] == [JobStatus.QUEUED] * 3
    world.run_started_create_steps()
    assert world.dashscope.creates == SLOTS
    assert world.slots.holders(MODEL) == {job.job_id for job in jobs[:SLOTS]}


def test_a_task_that_ends_frees_its_slot_for_the_oldest_queued_job_at_once(world: FakeWorld) -> None:
    jobs = accept(world, SLOTS + 2)
    world.run_started_create_steps()
    first = world.jobs.get(jobs[0].job_id)
    assert first is not None and first.provider.task_id is not None
    world.dashscope.succeed(first.provider.task_id, "https://video/1")
    assert check_status(world.deps, first.job_id, PollState(next="wait")).next == "finalize"
    assert jobs[0].job_id not in world.slots.holders(MODEL)  # freed before the video is even stored
    assert world.workflow.started[-1] == jobs[SLOTS].job_id and status_of(world, jobs[SLOTS + 1])[0] is JobStatus.QUEUED


@pytest.mark.parametrize("status", [TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.UNKNOWN])
def test_a_failed_canceled_or_expired_task_frees_its_slot_too(world: FakeWorld, status: TaskStatus) -> None:
    jobs = accept(world, SLOTS + 1)
    world.run_started_create_steps()
    job = world.jobs.get(jobs[0].job_id)
    assert job is not None and job.submitted_at is not None
    job.submitted_at -= timedelta(hours=1)  # long enough ago for UNKNOWN to be a verdict
    world.jobs.put(job)
    world.dashscope.set_status(job.provider.task_id or "", status)
    assert check_status(world.deps, jobs[0].job_id, PollState(next="wait")).next == "fail"
    assert jobs[0].job_id not in world.slots.holders(MODEL)
    assert status_of(world, jobs[SLOTS]) == (JobStatus.PENDING, Stage.ACCEPTED)


def test_high_priority_goes_ahead_of_older_normal_jobs(world: FakeWorld) -> None:
    accept(world, SLOTS)  # every slot taken
    normal = accept(world, 2)
    (urgent,) = accept(world, 1, priority="high")
    assert urgent.priority.value == "high"
    view = get_job(world.deps, urgent.job_id, caller())
    assert view["queue"]["position"] == 1 and view["priority"] == "high"
    world.slots.release(MODEL, world.workflow.started[0])  # a slot frees
    admission.dispatch(world.deps, MODEL)
    assert world.workflow.started[-1] == urgent.job_id
    assert all(status_of(world, job)[0] is JobStatus.QUEUED for job in normal)


def test_a_queued_job_shows_its_position_and_an_eta_from_recent_runs(world: FakeWorld) -> None:
    accept(world, SLOTS)
    queued = accept(world, 5)
    views = [get_job(world.deps, job.job_id, caller())["queue"] for job in queued]
    assert [view["position"] for view in views] == [1, 2, 3, 4, 5]
    assert [view["ahead"] for view in views] == [0, 1, 2, 3, 4]
    # No run seen yet: the assumed run time per round of SLOTS (2) runs ahead of it.
    default = admission.DEFAULT_RUN_SECONDS
    assert [view["eta_seconds"] for view in views] == [default, default, 2 * default, 2 * default, 3 * default]
    world.slots.record_run(MODEL, 40)
    world.slots.record_run(MODEL, 60)
    assert get_job(world.deps, queued[4].job_id, caller())["queue"]["eta_seconds"] == 150  # three rounds of 50 s
    # A free slot and nobody ahead: it starts at once.
    world.slots.release(MODEL, world.workflow.started[0])
    assert get_job(world.deps, queued[0].job_id, caller())["queue"]["eta_seconds"] == 0


def test_a_granted_or_running_job_shows_no_queue_and_its_times(world: FakeWorld, submitted: Job) -> None:
    view = get_job(world.deps, submitted.job_id, caller())
    assert view["queue"] is None and view["status"] == "PENDING"
    assert view["queued_at"] and view["submitted_at"] and view["finished_at"] is None


def test_a_queued_job_has_no_deadline_until_it_is_submitted(world: FakeWorld) -> None:
    (job,) = accept(world, 1)
    assert world.jobs.get(job.job_id).deadline_at is None  # type: ignore[union-attr]
    created = world.run_create_step(job.job_id)
    assert created.deadline_at is not None and created.submitted_at is not None
    assert created.deadline_at - created.submitted_at == timedelta(hours=25)


def test_cancel_of_a_queued_job_is_immediate_with_no_dashscope_call_and_one_notification(world: FakeWorld) -> None:
    accept(world, SLOTS)
    (queued,) = accept(world, 1)
    holders = world.slots.holders(MODEL)
    canceled = cancel_job(world.deps, queued.job_id, caller())
    assert canceled.status is JobStatus.CANCELED
    assert world.dashscope.creates == 0 and world.dashscope.canceled == []
    assert len(world.notifier.for_job(queued.job_id)) == 1
    assert world.slots.holders(MODEL) == holders and queued.job_id not in world.workflow.started


def test_cancel_of_a_granted_job_frees_its_slot_for_the_next_and_stops_its_execution(world: FakeWorld) -> None:
    jobs = accept(world, SLOTS + 1)
    canceled = cancel_job(world.deps, jobs[0].job_id, caller())
    assert canceled.status is JobStatus.CANCELED and world.dashscope.creates == 0
    assert world.workflow.stopped == [jobs[0].job_id]
    assert status_of(world, jobs[SLOTS]) == (JobStatus.PENDING, Stage.ACCEPTED)
    # Its execution's create step, if it still runs, sees the ending and creates nothing.
    assert create_task_step(world.deps, jobs[0].job_id, PollState(next="submit")).next == "fail"
    assert world.dashscope.creates == 0 and len(world.notifier.for_job(jobs[0].job_id)) == 1


def test_a_deployment_override_of_the_slots_is_obeyed() -> None:
    world = FakeWorld(settings=fake_settings(model_slots=f"{MODEL}=3,wan2.6-i2v=10"))
    accept(world, 5)
    assert len(world.workflow.started) == 3 and len(world.slots.holders(MODEL)) == 3


def test_a_throttled_create_waits_in_the_state_machine_and_never_fails(world: FakeWorld) -> None:
    (job,) = accept(world, 1)
    world.dashscope.create_errors = [ThrottledError("slow down", code="Throttling.RateQuota")] * 3
    waits = []
    state = PollState(next="submit")
    for _ in range(3):
        state = create_task_step(world.deps, job.job_id, state)
        assert state.next == "submit" and status_of(world, job) == (JobStatus.PENDING, Stage.ACCEPTED)
        waits.append(state.wait_seconds)
    assert waits == [1, 2, 4]
    assert create_task_step(world.deps, job.job_id, state).next == "wait"
    assert world.dashscope.creates == 1 and status_of(world, job)[1] is Stage.SUBMITTED


def test_a_create_dashscope_refuses_ends_the_job_failed_once_and_frees_the_slot(world: FakeWorld) -> None:
    jobs = accept(world, SLOTS + 1)
    world.dashscope.create_errors = [RejectedError("image refused", code="DataInspectionFailed")]
    assert create_task_step(world.deps, jobs[0].job_id, PollState(next="submit")).next == "fail"
    ended = world.jobs.get(jobs[0].job_id)
    assert ended is not None and ended.status is JobStatus.FAILED and ended.error is not None
    assert ended.error.code == "DataInspectionFailed" and len(world.notifier.for_job(ended.job_id)) == 1
    assert status_of(world, jobs[SLOTS]) == (JobStatus.PENDING, Stage.ACCEPTED)


def test_a_repeated_create_step_never_makes_a_second_task(world: FakeWorld, submitted: Job) -> None:
    state = create_task_step(world.deps, submitted.job_id, PollState(next="submit"))
    assert state.next == "wait" and world.dashscope.creates == 1


def test_creates_are_paced_under_the_models_submit_rate() -> None:
    world = FakeWorld(settings=fake_settings(model_slots=f"{MODEL}=6"))
    accept(world, 6)
    world.run_started_create_steps()
    turns = [turn for key, turn in world.limiter.granted if key.startswith("dashscope-create#")]
    assert len(turns) == 6 and world.dashscope.creates == 6
    gaps = [later - earlier for earlier, later in itertools.pairwise(turns)]
    assert min(gaps) >= 1 / MODELS[MODEL].submit_rps  # spaced by the model's submit rate, all six
    assert sum(world.sleeps) >= 5 / MODELS[MODEL].submit_rps


def test_the_sweeper_frees_a_slot_held_by_an_ended_job_and_grants_it(world: FakeWorld) -> None:
    jobs = accept(world, SLOTS + 1)
    ended = world.jobs.get(jobs[0].job_id)
    assert ended is not None
    ended.advance(JobStatus.CANCELED, Stage.DONE)  # ended behind the queue's back: its slot leaked
    world.jobs.put(ended)
    counts = sweep(world.deps)
    assert counts["slot_released"] == 1 and counts["granted"] == 1
    assert status_of(world, jobs[SLOTS]) == (JobStatus.PENDING, Stage.ACCEPTED)


def test_the_sweeper_completes_a_grant_a_crash_left_halfway(world: FakeWorld) -> None:
    accept(world, SLOTS)
    (queued,) = accept(world, 1)
    world.slots.release(MODEL, world.workflow.started[0])  # a slot frees ...
    world.slots.claim(MODEL, queued.job_id, SLOTS)  # ... and a dispatcher claims it, then dies
    counts = sweep(world.deps)
    assert counts["grant_repaired"] == 1
    assert status_of(world, queued) == (JobStatus.PENDING, Stage.ACCEPTED)
    assert world.workflow.started[-1] == queued.job_id and len(world.slots.holders(MODEL)) == SLOTS


def test_the_sweeper_starts_the_execution_a_granted_job_never_got(world: FakeWorld) -> None:
    world.workflow.fail_starts = True
    (job,) = accept(world, 1)
    assert status_of(world, job) == (JobStatus.PENDING, Stage.ACCEPTED) and world.workflow.started == []
    world.workflow.fail_starts = False
    assert sweep(world.deps)["execution_started"] == 1 and world.workflow.started == [job.job_id]


def test_concurrent_dispatchers_never_hold_more_slots_than_there_are() -> None:
    world = FakeWorld(settings=fake_settings(model_slots=f"{MODEL}=5"))
    for job in accept(world, 5):
        world.slots.release(MODEL, job.job_id)
        world.jobs.put(_queued_again(world, job))
    accept(world, 10)  # a queue of 15 and no holder
    barrier = threading.Barrier(4)

    def dispatcher() -> None:
        barrier.wait()
        admission.dispatch(world.deps, MODEL)

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted = [job for job in world.jobs.all() if job.status is JobStatus.PENDING]
    assert len(world.slots.holders(MODEL)) == 5 == len(granted)
    assert world.slots.holders(MODEL) == {job.job_id for job in granted}


def _queued_again(world: FakeWorld, job: Job) -> Job:
    stored = world.jobs.get(job.job_id)
    assert stored is not None
    stored.status, stored.stage, stored.granted_at = JobStatus.QUEUED, Stage.QUEUED, None
    stored.queued_at = utc_now()
    return stored


def test_a_list_shows_every_queued_jobs_place_as_a_get_does(world: FakeWorld) -> None:
    accept(world, SLOTS)
    queued = accept(world, 4)
    (urgent,) = accept(world, 1, priority="high")
    listed = {
        view["job_id"]: view["queue"]
        for view in list_jobs(world.deps, caller(), status=None, limit=50, cursor=None)["jobs"]
    }
    for job in [*queued, urgent]:
        assert listed[job.job_id] == get_job(world.deps, job.job_id, caller())["queue"]
    assert listed[urgent.job_id]["position"] == 1 and listed[queued[3].job_id]["position"] == 5
    assert sum(1 for place in listed.values() if place is None) == SLOTS  # granted jobs have left the queue
