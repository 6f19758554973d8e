"""Per-job webhooks on the fakes: the request's checks, which webhook an event goes to, signing, retries with
backoff, giving up after the last attempt, job.started exactly once, and redelivery."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from wanflow.dashscope import TaskStatus
from wanflow.errors import Conflict, InvalidRequest, NotFound
from wanflow.events import PollState
from wanflow.jobs import Job, JobStatus
from wanflow.ports import WebhookResponse
from wanflow.usecases import ending
from wanflow.usecases.poll import check_status
from wanflow.usecases.submit import submit_api_job
from wanflow.usecases.views import job_view
from wanflow.usecases.webhooks import Outcome, deliver, last_event_type, redeliver, webhook_target
from wanflow.webhooks import (
    DEFAULT_RETRY_SECONDS,
    MAX_DELIVERIES_KEPT,
    MAX_RETRY_DELAY_SECONDS,
    address_refusal,
    event_id,
    redacted_url,
    retry_delay,
)
from wanflow_tools.fakes import FAKE_WEBHOOK_SECRET, FakeWorld, caller, fake_settings, sample_job_body

HOOK = "https://hooks.example.com/wanflow?token=abc"


def submit(world: FakeWorld, webhook: dict[str, Any] | None = None) -> Job:
    body = sample_job_body(**({"webhook": webhook} if webhook is not None else {}))
    job, created = submit_api_job(world.deps, body, idempotency_key=None, caller=caller())
    assert created
    return world.run_create_step(job.job_id)


def ending_body(world: FakeWorld, job: Job) -> str:
    """The wanflow.job.v1 event SNS carried for the job's ending (the webhook queue's message body)."""
    (event,) = world.notifier.for_job(job.job_id)
    return json.dumps(event)


def fail(world: FakeWorld, job: Job) -> str:
    ending.end_failed(world.deps, job.job_id, "TaskFailed", "it broke")
    return ending_body(world, job)


def stored(world: FakeWorld, job: Job) -> Job:
    current = world.jobs.get(job.job_id)
    assert current is not None
    return current


# ------------------------------------------------------------------------------------------- request checks


@pytest.mark.parametrize(
    ("webhook", "field", "message"),
    [
        ({"url": "http://hooks.example.com/x"}, "webhook.url", "https://"),
        ({"url": "ftp://hooks.example.com/x"}, "webhook.url", "https://"),
        ({"url": "https://user:pw@hooks.example.com/x"}, "webhook.url", "user name or password"),
        ({"url": "https://"}, "webhook.url", "no host"),
        ({"url": "https://hooks.example.com:99999/"}, "webhook.url", "not a valid URL"),
        ({"url": "https://10.1.2.3/x"}, "webhook.url", "a private address"),
        ({"url": "https://127.0.0.1:8443/x"}, "webhook.url", "a loopback address"),
        ({"url": "https://localhost/x"}, "webhook.url", "loopback"),
        ({"url": "https://169.254.169.254/latest"}, "webhook.url", "metadata"),
        ({"url": "https://[fd00:ec2::254]/"}, "webhook.url", "metadata"),
        ({"url": "https://[::ffff:192.168.1.1]/"}, "webhook.url", "a private address"),
        ({"url": "https://100.64.0.1/"}, "webhook.url", "CGNAT"),
        ({"url": "https://h.example/" + "a" * 2100}, "webhook.url", "at most 2048"),
        ({"url": HOOK, "events": ["job.succeeded", "job.done"]}, "webhook.events[1]", "must be one of"),
        ({"url": HOOK, "events": [7]}, "webhook.events[0]", "must be one of"),
        ({"url": HOOK, "events": ["job.failed", "job.failed"]}, "webhook.events[1]", "twice"),
        ({"url": HOOK, "events": []}, "webhook.events", "empty"),
        ({"url": HOOK, "secret": "x"}, "webhook.secret", "not a known field"),
        ({"events": ["job.failed"]}, "webhook.url", "required"),
        ({"url": 5}, "webhook.url", "string"),
    ],
)
def test_a_bad_webhook_is_a_400_naming_its_field(world: FakeWorld, webhook: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        submit_api_job(world.deps, sample_job_body(webhook=webhook), idempotency_key=None, caller=caller())
    assert [(error.field, message in error.message) for error in refused.value.errors] == [(field, True)]
    assert world.jobs.all() == [] and world.dashscope.creates == 0


def test_a_good_webhook_is_stored_with_the_three_endings_by_default(world: FakeWorld) -> None:
    job = submit(world, {"url": HOOK})
    assert job.webhook is not None
    assert job.webhook.events == ["job.succeeded", "job.failed", "job.canceled"]
    view = job_view(world.deps, job)["webhook"]
    assert view == {"url": HOOK, "events": job.webhook.events, "state": "pending", "deliveries": []}
    assert submit(world).webhook is None


def test_loopback_http_targets_only_with_the_local_mode_setting() -> None:
    body = sample_job_body(webhook={"url": "http://127.0.0.1:9000/hook"})
    local = FakeWorld(settings=fake_settings(webhook_allow_loopback=True))
    job, _ = submit_api_job(local.deps, body, idempotency_key=None, caller=caller())
    assert job.webhook is not None and job.webhook.url == "http://127.0.0.1:9000/hook"
    with pytest.raises(InvalidRequest, match=r"webhook\.url"):
        submit_api_job(FakeWorld().deps, body, idempotency_key=None, caller=caller())
    # Even in local mode, plain http:// goes to loopback only.
    remote = sample_job_body(webhook={"url": "http://hooks.example.com/hook"})
    with pytest.raises(InvalidRequest) as refused:
        submit_api_job(local.deps, remote, idempotency_key=None, caller=caller())
    assert refused.value.errors[0].field == "webhook.url"


@pytest.mark.parametrize(
    ("address", "loopback_allowed", "refusal"),
    [
        ("93.184.216.34", False, None),
        ("2606:4700::1111", False, None),
        ("10.0.0.1", False, "private"),
        ("172.16.5.4", False, "private"),
        ("192.168.0.1", False, "private"),
        ("fc00::1", False, "private"),
        ("127.0.0.1", False, "loopback"),
        ("127.0.0.1", True, None),
        ("::1", False, "loopback"),
        ("::1", True, None),
        ("169.254.169.254", True, "metadata"),
        ("fd00:ec2::254", True, "metadata"),
        ("169.254.10.10", False, "link-local"),
        ("fe80::1", False, "link-local"),
        ("100.64.3.2", False, "CGNAT"),
        ("0.0.0.0", False, "unspecified"),  # noqa: S104 (an address to refuse, not one to bind)
        ("::", False, "unspecified"),
        ("224.0.0.251", False, "multicast"),
        ("ff02::1", False, "multicast"),
        ("240.0.0.1", False, "reserved"),
        ("192.0.2.10", False, "private"),  # documentation range
        ("::ffff:10.0.0.1", False, "private"),
        ("::ffff:169.254.169.254", False, "metadata"),
        ("::ffff:93.184.216.34", False, None),
        ("64:ff9b::a00:1", False, "private"),  # NAT64 of 10.0.0.1
        ("2002:a00:1::", False, "private"),  # 6to4 of 10.0.0.1
    ],
)
def test_delivery_addresses(address: str, loopback_allowed: bool, refusal: str | None) -> None:
    verdict = address_refusal(ipaddress.ip_address(address), allow_loopback=loopback_allowed)
    assert (verdict is None) if refusal is None else (verdict is not None and refusal in verdict)


# ------------------------------------------------------------------------------------------- delivering


def test_an_ending_is_delivered_signed_with_a_stable_id_and_recorded(world: FakeWorld) -> None:
    job = submit(world, {"url": HOOK})
    body = fail(world, job)
    assert deliver(world.deps, body, attempt=1, receipt_handle="r1") is Outcome.DELIVERED
    (request,) = world.webhook_sender.requests
    assert request.url == HOOK and request.body == body.encode() and request.allow_loopback is False
    assert request.headers["webhook-id"] == f"msg_{job.job_id}_job_failed" == event_id(job.job_id, "job.failed")
    # What a receiver does with the standardwebhooks library: the event, verified.
    assert Webhook(FAKE_WEBHOOK_SECRET).verify(request.body, request.headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==").verify(request.body, request.headers)
    webhook = stored(world, job).webhook
    assert webhook is not None and webhook.state == "delivered"
    (delivery,) = webhook.public_view()["deliveries"]
    assert delivery["event_id"] == request.headers["webhook-id"]
    assert (delivery["type"], delivery["attempt"], delivery["status_code"]) == ("job.failed", 1, 200)
    assert "error" not in delivery and delivery["duration_ms"] == 3


def test_during_a_rotation_every_secret_signs(world: FakeWorld) -> None:
    new_secret = "whsec_" + "bmV3LXNpZ25pbmctc2VjcmV0LTAxMjM0NTY3"
    world.webhook_secrets[:] = [new_secret, FAKE_WEBHOOK_SECRET]
    body = fail(world, submit(world, {"url": HOOK}))
    deliver(world.deps, body, attempt=1, receipt_handle="r1")
    (request,) = world.webhook_sender.requests
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(signature.startswith("v1,") for signature in signatures)
    for secret in (new_secret, FAKE_WEBHOOK_SECRET):
        Webhook(secret).verify(request.body, request.headers)


@pytest.mark.parametrize("events", [None, ["job.succeeded"]])
def test_events_nobody_asked_for_are_dropped_quietly(world: FakeWorld, events: list[str] | None) -> None:
    job = submit(world, {"url": HOOK, "events": events} if events else None)
    body = fail(world, job)
    assert webhook_target(world.deps, json.loads(body)) is None
    assert deliver(world.deps, body, attempt=1, receipt_handle="r1") is Outcome.DROPPED
    for stray in ('{"type": "job.failed", "job": {"job_id": "nope"}}', '{"type": "other"}', "not json", "[]"):
        assert deliver(world.deps, stray, attempt=1, receipt_handle="r1") is Outcome.DROPPED
    assert world.webhook_sender.requests == [] and world.webhook_queue.postponed == []


def test_the_target_is_chosen_by_event_type(world: FakeWorld) -> None:
    job = submit(world, {"url": HOOK, "events": ["job.started", "job.failed"]})
    for event_type, expected in [("job.started", True), ("job.failed", True), ("job.succeeded", False)]:
        target = webhook_target(world.deps, {"type": event_type, "job": {"job_id": job.job_id}})
        assert (target is not None) is expected
        if target is not None:
            assert (target.url, target.event_id) == (HOOK, event_id(job.job_id, event_type))


def test_retry_waits_follow_the_schedule_with_jitter_and_end_after_the_last() -> None:
    assert sum(DEFAULT_RETRY_SECONDS) >= 24 * 3600  # at least a day of retries
    assert max(DEFAULT_RETRY_SECONDS) * 1.2 >= MAX_RETRY_DELAY_SECONDS  # the cap matters for the longest waits
    low = [retry_delay(attempt, DEFAULT_RETRY_SECONDS, lambda a, b: a) for attempt in range(1, 9)]
    high = [retry_delay(attempt, DEFAULT_RETRY_SECONDS, lambda a, b: b) for attempt in range(1, 9)]
    assert low == [5, 300, 1800, 7200, 18000, 36000, 36000, None]
    assert high == [6, 360, 2160, 8640, 21600, MAX_RETRY_DELAY_SECONDS, MAX_RETRY_DELAY_SECONDS, None]


def test_a_failed_attempt_comes_back_after_its_wait_and_the_last_one_is_given_up() -> None:
    world = FakeWorld(settings=fake_settings(webhook_retry_seconds="10,20"))
    job = submit(world, {"url": HOOK})
    body = fail(world, job)
    world.webhook_sender.script = [500, WebhookResponse(status_code=None, duration_ms=10_000, error="no answer"), 302]
    assert deliver(world.deps, body, attempt=1, receipt_handle="r1") is Outcome.RETRY
    assert deliver(world.deps, body, attempt=2, receipt_handle="r2") is Outcome.RETRY
    assert stored(world, job).webhook.state == "retrying"  # type: ignore[union-attr]
    assert deliver(world.deps, body, attempt=3, receipt_handle="r3") is Outcome.GIVEN_UP
    postponed = world.webhook_queue.postponed
    assert [receipt for receipt, _ in postponed] == ["r1", "r2"]
    assert 10 <= postponed[0][1] <= 12 and 20 <= postponed[1][1] <= 24
    webhook = stored(world, job).webhook
    assert webhook is not None and webhook.state == "failed"
    deliveries = webhook.public_view()["deliveries"]
    assert [(d["attempt"], d.get("status_code"), d.get("error")) for d in deliveries] == [
        (1, 500, None),
        (2, None, "no answer"),
        (3, 302, None),
    ]
    # One id for every attempt of the event.
    assert len({request.headers["webhook-id"] for request in world.webhook_sender.requests}) == 1


def test_only_the_latest_deliveries_are_kept() -> None:
    world = FakeWorld(settings=fake_settings(webhook_retry_seconds=",".join(["1"] * 30)))
    job = submit(world, {"url": HOOK})
    body = fail(world, job)
    world.webhook_sender.script = [503] * 25
    for attempt in range(1, 26):
        deliver(world.deps, body, attempt=attempt, receipt_handle=f"r{attempt}")
    deliveries = stored(world, job).webhook.deliveries  # type: ignore[union-attr]
    assert len(deliveries) == MAX_DELIVERIES_KEPT
    assert [delivery.attempt for delivery in deliveries] == list(range(26 - MAX_DELIVERIES_KEPT, 26))


# ------------------------------------------------------------------------------------------- job.started


def test_job_started_is_queued_once_when_the_task_first_runs(world: FakeWorld) -> None:
    job = submit(world, {"url": HOOK, "events": ["job.started", "job.succeeded"]})
    assert world.webhook_queue.sent == []
    world.dashscope.set_status("task-1", TaskStatus.RUNNING)
    for polls in range(3):
        check_status(world.deps, job.job_id, PollState(next="wait", polls=polls))
    (body,) = world.webhook_queue.sent
    event = json.loads(body)
    assert (event["schema"], event["type"], event["job"]["job_id"]) == ("wanflow.job.v1", "job.started", job.job_id)
    assert event["job"]["status"] == "RUNNING"
    assert world.notifier.events == []  # never on the topic
    assert deliver(world.deps, body, attempt=1, receipt_handle="r") is Outcome.DELIVERED
    assert world.webhook_sender.requests[0].headers["webhook-id"] == f"msg_{job.job_id}_job_started"


def test_job_started_is_not_queued_for_a_webhook_that_did_not_ask(world: FakeWorld) -> None:
    job = submit(world, {"url": HOOK})
    world.dashscope.set_status("task-1", TaskStatus.RUNNING)
    check_status(world.deps, job.job_id, PollState(next="wait", polls=0))
    assert stored(world, job).status is JobStatus.RUNNING
    assert world.webhook_queue.sent == []


def test_a_queue_failure_never_fails_the_poll(world: FakeWorld) -> None:
    job = submit(world, {"url": HOOK, "events": ["job.started"]})

    def broken(body: str) -> None:
        raise RuntimeError("SQS unavailable")

    world.webhook_queue.send = broken  # type: ignore[method-assign]
    world.dashscope.set_status("task-1", TaskStatus.RUNNING)
    assert check_status(world.deps, job.job_id, PollState(next="wait", polls=0)).next == "wait"
    assert stored(world, job).webhook.started_sent  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------- redelivery


def test_redeliver_queues_the_latest_event_again_with_its_id(world: FakeWorld) -> None:
    job = submit(world, {"url": HOOK})
    fail(world, job)
    answer = redeliver(world.deps, job.job_id, caller())
    assert answer == {"job_id": job.job_id, "event_id": f"msg_{job.job_id}_job_failed", "type": "job.failed"}
    (body,) = world.webhook_queue.sent
    assert json.loads(body)["type"] == "job.failed"
    deliver(world.deps, body, attempt=1, receipt_handle="r")
    assert world.webhook_sender.requests[0].headers["webhook-id"] == answer["event_id"]


def test_redeliver_refuses_what_it_cannot_send(world: FakeWorld) -> None:
    without = submit(world)
    with pytest.raises(Conflict, match="has no webhook"):
        redeliver(world.deps, without.job_id, caller())
    running = submit(world, {"url": HOOK})
    assert last_event_type(running) is None
    with pytest.raises(Conflict, match="no event for its webhook yet"):
        redeliver(world.deps, running.job_id, caller())
    with pytest.raises(NotFound):
        redeliver(world.deps, running.job_id, caller("mallory"))
    with pytest.raises(NotFound):
        redeliver(world.deps, "0" * 32, caller())
    assert world.webhook_queue.sent == []


# ------------------------------------------------------------------------------------------- S3 intake


def test_an_intake_manifest_takes_a_webhook_and_a_bad_one_fails_its_job_naming_the_field(world: FakeWorld) -> None:
    from wanflow.usecases.intake import CreatedObject, submit_uploaded_object
    from wanflow_tools.testing import image_bytes

    world.objects.put_bytes("intake", "incoming/hooks/frame.png", image_bytes(320, 256), "image/png")
    manifest: dict[str, Any] = {
        "model": "wan2.2-i2v-flash",
        "input": {"prompt": "p", "img_url": "./frame.png"},
        "parameters": {"resolution": "480P"},
        "webhook": {"url": HOOK, "events": ["job.started"]},
    }
    world.objects.put_bytes("intake", "incoming/hooks/a.json", json.dumps(manifest).encode(), "application/json")
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/hooks/a.json", "v1", None, "alice"))
    assert job is not None and job.webhook is not None and job.webhook.events == ["job.started"]

    manifest["webhook"] = {"url": "https://192.168.1.20/hook"}
    world.objects.put_bytes("intake", "incoming/hooks/b.json", json.dumps(manifest).encode(), "application/json")
    refused = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/hooks/b.json", "v1", None, "alice"))
    assert refused is not None and refused.status is JobStatus.FAILED
    assert refused.error is not None and "webhook.url" in refused.error.message


# ------------------------------------------------------------------------------------------- batches


def test_batch_completed_goes_to_the_batchs_webhook_and_its_attempts_are_kept_on_the_batch(world: FakeWorld) -> None:
    from wanflow.usecases import batches

    batch, _ = batches.submit_api_batch(
        world.deps, {"jobs": [sample_job_body()], "webhook": {"url": HOOK}}, idempotency_key=None, caller=caller()
    )
    (job_id,) = batch.job_ids
    ending.end_failed(world.deps, job_id, "TaskFailed", "it broke")
    (completed,) = world.notifier.batch_events
    body = json.dumps(completed)
    target = webhook_target(world.deps, completed)
    assert target is not None and (target.url, target.event_id) == (HOOK, f"msg_{batch.batch_id}_batch_completed")
    world.webhook_sender.script = [500, 204]
    assert deliver(world.deps, body, attempt=1, receipt_handle="r1") is Outcome.RETRY
    assert deliver(world.deps, body, attempt=2, receipt_handle="r2") is Outcome.DELIVERED
    request = world.webhook_sender.requests[-1]
    Webhook(FAKE_WEBHOOK_SECRET).verify(request.body, request.headers)
    assert json.loads(request.body)["type"] == "batch.completed"
    view = batches.get_batch(world.deps, batch.batch_id, caller())["webhook"]
    assert (view["url"], view["state"]) == (HOOK, "delivered")
    assert [(d["attempt"], d.get("status_code")) for d in view["deliveries"]] == [(1, 500), (2, 204)]
    # The job's own ending went to the same webhook (the batch gave it to the job), recorded on the job.
    assert webhook_target(world.deps, world.notifier.for_job(job_id)[0]) is not None


def test_a_batch_without_a_webhook_and_budget_events_have_no_target(world: FakeWorld) -> None:
    from wanflow.usecases import batches

    batch, _ = batches.submit_api_batch(
        world.deps, {"jobs": [sample_job_body()]}, idempotency_key=None, caller=caller()
    )
    event = {"schema": "wanflow.batch.v1", "type": "batch.completed", "batch": {"batch_id": batch.batch_id}}
    assert webhook_target(world.deps, event) is None
    assert webhook_target(world.deps, {"schema": "wanflow.budget.v1", "type": "budget.threshold"}) is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/wanflow?token=abc", "https://hooks.example.com/..."),
        ("https://hooks.slack.com/services/T000/B000/XXXX", "https://hooks.slack.com/..."),
        ("https://hooks.example.com:8443", "https://hooks.example.com:8443/"),
        ("https://hooks.example.com/", "https://hooks.example.com/"),
    ],
)
def test_events_show_only_the_origin_of_a_webhook_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_the_owner_sees_the_whole_webhook_url_and_the_event_only_its_origin(world: FakeWorld) -> None:
    job = submit(world, {"url": HOOK})
    event = json.loads(fail(world, job))
    assert event["job"]["webhook"]["url"] == "https://hooks.example.com/..."
    assert "abc" not in json.dumps(event)
    assert job_view(world.deps, stored(world, job))["webhook"]["url"] == HOOK
