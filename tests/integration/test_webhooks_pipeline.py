"""Per-job webhooks end to end (docs/product.md, "Webhooks"), offline: real HTTP to the API adapter, the handlers
in-process, moto executing statemachine/job.asl.json, the DashScope emulator on loopback, the job topic feeding the
webhook queue through the template's raw SNS -> SQS subscription, and a loopback receiver that verifies every
delivery with the standardwebhooks library (wanflow_tools.webhook.receiver, what `wanflow webhook listen` runs).

Tasks run for 2 s at the emulator, so the 1 s poll sees them RUNNING (job.started). The stack runs with local
mode's setting (loopback targets allowed) and a retry schedule of 1 s waits, so a failed attempt comes back after
about a second and a delivery is given up after its third attempt. Nothing sleeps to synchronise: every wait is on
a condition, with a deadline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
import jsonschema
import pytest
from standardwebhooks import Webhook

from wanflow.settings import Settings, get_settings
from wanflow.wiring import reset as reset_application
from wanflow.wiring import webhook_secrets_from_value
from wanflow_tools.emulator import Emulator, EmulatorConfig
from wanflow_tools.moto_stack.stack import MotoStack
from wanflow_tools.testing import image_data_uri
from wanflow_tools.testing import wait_until as _wait_until
from wanflow_tools.webhook.receiver import VerifiedDelivery, WebhookReceiver

pytestmark = pytest.mark.slow

API_KEY = "sk-webhook-test-key"
MODEL = "wan2.2-i2v-flash"
TIMEOUT = 45.0
RETRY_SECONDS = "1,1"  # three attempts, a second apart
FLAKY_FAILURES = 2
with open(os.path.join(os.path.dirname(__file__), "..", "..", "schemas", "job-event.v1.schema.json")) as schema:
    EVENT_SCHEMA = json.load(schema)


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    return _wait_until(predicate, timeout=timeout, interval=0.1, what=what)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(api_key=API_KEY, pending_seconds=0.2, running_seconds=2.0, render_workers=2)
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
        environment={"WANFLOW_WEBHOOK_ALLOW_LOOPBACK": "true", "WANFLOW_WEBHOOK_RETRY_SECONDS": RETRY_SECONDS},
    ) as running:
        reset_application()
        yield running
    reset_application()


@pytest.fixture(scope="module")
def secret(stack: MotoStack) -> str:
    """The stack's generated signing secret, as its owner reads it (whsec_ + the secret's value)."""
    secretsmanager = boto3.client(
        "secretsmanager",
        endpoint_url=stack.aws_endpoint,
        region_name=stack.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    value = secretsmanager.get_secret_value(SecretId=stack.resources["WebhookSecret"])["SecretString"]
    assert not value.startswith("whsec_") and len(value) == 64  # generated as template.yaml says
    return webhook_secrets_from_value(value)[0]


def respond(path: str, seen: int) -> tuple[int, dict[str, str]]:
    """/flaky fails its first deliveries, /redirect always redirects, anything else is accepted."""
    if path.startswith("/flaky") and seen < FLAKY_FAILURES:
        return 503, {}
    if path.startswith("/redirect"):
        return 307, {"location": "http://127.0.0.1:9/elsewhere"}
    return 204, {}


@pytest.fixture(scope="module")
def receiver(secret: str) -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret, respond=respond) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: MotoStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


def submit(api: httpx.Client, webhook: dict[str, Any] | None) -> str:
    body: dict[str, Any] = {
        "model": MODEL,
        "input": {"prompt": "a lighthouse at dusk", "img_url": image_data_uri(320, 256)},
        "parameters": {"resolution": "480P", "duration": 5},
    }
    if webhook is not None:
        body["webhook"] = webhook
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def job_of(api: httpx.Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_webhook_state(api: httpx.Client, job_id: str, state: str, attempts: int) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        webhook = job_of(api, job_id)["webhook"]
        return webhook if webhook["state"] == state and len(webhook["deliveries"]) == attempts else None

    return dict(wait_until(settled, f"webhook of {job_id} {state} after {attempts} attempts"))


def deliveries_to(receiver: WebhookReceiver, path: str) -> Callable[[int], list[VerifiedDelivery]]:
    def wait(count: int) -> list[VerifiedDelivery]:
        got = receiver.wait_for(lambda all_: sum(d.path == path for d in all_) >= count, TIMEOUT)
        return [delivery for delivery in got if delivery.path == path]

    return wait


def test_started_and_ending_are_delivered_signed_and_redelivered(
    stack: MotoStack, api: httpx.Client, receiver: WebhookReceiver, secret: str
) -> None:
    url = f"{receiver.url}/ok"
    job_id = submit(api, {"url": url, "events": ["job.started", "job.succeeded"]})
    started, ended = deliveries_to(receiver, "/ok")(2)
    assert (started.event["type"], ended.event["type"]) == ("job.started", "job.succeeded")
    assert started.webhook_id == f"msg_{job_id}_job_started" and ended.webhook_id == f"msg_{job_id}_job_succeeded"
    # The library verifies what wanflow sent (the receiver did too, before it recorded anything).
    assert Webhook(secret).verify(ended.body, ended.headers) == ended.event
    assert receiver.rejected == 0
    # The body is the event SNS carried, byte for byte; both events follow the schema.
    (notification,) = wait_until(
        lambda: [n for n in stack.notifications() if n["message"]["job"]["job_id"] == job_id], "the SNS notification"
    )
    assert json.loads(ended.body) == notification["message"]
    for delivery in (started, ended):
        jsonschema.validate(delivery.event, EVENT_SCHEMA)
    assert started.event["job"]["status"] == "RUNNING" and ended.event["job"]["status"] == "SUCCEEDED"

    webhook = wait_webhook_state(api, job_id, "delivered", 2)
    assert webhook["url"] == url and webhook["events"] == ["job.started", "job.succeeded"]
    assert [(d["type"], d["attempt"], d["status_code"]) for d in webhook["deliveries"]] == [
        ("job.started", 1, 204),
        ("job.succeeded", 1, 204),
    ]

    response = api.post(f"/v1/jobs/{job_id}/webhook/redeliver")
    assert response.status_code == 202, response.text
    assert response.json() == {"job_id": job_id, "event_id": ended.webhook_id, "type": "job.succeeded"}
    again = deliveries_to(receiver, "/ok")(3)[2]
    assert again.webhook_id == ended.webhook_id and again.event["type"] == "job.succeeded"
    wait_webhook_state(api, job_id, "delivered", 3)


def test_redeliver_refusals(api: httpx.Client, receiver: WebhookReceiver) -> None:
    without = submit(api, None)
    response = api.post(f"/v1/jobs/{without}/webhook/redeliver")
    assert response.status_code == 409 and "has no webhook" in response.json()["message"]
    waiting = submit(api, {"url": f"{receiver.url}/refusals"})
    response = api.post(f"/v1/jobs/{waiting}/webhook/redeliver")
    # Either still running (no event yet) or already ended (then its ending is redelivered): never a 5xx.
    assert response.status_code in (202, 409), response.text
    assert api.post(f"/v1/jobs/{'0' * 32}/webhook/redeliver").status_code == 404
    response = api.post(
        "/v1/jobs", json={"input": {"img_url": "https://example.com/a.png"}, "webhook": {"url": "ftp://x"}}
    )
    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == ["webhook.url"]


def test_a_receiver_that_fails_then_recovers_gets_the_event_on_a_later_attempt(
    api: httpx.Client, receiver: WebhookReceiver
) -> None:
    job_id = submit(api, {"url": f"{receiver.url}/flaky"})
    attempts = deliveries_to(receiver, "/flaky")(FLAKY_FAILURES + 1)
    assert len({delivery.webhook_id for delivery in attempts}) == 1  # one event, one id
    assert len({delivery.timestamp for delivery in attempts}) >= 2  # a timestamp per attempt
    webhook = wait_webhook_state(api, job_id, "delivered", FLAKY_FAILURES + 1)
    assert [(d["attempt"], d["status_code"]) for d in webhook["deliveries"]] == [(1, 503), (2, 503), (3, 204)]


def test_a_redirecting_target_is_not_followed_and_given_up_after_the_last_attempt(
    api: httpx.Client, receiver: WebhookReceiver
) -> None:
    job_id = submit(api, {"url": f"{receiver.url}/redirect"})
    webhook = wait_webhook_state(api, job_id, "failed", 3)
    assert [(d["attempt"], d["status_code"], d["error"]) for d in webhook["deliveries"]] == [
        (attempt, 307, "redirects are not followed") for attempt in (1, 2, 3)
    ]
    assert len(deliveries_to(receiver, "/redirect")(3)) == 3  # nothing went to the Location


def test_without_the_local_mode_setting_a_loopback_target_is_refused_on_every_attempt(
    monkeypatch: pytest.MonkeyPatch, api: httpx.Client, receiver: WebhookReceiver
) -> None:
    job_id = submit(api, {"url": f"{receiver.url}/private"})
    wait_webhook_state(api, job_id, "delivered", 1)
    # As deployed: loopback is not allowed, and the address is checked again at delivery, not only at submission.
    monkeypatch.setenv("WANFLOW_WEBHOOK_ALLOW_LOOPBACK", "false")
    reset_application()
    try:
        assert get_settings() == Settings.from_environment(os.environ)
        assert api.post(f"/v1/jobs/{job_id}/webhook/redeliver").status_code == 202
        webhook = wait_webhook_state(api, job_id, "failed", 4)
    finally:
        monkeypatch.undo()
        reset_application()
    refused = webhook["deliveries"][1:]
    assert all("status_code" not in d and "refused" in d["error"] and "loopback" in d["error"] for d in refused)
    assert len(deliveries_to(receiver, "/private")(1)) == 1  # only the first, allowed one arrived
