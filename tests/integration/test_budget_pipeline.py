"""The spend cap end to end (docs/product.md section 8), offline: real HTTP to the API adapter, the real handlers
in-process, moto executing statemachine/job.asl.json, and the DashScope emulator on loopback.

The stack is deployed with `DailyBudgetUsd` room for one job (wan2.2-i2v-flash at 480P for 5 s: 0.075 USD) and
the local caller as an admin (so that `GET /v1/usage` shows the deployment). Raising the cap is done as a stack
update does it: the functions get the new environment (and re-read it). Nothing sleeps to synchronise: every wait
is on a condition, with a deadline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from wanflow.settings import get_settings
from wanflow.wiring import reset as reset_application
from wanflow_tools.emulator import Emulator, EmulatorConfig
from wanflow_tools.moto_stack.stack import MotoStack
from wanflow_tools.testing import image_data_uri
from wanflow_tools.testing import wait_until as _wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BUDGET_SCHEMA = json.loads((REPO / "schemas" / "budget-event.v1.schema.json").read_text())
API_KEY = "sk-budget-test-key"
MODEL = "wan2.2-i2v-flash"
PRICE = 0.075
LOCAL_PRINCIPAL = "AIDALOCALWANFLOW0000"  # the local HTTP API's implicit caller
TIMEOUT = 60.0


def wait_until(predicate: Callable[[], Any], what: str) -> Any:
    return _wait_until(predicate, timeout=TIMEOUT, interval=0.1, what=what)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(api_key=API_KEY, pending_seconds=0.2, running_seconds=0.5, render_workers=2)
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
        parameter_overrides={"DailyBudgetUsd": str(PRICE), "AdminPrincipals": LOCAL_PRINCIPAL},
    ) as running:
        reset_application()
        yield running
    reset_application()


@pytest.fixture(scope="module")
def api(stack: MotoStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


def submit(api: httpx.Client) -> dict[str, Any]:
    body = {
        "model": MODEL,
        "input": {"prompt": "a lighthouse at dusk", "img_url": image_data_uri(320, 256)},
        "parameters": {"resolution": "480P", "duration": 5},
    }
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def ended(api: httpx.Client, stack: MotoStack, job_id: str) -> dict[str, Any]:
    """The job once it ended and its notification arrived."""

    def notified() -> bool:
        return any(n["message"].get("job", {}).get("job_id") == job_id for n in stack.notifications())

    wait_until(notified, what=f"the end of job {job_id}")
    return dict(api.get(f"/v1/jobs/{job_id}").json())


def usage(api: httpx.Client) -> dict[str, Any]:
    response = api.get("/v1/usage")
    assert response.status_code == 200, response.text
    return dict(response.json())


def raise_cap(stack: MotoStack, monkeypatch: pytest.MonkeyPatch, usd: float) -> None:
    """What a stack update of DailyBudgetUsd does: the functions run with the new environment."""
    source = stack.sqs_event_source("IntakeFunction")  # settings are cached per process: no handler mid-flight
    wait_until(lambda: source.stats.in_flight == 0, what="the intake function to be idle")
    monkeypatch.setenv("WANFLOW_DAILY_BUDGET_USD", str(usd))
    reset_application()
    assert get_settings().daily_budget_usd == Decimal(os.environ["WANFLOW_DAILY_BUDGET_USD"])


def test_the_cap_holds_a_job_gives_back_a_failures_reservation_and_releases_the_held_job_when_raised(
    api: httpx.Client, stack: MotoStack, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job whose task fails gives its reservation back.
    httpx.post(
        f"{emulator.root_url}/_emulator/faults", json=[{"on": "task", "fail_code": "DataInspectionFailed"}]
    ).raise_for_status()
    failing = submit(api)
    assert ended(api, stack, failing["job_id"])["status"] == "FAILED"
    assert usage(api)["reserved_usd"] == 0

    # The cap has room for one job: the second waits, QUEUED for the budget, and the POST answer says so.
    first = submit(api)
    held = submit(api)
    assert held["status"] == "QUEUED" and held["queue"]["reason"] == "budget", held
    assert ended(api, stack, first["job_id"])["status"] == "SUCCEEDED"
    still = api.get(f"/v1/jobs/{held['job_id']}").json()
    assert still["status"] == "QUEUED" and still["queue"]["reason"] == "budget"
    day = usage(api)
    assert (day["scope"], day["cap_usd"], day["reserved_usd"], day["spent_usd"]) == ("deployment", PRICE, PRICE, PRICE)
    assert day["held_jobs"] == 1

    # Raising the cap lets the sweeper's periodic pass release it; it then runs to success.
    raise_cap(stack, monkeypatch, 2 * PRICE)
    repairs = stack.run_sweeper().value()
    assert repairs.get("budget_released") == 1 and repairs.get("granted") == 1, repairs
    assert ended(api, stack, held["job_id"])["status"] == "SUCCEEDED"
    day = usage(api)
    assert (day["reserved_usd"], day["spent_usd"], day["held_jobs"]) == (2 * PRICE, 2 * PRICE, 0)
    assert day["models"] == {MODEL: {"jobs": 2, "video_seconds": 10, "reserved_usd": 0.15, "spent_usd": 0.15}}
    assert api.get("/v1/usage", params={"date": "2026-02-30"}).json()["errors"][0]["field"] == "date"

    # The sample event drives the real handler; its caller is no admin: it sees its own day only (nothing spent).
    sample = json.loads((REPO / "events" / "api-get-usage.json").read_text())
    sample["queryStringParameters"]["date"] = day["date"]
    reply = stack.invoke("ApiFunction", sample).value()
    assert reply["statusCode"] == 200, reply
    own = json.loads(reply["body"])
    assert (own["scope"], own["principal"], own["cap_usd"], own["reserved_usd"]) == (
        "principal",
        "AIDACKCEVSQ6C2EXAMPLE",
        None,
        0,
    )

    # The day's cap was reached (by the first reservation): 80% and 100% announced once each, on the job topic.
    announced = [n for n in stack.notifications() if n["message"].get("type") == "budget.threshold"]
    assert sorted(n["message"]["budget"]["threshold"] for n in announced) == [0.8, 1.0], announced
    for notification in announced:
        jsonschema.validate(notification["message"], BUDGET_SCHEMA)
        assert notification["attributes"]["type"] == "budget.threshold"
        assert notification["message"]["budget"]["scope"] == "deployment"
