"""The admission queue end to end (docs/product.md section 6), offline: real HTTP to the API adapter, the real
handlers in-process, moto executing statemachine/job.asl.json, and the DashScope emulator on loopback WITH its rate
limits on (each model's submit rate, 20 queries/s over a sliding second), so that every 429 wanflow provokes is
counted in the emulator's request log.

One emulator and one stack serve the module. Model wan2.2-i2v-flash: 2 running slots and 2 creates/s at DashScope
(some tests set `WANFLOW_MODEL_SLOTS`), so bursts exceed the slots. The poll interval is 1 s. Tasks are held at
DashScope by a long `pending_seconds` and let go by restoring it, or by moving the emulator's clock forward (the
clock only ever moves forward here: the emulator's sliding-window limiter would count requests stamped in the
future). Nothing sleeps to synchronise: every wait is on a condition, with a deadline.

Each test starts with an emulator reset (tasks, faults, rate-limit counts, request log) and ends by letting every
job it submitted end (timings and faults restored) and checking that no running slot is left held.

The throttling storm here is time-scaled: refused queries are asked again after at most 1 s instead of up to 300 s,
and the storm lasts until each running job has had six refused in a row, what a 10-minute storm does with the
deployed waits.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import boto3
import httpx
import jsonschema
import pytest

from wanflow.adapters.running_slots import DynamoRunningSlots
from wanflow.observability import logger as wanflow_logger
from wanflow.settings import Settings, get_settings
from wanflow.usecases import admission
from wanflow.wiring import reset as reset_application
from wanflow_tools.emulator import Emulator, EmulatorConfig
from wanflow_tools.moto_stack.stack import MotoStack
from wanflow_tools.testing import image_data_uri
from wanflow_tools.testing import wait_until as _wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EVENT_SCHEMA = json.loads((REPO / "schemas" / "job-event.v1.schema.json").read_text())
API_KEY = "sk-admission-test-key"
MODEL = "wan2.2-i2v-flash"
SLOTS = 2  # the capability table's max_running for MODEL
TIMEOUT = 60.0
HOLD = 3600.0  # pending_seconds that keeps a task PENDING at DashScope until a test lets it go
DEFAULT_RUN_SECONDS = 180  # the ETA's run time before any run of the model was observed (docs/product.md)
TIMINGS = {"pending_seconds": 0.2, "running_seconds": 0.5, "task_ttl_seconds": 86_400.0, "url_ttl_seconds": 86_400.0}
FINAL = {"SUCCEEDED", "FAILED", "CANCELED"}
GHOST_JOB = "0" * 32  # a job id no job has


class Clock:
    """The emulator's clock; tests move it forward (only) to let held tasks run, or to expire them."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def emulator(clock: Clock) -> Iterator[Emulator]:
    config = EmulatorConfig(api_key=API_KEY, clock=clock, rate_limits=True, render_workers=2, **TIMINGS)
    with Emulator(config) as running:
        yield running


@pytest.fixture(scope="module")
def stack(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoStack]:
    with MotoStack(
        state_dir=tmp_path_factory.mktemp("state"),
        api_port=0,
        dashscope_base_url=emulator.base_url,
        dashscope_api_key=API_KEY,
        poll_interval_seconds=1,
    ) as running:
        reset_application()
        yield running
    reset_application()


