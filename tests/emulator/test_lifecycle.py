"""Task lifecycle: timings, the running-slot limit, cancel, list, task expiry and video URL expiry.

Tests that depend on time run the emulator on a ManualClock: time moves only when the test advances it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from emulator_support import (
    AUTH,
    ManualClock,
    StaticFiles,
    body,
    create_task,
    image_bytes,
    query,
    status_of,
    wait_for_status,
    wait_until,
)

from wanflow_tools.emulator import Emulator

CHINA = timezone(timedelta(hours=8))


def dashscope_time(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC).astimezone(CHINA)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def list_filter_time(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).astimezone(CHINA).strftime("%Y%m%d%H%M%S")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def timed(start_emulator: Callable[..., Emulator], clock: ManualClock) -> Emulator:
    return start_emulator(clock=clock, pending_seconds=10, running_seconds=20)


@pytest.fixture
def http(timed: Emulator) -> httpx.Client:
    with httpx.Client(base_url=timed.base_url, timeout=10.0) as client:
        yield client


@pytest.mark.slow
def test_pending_then_running_then_succeeded_on_schedule(http: httpx.Client, clock: ManualClock):
    submitted = clock()
    task_id = create_task(http)
    clock.advance(9.9)
    assert status_of(http, task_id) == "PENDING"
    clock.advance(0.1)
    running = query(http, task_id)["output"]
    assert running["task_status"] == "RUNNING"
    assert running["submit_time"] == dashscope_time(submitted)
    assert running["scheduled_time"] == dashscope_time(submitted + 10)
    assert "end_time" not in running

    clock.advance(19.9)
    assert status_of(http, task_id) == "RUNNING"
    clock.advance(0.1)
    done = wait_for_status(http, task_id, "SUCCEEDED")["output"]
    assert done["end_time"] == dashscope_time(submitted + 30)


@pytest.mark.slow
def test_a_clock_jump_keeps_a_consistent_history(http: httpx.Client, clock: ManualClock):
    submitted = clock()
    task_id = create_task(http)
    clock.advance(1000)  # far past pending (10 s) and running (20 s) in one step
    output = wait_for_status(http, task_id, "SUCCEEDED")["output"]
    assert output["scheduled_time"] == dashscope_time(submitted + 10)  # when it was due, not when it was noticed
    assert output["end_time"] == dashscope_time(submitted + 1000)  # the video only started rendering at +1000


@pytest.mark.slow
def test_zero_timings_succeed_as_soon_as_the_video_exists(start_emulator: Callable[..., Emulator]):
    emulator = start_emulator(pending_seconds=0, running_seconds=0)
    with httpx.Client(base_url=emulator.base_url) as client:
        task_id = create_task(client)
        wait_for_status(client, task_id, "SUCCEEDED", timeout=20)
    video = emulator.store.get(task_id, emulator.config.clock()).render
    assert video is not None and os.path.exists(video.output_path)


@pytest.mark.slow
def test_task_stays_running_until_its_video_is_rendered(
    start_emulator: Callable[..., Emulator], clock: ManualClock, static_files: StaticFiles
):
    emulator = start_emulator(clock=clock, pending_seconds=0, running_seconds=1)
    image_served = threading.Event()
    payload = body()
    payload["input"]["img_url"] = static_files.add("/slow.png", image_bytes(), "image/png", gate=image_served)
    with httpx.Client(base_url=emulator.base_url) as client:
        task_id = create_task(client, payload)
        clock.advance(3600)  # far past running_seconds, but the renderer is still waiting for the image
        assert status_of(client, task_id) == "RUNNING"
        image_served.set()
        wait_for_status(client, task_id, "SUCCEEDED")
    render = emulator.store.get(task_id, clock()).render
    assert render is not None and not render.image_is_placeholder


@pytest.mark.slow
def test_running_slots_per_model_keep_extra_tasks_pending(start_emulator: Callable[..., Emulator], clock: ManualClock):
    emulator = start_emulator(clock=clock, pending_seconds=0, running_seconds=100)
    with httpx.Client(base_url=emulator.base_url) as client:
        two_slot_model = [create_task(client, body(model="wan2.2-i2v-flash")) for _ in range(3)]
        other_model = create_task(client)
        assert [status_of(client, task_id) for task_id in two_slot_model] == ["RUNNING", "RUNNING", "PENDING"]
        assert status_of(client, other_model) == "RUNNING"  # slots are counted per model

        clock.advance(100)
        for task_id in two_slot_model[:2]:
            wait_for_status(client, task_id, "SUCCEEDED")
        assert status_of(client, two_slot_model[2]) == "RUNNING"  # oldest waiting task got the free slot
        assert emulator.store.count() == 4


@pytest.mark.slow
def test_raised_running_quota_runs_more_tasks_of_that_model(
    start_emulator: Callable[..., Emulator], clock: ManualClock
):
    emulator = start_emulator(clock=clock, pending_seconds=0, running_seconds=100, max_running={"wan2.2-i2v-flash": 3})
    with httpx.Client(base_url=emulator.base_url) as client:
        raised = [create_task(client, body(model="wan2.2-i2v-flash")) for _ in range(4)]
        assert [status_of(client, task_id) for task_id in raised] == ["RUNNING", "RUNNING", "RUNNING", "PENDING"]
        default = [create_task(client, body(model="wanx2.1-i2v-turbo")) for _ in range(3)]
        assert [status_of(client, task_id) for task_id in default] == ["RUNNING", "RUNNING", "PENDING"]


def test_cancel_only_while_pending(http: httpx.Client, clock: ManualClock):
    task_id = create_task(http)
    reply = http.post(f"/tasks/{task_id}/cancel", headers=AUTH)
    assert reply.status_code == 200
    assert set(reply.json()) == {"request_id"}
    canceled = query(http, task_id)["output"]
    assert canceled["task_status"] == "CANCELED"
    assert canceled["end_time"] == dashscope_time(clock())

    again = http.post(f"/tasks/{task_id}/cancel", headers=AUTH)
    assert again.status_code == 400
    assert again.json()["code"] == "UnsupportedOperation"

    running_id = create_task(http)
    clock.advance(10)
    refused = http.post(f"/tasks/{running_id}/cancel", headers=AUTH)
    assert (refused.status_code, refused.json()["code"]) == (400, "UnsupportedOperation")
    assert "PENDING" in refused.json()["message"]
    assert status_of(http, running_id) == "RUNNING"

    missing = http.post("/tasks/no-such-task/cancel", headers=AUTH)
    assert (missing.status_code, missing.json()["code"]) == (400, "UnsupportedOperation")


def test_canceled_task_never_runs(http: httpx.Client, clock: ManualClock, timed: Emulator):
    task_id = create_task(http)
    http.post(f"/tasks/{task_id}/cancel", headers=AUTH)
    clock.advance(1000)
    assert status_of(http, task_id) == "CANCELED"
    assert timed.store.get(task_id, clock()).render is None


@pytest.mark.slow
def test_expired_task_answers_unknown_and_is_forgotten(start_emulator: Callable[..., Emulator], clock: ManualClock):
    emulator = start_emulator(clock=clock, pending_seconds=0, running_seconds=0, task_ttl_seconds=3600)
    with httpx.Client(base_url=emulator.base_url) as client:
        task_id = create_task(client)
        wait_for_status(client, task_id, "SUCCEEDED")
        video_path = emulator.store.get(task_id, clock()).render.output_path

        clock.advance(3599)
        assert status_of(client, task_id) == "SUCCEEDED"
        clock.advance(1)
        assert query(client, task_id)["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}
        assert client.get("/tasks", headers=AUTH).json()["total"] == 0
        wait_until(lambda: emulator.store.count() == 0, what="the expired task to be purged")
        assert not os.path.exists(video_path)


@pytest.mark.slow
def test_video_url_serves_until_it_expires(start_emulator: Callable[..., Emulator], clock: ManualClock):
    emulator = start_emulator(clock=clock, pending_seconds=0, running_seconds=0, url_ttl_seconds=60)
    with httpx.Client(base_url=emulator.base_url) as client:
        task_id = create_task(client)
        video_url = wait_for_status(client, task_id, "SUCCEEDED")["output"]["video_url"]

        video = httpx.get(video_url)
        assert video.status_code == 200
        assert video.headers["content-type"] == "video/mp4"
        assert int(video.headers["content-length"]) == len(video.content) > 1000
        assert video.content[4:8] == b"ftyp"

        clock.advance(61)
        expired = httpx.get(video_url)
        assert expired.status_code == 403
        assert expired.headers["content-type"] == "application/xml"
        assert "<Code>AccessDenied</Code>" in expired.text
        assert "<Message>Request has expired.</Message>" in expired.text
        assert status_of(client, task_id) == "SUCCEEDED"  # the task outlives its URL's signature


@pytest.mark.slow
def test_video_url_signature_and_existence_are_checked(client: httpx.Client, emulator: Emulator):
    task_id = create_task(client)
    video_url = wait_for_status(client, task_id, "SUCCEEDED")["output"]["video_url"]
    bare = video_url.split("?", 1)[0]

    assert httpx.get(bare).status_code == 403
    tampered = httpx.get(video_url.replace("Expires=", "Expires=9"))
    assert tampered.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in tampered.text
    missing = httpx.get(f"{emulator.root_url}/results/no-such-task.mp4?Expires=1&Signature=x")
    assert missing.status_code == 404
    assert "<Code>NoSuchKey</Code>" in missing.text


@pytest.mark.slow
def test_download_supports_head_and_ranges(client: httpx.Client):
    task_id = create_task(client)
    video_url = wait_for_status(client, task_id, "SUCCEEDED")["output"]["video_url"]
    whole = httpx.get(video_url).content

    head = httpx.head(video_url)
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == len(whole)
    assert head.content == b""

    tail = httpx.get(video_url, headers={"Range": "bytes=1000-"})
    assert tail.status_code == 206
    assert tail.headers["content-range"] == f"bytes 1000-{len(whole) - 1}/{len(whole)}"
    assert tail.content == whole[1000:]
    assert httpx.get(video_url, headers={"Range": "bytes=-10"}).content == whole[-10:]


def test_list_filters_and_pages(start_emulator: Callable[..., Emulator], clock: ManualClock):
    emulator = start_emulator(clock=clock, pending_seconds=1000, running_seconds=100)
    with httpx.Client(base_url=emulator.base_url) as client:
        first_time = clock()
        first = create_task(client)
        clock.advance(60)
        second = create_task(client, body(model="wan2.2-i2v-flash"))
        clock.advance(60)
        third = create_task(client)
        client.post(f"/tasks/{second}/cancel", headers=AUTH)

        def listing(**params: object) -> dict:
            reply = client.get("/tasks", params=params, headers=AUTH)
            assert reply.status_code == 200, reply.text
            return reply.json()

        everything = listing()
        assert [entry["task_id"] for entry in everything["data"]] == [third, second, first]  # newest first
        assert (everything["total"], everything["total_page"], everything["page_no"], everything["page_size"]) == (
            3,
            1,
            1,
            10,
        )
        entry = everything["data"][2]
        assert entry["model_name"] == "wan2.6-i2v-flash"
        assert entry["status"] == "PENDING"
        assert entry["gmt_create"] == round(first_time * 1000)
        assert entry["start_time"] is None and entry["end_time"] is None
        assert entry["request_id"]

        page_two = listing(page_no=2, page_size=2)
        assert [entry["task_id"] for entry in page_two["data"]] == [first]
        assert (page_two["total"], page_two["total_page"]) == (3, 2)

        assert [entry["task_id"] for entry in listing(model_name="wan2.2-i2v-flash")["data"]] == [second]
        assert [entry["task_id"] for entry in listing(status="CANCELED")["data"]] == [second]
        assert listing(status="SUCCEEDED")["total"] == 0

        window = listing(start_time=list_filter_time(first_time + 30), end_time=list_filter_time(first_time + 90))
        assert [entry["task_id"] for entry in window["data"]] == [second]

        for bad in ({"page_size": 0}, {"page_size": 101}, {"page_no": "x"}, {"start_time": "2026-01-01"}):
            refused = client.get("/tasks", params=bad, headers=AUTH)
            assert (refused.status_code, refused.json()["code"]) == (400, "InvalidParameter"), bad