@pytest.fixture(scope="module")
def api(stack: MotoStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def slots(stack: MotoStack) -> DynamoRunningSlots:
    """The stack's running slots, as the handlers see them (to play a crashed dispatcher, and to check leaks)."""
    dynamodb = boto3.resource(
        "dynamodb",
        endpoint_url=stack.aws_endpoint,
        region_name=stack.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return DynamoRunningSlots(dynamodb.Table(stack.resources["AdmissionTable"]))


def wait_until(predicate: Callable[[], Any], what: str = "condition", timeout: float = TIMEOUT) -> Any:
    return _wait_until(predicate, timeout=timeout, interval=0.1, what=what)


# ------------------------------------------------------------------------------------------------------- helpers


def job_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "input": {"prompt": "a lighthouse at dusk", "img_url": image_data_uri(320, 256)},
        "parameters": {"resolution": "480P", "duration": 5},
        "metadata": {"test": "admission"},
    }
    body.update(overrides)
    return body


class Jobs:
    """The jobs a test submits through the API, and waits on."""

    def __init__(self, api: httpx.Client, stack: MotoStack) -> None:
        self.api = api
        self.stack = stack
        self.ids: list[str] = []

    def submit(self, **overrides: Any) -> str:
        """Submit a job; every valid job is answered 202 QUEUED at once, whatever the load."""
        response = self.api.post("/v1/jobs", json=job_body(**overrides))
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["status"] == "QUEUED" and job["queued_at"], job
        self.ids.append(job["job_id"])
        return str(job["job_id"])

    def get(self, job_id: str) -> dict[str, Any]:
        response = self.api.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def cancel(self, job_id: str) -> httpx.Response:
        return self.api.post(f"/v1/jobs/{job_id}/cancel")

    def wait(self, job_id: str, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            job = self.get(job_id)
            return job if predicate(job) else None

        return dict(wait_until(check, what=f"{what} ({job_id})"))

    def wait_task_pending(self, job_id: str) -> dict[str, Any]:
        """The job's task exists and is PENDING at DashScope (held there by a long pending time)."""
        return self.wait(job_id, lambda job: job["provider"].get("task_status") == "PENDING", "its task PENDING")

    def wait_started(self, job_id: str) -> dict[str, Any]:
        """The job left the queue and its task exists at DashScope."""
        return self.wait(
            job_id, lambda job: job["status"] != "QUEUED" and bool(job["provider"].get("task_id")), "its task created"
        )

    def wait_ended(self, job_ids: list[str], timeout: float = TIMEOUT) -> dict[str, dict[str, Any]]:
        """Every job has ended and its notification has arrived; returns the jobs as GET shows them."""

        def notified() -> bool:
            seen = {n["message"].get("job", {}).get("job_id") for n in self.stack.notifications()}
            return set(job_ids) <= seen

        wait_until(notified, what=f"notifications of {len(job_ids)} jobs", timeout=timeout)
        return {job_id: self.get(job_id) for job_id in job_ids}


def faults(emulator: Emulator, *rules: dict[str, Any]) -> None:
    httpx.post(f"{emulator.root_url}/_emulator/faults", json=list(rules)).raise_for_status()


def clear_faults(emulator: Emulator) -> None:
    httpx.delete(f"{emulator.root_url}/_emulator/faults").raise_for_status()


def emulator_tasks(emulator: Emulator) -> list[dict[str, Any]]:
    return list(httpx.get(f"{emulator.root_url}/_emulator/tasks").json()["tasks"])


def request_log(emulator: Emulator, *, times: bool = False) -> dict[str, Any]:
    """The emulator's log of DashScope API requests by kind (create, query, ...); `times`: with each request's time."""
    params = {"times": "1"} if times else {}
    return dict(httpx.get(f"{emulator.root_url}/_emulator/requests", params=params).json()["requests"])


def notifications_for(stack: MotoStack, job_id: str) -> list[dict[str, Any]]:
    return [n for n in stack.notifications() if n["message"].get("job", {}).get("job_id") == job_id]


def notifications_for_any(stack: MotoStack, job_ids: list[str]) -> list[dict[str, Any]]:
    return [n for n in stack.notifications() if n["message"].get("job", {}).get("job_id") in job_ids]


def settle(stack: MotoStack) -> None:
    """Wait until everything published so far has reached the sink, by publishing a marker and waiting for it."""
    marker = uuid.uuid4().hex
    stack.boto3_client("sns").publish(TopicArn=stack.env["WANFLOW_TOPIC_ARN"], Message=json.dumps({"marker": marker}))
    wait_until(lambda: any(n["message"].get("marker") == marker for n in stack.notifications()), what="marker")


def assert_one_notification_each(stack: MotoStack, expected: dict[str, str]) -> None:
    """Each job (id -> event type) was announced exactly once, with a valid event."""
    settle(stack)  # a second publication, if there were one, would have arrived by now
    for job_id, event_type in expected.items():
        found = notifications_for(stack, job_id)
        assert len(found) == 1, (job_id, found)
        jsonschema.validate(found[0]["message"], EVENT_SCHEMA)
        assert found[0]["message"]["type"] == found[0]["attributes"]["type"] == event_type, found[0]


def assert_video(job: dict[str, Any]) -> None:
    """The job's stored video is the one its record describes, and decodes as a video."""
    output = job["output"]
    assert output and output["content_type"] == "video/mp4", job
    stored = httpx.get(output["url"]).content
    assert len(stored) == output["bytes"] and hashlib.sha256(stored).hexdigest() == output["sha256"]
    with av.open(io.BytesIO(stored)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) != (0, 0)
        assert sum(1 for _ in container.decode(video=0)) > 0


def most_in_flight(tasks: list[dict[str, Any]]) -> int:
    """The most tasks that were at DashScope at one moment: between their create and their end (emulator times)."""
    events = []
    for task in tasks:
        assert task["end_time"] is not None, task
        events += [(task["submit_time"], 1), (task["end_time"], -1)]
    events.sort(key=lambda event: (event[0], event[1]))  # at the same instant an end frees before a start takes
    peak = current = 0
    for _, change in events:
        current += change
        peak = max(peak, current)
    return peak


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@contextmanager
def api_dies_before_dispatching(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Jobs submitted meanwhile are stored QUEUED, but no dispatcher runs for them (the API died right after)."""
    with monkeypatch.context() as patch:
        patch.setattr(admission, "admit", lambda deps, job: None)
        yield


# ------------------------------------------------------------------------------------------------------ fixtures


def quiesce(stack: MotoStack) -> None:
    """Wait until no handler runs in the background: every job's stashed image is an S3 event the intake function
    handles a moment later, on the event source's own threads.

    Settings are cached per process (`functools.cache`): a handler that read the environment before a change and
    stores its settings after the reset would keep the old ones in effect.
    """
    sqs = stack.boto3_client("sqs")
    queue_url = stack.resources["IntakeQueue"]  # Ref of a queue is its URL
    source = stack.sqs_event_source("IntakeFunction")

    def idle() -> bool:
        counts = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return set(counts.values()) == {"0"} and source.stats.in_flight == 0

    wait_until(idle, what="the intake function to be idle")


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch, stack: MotoStack) -> Iterator[Callable[..., None]]:
    """Change the stack's settings (environment) for one test; the handlers re-read them."""

    def apply(**environment: str) -> None:
        quiesce(stack)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        reset_application()
        assert get_settings() == Settings.from_environment(os.environ)

    yield apply
    quiesce(stack)
    monkeypatch.undo()
    reset_application()


@pytest.fixture
def jobs(
    configure: Callable[..., None], api: httpx.Client, stack: MotoStack, emulator: Emulator, slots: DynamoRunningSlots
) -> Iterator[Jobs]:
    """A clean emulator; afterwards, every job of the test ends and no slot stays held (before `configure` undoes
    the test's settings, so that nothing is reset under a running execution)."""
    httpx.post(f"{emulator.root_url}/_emulator/reset").raise_for_status()
    assert slots.holders(MODEL) == set(), "a previous test left a running slot held"
    tracker = Jobs(api, stack)
    yield tracker
    clear_faults(emulator)
    emulator.set_timings(**TIMINGS)

    def drained() -> bool:
        unfinished = [job_id for job_id in tracker.ids if tracker.get(job_id)["status"] not in FINAL]
        return not unfinished and not slots.holders(MODEL)

    try:
        wait_until(drained, what="every job of the test ended and its slot freed")
    except AssertionError:
        stack.run_sweeper()  # so that the next tests start clean; this test's teardown still fails
        wait_until(drained, what="the sweeper to clean up", timeout=TIMEOUT)
        raise


# --------------------------------------------------------------------------------------------------------- tests


def test_a_burst_beyond_the_slots_succeeds_without_a_429_and_never_exceeds_the_slots(
    jobs: Jobs, configure: Callable[..., None], emulator: Emulator, stack: MotoStack, slots: DynamoRunningSlots
) -> None:
    # 3 slots: the first three creates come at once, more than DashScope's 2 creates/s allows, so only the pacing
    # keeps them from a 429 (the emulator runs 2 of them at a time; the third waits PENDING there).
    running_slots = 3
    configure(WANFLOW_MODEL_SLOTS=f"{MODEL}={running_slots}")
    # One request after another. Twelve at once starve this one-process stack's two cores long enough to delay a
    # create by more than a third of a second after its turn (measured: 0.36 s), more than the creates' pacing
    # absorbs (wanflow.usecases.pacing); in AWS each Lambda has a CPU of its own.
    ids = [jobs.submit() for _ in range(12)]

    held: list[int] = []

    def all_ended() -> bool:
        held.append(len(slots.holders(MODEL)))
        seen = {n["message"].get("job", {}).get("job_id") for n in stack.notifications()}
        return set(ids) <= seen

    wait_until(all_ended, what="the burst to end", timeout=2 * TIMEOUT)
    assert max(held) <= running_slots, held
    ended = jobs.wait_ended(ids)

    assert {job["status"] for job in ended.values()} == {"SUCCEEDED"}, ended
    for job in ended.values():
        assert_video(job)
    tasks = emulator_tasks(emulator)
    assert len(tasks) == len(ids)  # exactly one DashScope task per job
    assert {job["provider"]["task_id"] for job in ended.values()} == {task["task_id"] for task in tasks}
    assert 2 <= most_in_flight(tasks) <= running_slots, tasks

    log = request_log(emulator, times=True)
    creates = log["create"]
    arrivals = [round(moment - creates["first"], 3) for moment in creates.pop("times")]
    assert set(log) == {"create", "query"}, log
    assert creates["requests"] == len(ids) and creates["statuses"] == {"200": len(ids)}, (creates, arrivals)
    assert creates["throttled"] == 0 and creates["peak_per_second"] <= 2, (creates, arrivals)
    log["query"].pop("times")
    assert log["query"]["throttled"] == 0 and set(log["query"]["statuses"]) == {"200"}, log
    assert log["query"]["peak_per_second"] <= 20, log
    assert_one_notification_each(stack, dict.fromkeys(ids, "job.succeeded"))


def test_cancel_while_queued_is_immediate_calls_no_dashscope_and_the_queue_moves_on(
    jobs: Jobs, emulator: Emulator, stack: MotoStack, slots: DynamoRunningSlots
) -> None:
    emulator.set_timings(pending_seconds=HOLD)
    held = [jobs.submit() for _ in range(SLOTS)]
    for job_id in held:
        jobs.wait_task_pending(job_id)
    queued = jobs.submit()
    assert jobs.get(queued)["queue"]["position"] == 1

    response = jobs.cancel(queued)
    assert response.status_code == 200, response.text
    canceled = response.json()
    assert canceled["status"] == "CANCELED" and canceled["finished_at"], canceled
    assert canceled["submitted_at"] is None and "task_id" not in canceled["provider"], canceled
    assert canceled["queue"] is None
    # Nothing was asked of DashScope for it: no create, no cancel; it never held a slot.
    assert len(emulator_tasks(emulator)) == SLOTS
    log = request_log(emulator)
    assert "cancel" not in log and log["create"]["requests"] == SLOTS, log
    assert slots.holders(MODEL) == set(held)
    assert jobs.cancel(queued).status_code == 409
    assert_one_notification_each(stack, {queued: "job.canceled"})

    # When a slot frees, the queue moves on: the next queued job gets it, the canceled one never does.
    following = jobs.submit()
    assert jobs.get(following)["queue"]["position"] == 1
    assert jobs.cancel(held[0]).status_code == 200  # its task is PENDING at DashScope: canceled there
    started = jobs.wait_started(following)
    assert {task["task_id"] for task in emulator_tasks(emulator)} == {
        jobs.get(held[0])["provider"]["task_id"],
        jobs.get(held[1])["provider"]["task_id"],
        started["provider"]["task_id"],
    }
    assert jobs.get(queued)["status"] == "CANCELED" and "task_id" not in jobs.get(queued)["provider"]


def test_a_slot_freed_by_failure_cancel_or_expiry_starts_the_next_job_without_the_sweeper(
    jobs: Jobs, configure: Callable[..., None], emulator: Emulator, stack: MotoStack, clock: Clock
) -> None:
    # One slot: each release has exactly one job waiting for it. No retries: the failure below ends its job.
    configure(WANFLOW_MODEL_SLOTS=f"{MODEL}=1", WANFLOW_PROVIDER_RETRIES="0")
    emulator.set_timings(pending_seconds=HOLD)

    # Failure: the task of `failing` fails at DashScope; `after_failure` waits for its slot.
    faults(emulator, {"on": "task", "fail_code": "InternalError"})
    failing = jobs.submit()
    jobs.wait_task_pending(failing)
    after_failure = jobs.submit()
    assert jobs.get(after_failure)["queue"]["position"] == 1
    clock.advance(HOLD + 1)  # the held task leaves PENDING, runs, and fails
    assert jobs.wait(failing, lambda job: job["status"] == "FAILED", "the failure")["error"]["code"] == "InternalError"
    jobs.wait_task_pending(after_failure)

    # Cancel of a PENDING task: `after_cancel` gets the slot.
    after_cancel = jobs.submit()
    assert jobs.get(after_cancel)["queue"]["position"] == 1
    response = jobs.cancel(after_failure)
    assert response.status_code == 200 and response.json()["provider"]["task_status"] == "CANCELED", response.text
    jobs.wait_task_pending(after_cancel)

    # Expiry: DashScope forgets the task (two days later); `after_expiry` gets the slot.
    after_expiry = jobs.submit()
    assert jobs.get(after_expiry)["queue"]["position"] == 1
    clock.advance(2 * 86_400)
    expired = jobs.wait(after_cancel, lambda job: job["status"] == "FAILED", "the expiry")
    assert expired["error"]["code"] == "TaskExpired", expired
    jobs.wait_task_pending(after_expiry)

    assert_one_notification_each(
        stack, {failing: "job.failed", after_failure: "job.canceled", after_cancel: "job.failed"}
    )
    log = request_log(emulator)
    assert log["create"]["requests"] == 4 and "list" not in log, log  # one task per job, nothing reconciled


def test_the_sweeper_completes_a_lost_grant_and_frees_leaked_slots(
    jobs: Jobs, emulator: Emulator, stack: MotoStack, slots: DynamoRunningSlots, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lost grant: a dispatcher claimed a slot for a queued job and died before recording the grant.
    with api_dies_before_dispatching(monkeypatch):
        lost = jobs.submit()
    assert slots.claim(MODEL, lost, SLOTS)
    assert jobs.get(lost)["status"] == "QUEUED" and slots.holders(MODEL) == {lost}
    repairs = stack.run_sweeper().value()
    assert repairs.get("grant_repaired") == 1, repairs
    assert not repairs.get("slot_released") and not repairs.get("granted") and not repairs.get("error"), repairs
    job = jobs.wait_ended([lost])[lost]
    assert job["status"] == "SUCCEEDED", job
    assert_video(job)
    assert [task["task_id"] for task in emulator_tasks(emulator)] == [job["provider"]["task_id"]]

    # Leaked slots: held by a job that does not exist and by one that ended; the queue stalls behind them.
    assert slots.claim(MODEL, GHOST_JOB, SLOTS) and slots.claim(MODEL, lost, SLOTS)
    stalled = jobs.submit()  # its dispatch ran (and found no free slot) before the API answered
    view = jobs.get(stalled)
    assert view["status"] == "QUEUED" and view["queue"]["position"] == 1, view
    assert slots.holders(MODEL) == {GHOST_JOB, lost}
    repairs = stack.run_sweeper().value()
    assert repairs.get("slot_released") == 2 and repairs.get("granted") == 1, repairs
    assert not repairs.get("error"), repairs
    job = jobs.wait_ended([stalled])[stalled]
    assert job["status"] == "SUCCEEDED", job
    assert_video(job)
    assert_one_notification_each(stack, {lost: "job.succeeded", stalled: "job.succeeded"})


def test_a_high_priority_job_gets_the_next_slot_before_older_normal_ones(jobs: Jobs, emulator: Emulator) -> None:
    emulator.set_timings(pending_seconds=HOLD)
    held = [jobs.submit() for _ in range(SLOTS)]
    for job_id in held:
        jobs.wait_task_pending(job_id)
    first, second = jobs.submit(), jobs.submit()
    urgent = jobs.submit(priority="high")
    assert [jobs.get(job_id)["queue"]["position"] for job_id in (urgent, first, second)] == [1, 2, 3]
    assert jobs.get(urgent)["priority"] == "high"

    assert jobs.cancel(held[0]).status_code == 200  # one slot frees: the high-priority job takes it
    jobs.wait_task_pending(urgent)
    assert [jobs.get(job_id)["status"] for job_id in (first, second)] == ["QUEUED", "QUEUED"]
    assert jobs.get(first)["queue"]["position"] == 1

    assert jobs.cancel(held[1]).status_code == 200  # the next slot: the older normal job
    jobs.wait_task_pending(first)
    assert jobs.get(second)["status"] == "QUEUED"

    emulator.set_timings(pending_seconds=TIMINGS["pending_seconds"])  # let everything run
    ended = jobs.wait_ended([urgent, first, second])
    assert {job["status"] for job in ended.values()} == {"SUCCEEDED"}, ended
    submitted = [parse_time(ended[job_id]["submitted_at"]) for job_id in (urgent, first, second)]
    assert submitted == sorted(submitted) and len(set(submitted)) == 3, submitted


def test_queued_jobs_show_their_position_and_an_eta_from_observed_runs(
    jobs: Jobs, emulator: Emulator, stack: MotoStack, slots: DynamoRunningSlots, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before any run of the model is observed, the ETA assumes 180 s runs.
    table = stack.boto3_client("dynamodb")
    table.update_item(
        TableName=stack.resources["AdmissionTable"],
        Key={"pk": {"S": f"slots#{MODEL}"}},
        UpdateExpression="REMOVE runs, run_seconds",
    )
    assert slots.typical_run_seconds(MODEL) is None
    with api_dies_before_dispatching(monkeypatch):  # queued with both slots free: the "can start now" case
        queued = [jobs.submit() for _ in range(5)]
    places = [jobs.get(job_id)["queue"] for job_id in queued]
    assert [place["position"] for place in places] == [1, 2, 3, 4, 5]
    assert [place["ahead"] for place in places] == [0, 1, 2, 3, 4]
    # free = 2: ahead 0 and 1 start now; then rounds of 2: ((ahead - 2) // 2 + 1) * 180
    assert [place["eta_seconds"] for place in places] == [0, 0, 180, 180, 360]
    assert stack.run_sweeper().value().get("granted") == SLOTS
    ended = jobs.wait_ended(queued)
    assert {job["status"] for job in ended.values()} == {"SUCCEEDED"}, ended

    # After runs, the ETA follows the observed run time (from the create to the poll that saw the task end).
    typical = slots.typical_run_seconds(MODEL)
    assert typical is not None
    tasks = {task["task_id"]: task for task in emulator_tasks(emulator)}
    at_dashscope = [tasks[job["provider"]["task_id"]] for job in ended.values()]
    shortest = min(task["end_time"] - task["submit_time"] for task in at_dashscope)
    longest = max(
        (parse_time(job["finished_at"]) - parse_time(job["submitted_at"])).total_seconds() for job in ended.values()
    )
    # Each observed run lies between the task's time at DashScope and the job's submitted-to-finished time (give or
    # take the moments between the create's arrival and `submitted_at`).
    assert shortest - 0.25 <= typical <= longest, (shortest, typical, longest)

    emulator.set_timings(pending_seconds=HOLD)
    held = [jobs.submit() for _ in range(SLOTS)]
    for job_id in held:
        jobs.wait_task_pending(job_id)
    waiting = [jobs.submit() for _ in range(3)]
    typical = slots.typical_run_seconds(MODEL)  # unchanged while nothing ends, read again all the same
    assert typical is not None
    places = [jobs.get(job_id)["queue"] for job_id in waiting]
    assert [(place["position"], place["ahead"]) for place in places] == [(1, 0), (2, 1), (3, 2)]
    assert [place["eta_seconds"] for place in places] == [
        math.ceil(typical),
        math.ceil(typical),
        math.ceil(2 * typical),
    ], (places, typical)
    assert places[2]["eta_seconds"] < DEFAULT_RUN_SECONDS


def test_a_throttling_storm_on_every_query_is_waited_out_and_every_job_succeeds(
    jobs: Jobs, configure: Callable[..., None], emulator: Emulator, stack: MotoStack
) -> None:
    # Time-scaled: what a storm does to a job is the number of refused queries in a row, not the minutes. With the
    # deployed waits (15 s doubling to a 300 s cap) a 10-minute storm refuses about six queries per running job;
    # here refused queries are asked again after at most 1 s, and the storm lasts until each has had six.
    configure(WANFLOW_THROTTLED_WAIT_CAP_SECONDS="1")
    faults(emulator, {"on": "query", "status": 429, "times": -1})
    ids = [jobs.submit() for _ in range(4)]

    def refused_or_ended() -> bool:
        refused = int(request_log(emulator).get("query", {}).get("throttled", 0))
        return refused >= 6 * SLOTS or bool(notifications_for_any(stack, ids))

    wait_until(refused_or_ended, what="queries refused during the storm")
    # The storm holds the slots (no poll sees the tasks end), so the rest wait in the queue; nobody fails.
    views = [jobs.get(job_id) for job_id in ids]
    assert not [view for view in views if view["status"] in FINAL], views
    assert [view["status"] for view in views[SLOTS:]] == ["QUEUED"] * (len(ids) - SLOTS), views
    clear_faults(emulator)

    ended = jobs.wait_ended(ids)
    assert {job["status"] for job in ended.values()} == {"SUCCEEDED"}, ended
    for job in ended.values():
        assert_video(job)
    assert len(emulator_tasks(emulator)) == len(ids)
    assert_one_notification_each(stack, dict.fromkeys(ids, "job.succeeded"))


def test_a_queue_longer_than_the_task_validity_loses_no_job(jobs: Jobs, emulator: Emulator) -> None:
    # Tasks (and video URLs) valid for 10 s; 7 rounds of 3-4 s on 2 slots. Created as fast as the submit rate allows
    # (1.5/s), the last tasks would wait PENDING at DashScope (it runs 2 at a time too) for longer than their validity.
    validity = 10.0
    emulator.set_timings(task_ttl_seconds=validity, url_ttl_seconds=validity, running_seconds=3.0)
    ids = [jobs.submit() for _ in range(14)]
    ended = jobs.wait_ended(ids, timeout=3 * TIMEOUT)
    assert {job["status"] for job in ended.values()} == {"SUCCEEDED"}, {
        job_id: (job["status"], job["error"]) for job_id, job in ended.items()
    }
    # The queue did outlast a task's validity: had every task been created at once, the last ones would be gone.
    first_queued = min(parse_time(job["queued_at"]) for job in ended.values())
    last_submitted = max(parse_time(job["submitted_at"]) for job in ended.values())
    assert (last_submitted - first_queued).total_seconds() > validity
    log = request_log(emulator)
    assert log["create"]["requests"] == len(ids) and log["create"]["throttled"] == 0, log


def test_log_lines_of_concurrent_executions_carry_their_own_function_and_job(
    jobs: Jobs, emulator: Emulator, stack: MotoStack
) -> None:
    stream = io.StringIO()
    capture = logging.StreamHandler(stream)
    capture.setFormatter(wanflow_logger.registered_formatter)
    wanflow_logger.addHandler(capture)
    try:
        ids = [jobs.submit() for _ in range(6)]
        ended = jobs.wait_ended(ids)
    finally:
        wanflow_logger._logger.removeHandler(capture)
    assert {job["status"] for job in ended.values()} == {"SUCCEEDED"}, ended
    job_of_task = {job["provider"]["task_id"]: job_id for job_id, job in ended.items()}

    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    steps = ("-create-task", "-status", "-finalize")
    pipeline = [line for line in lines if str(line.get("function_name", "")).endswith(steps)]
    assert pipeline, lines
    invocations: dict[str, set[tuple[str, str]]] = {}
    for line in pipeline:
        assert line.get("correlation_id") in ids, line
        invocations.setdefault(line["function_request_id"], set()).add((line["function_name"], line["correlation_id"]))
        if "job_id" in line:
            assert line["job_id"] == line["correlation_id"], line
    # Every line of one invocation names one function and one job.
    assert all(len(keys) == 1 for keys in invocations.values()), invocations

    polled = [line for line in lines if line["message"] == "polled"]
    assert {line["correlation_id"] for line in polled} == set(ids), polled
    assert all(line["function_name"].endswith("-status") for line in polled), polled
    created = [
        line for line in lines if line["message"].startswith("DashScope task ") and " created " in line["message"]
    ]
    assert len(created) == len(ids), created
    for line in created:
        task_id = line["message"].split()[2]
        assert line["function_name"].endswith("-create-task"), line
        assert line["correlation_id"] == job_of_task[task_id], line  # the job whose execution created that task
    # No line of another invocation (e.g. the API's) claims a burst job without saying which function it is.
    assert all("function_name" in line for line in lines if line.get("correlation_id") in ids), lines
