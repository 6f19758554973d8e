"""The spend cap's DynamoDB ledger on moto (the admission table as template.yaml defines it), and its settings."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from wanflow.adapters.budget_ledger import DynamoBudgetLedger, day_key
from wanflow.ports import Reservation, ReserveOutcome
from wanflow.settings import ConfigurationError, Settings

DAY = "2026-11-30"
MODEL = "wan2.2-i2v-flash"
BASE_ENVIRONMENT = {
    "WANFLOW_JOBS_TABLE": "jobs",
    "WANFLOW_INTAKE_BUCKET": "intake",
    "WANFLOW_OUTPUT_BUCKET": "output",
    "WANFLOW_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:topic",
    "WANFLOW_DASHSCOPE_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:key",
}


@pytest.fixture
def ledger(moto_dynamodb: Callable[[str, str], None]) -> DynamoBudgetLedger:
    moto_dynamodb("AdmissionTable", "admission")
    return DynamoBudgetLedger(boto3.resource("dynamodb").Table("admission"))


def reservation(job_id: str, usd: str = "0.075", principal: str = "AIDAALICE") -> Reservation:
    return Reservation(job_id=job_id, day=DAY, usd=Decimal(usd), model=MODEL, video_seconds=5, principal=principal)


def test_a_reservation_counts_the_day_the_principal_and_the_model_once(ledger: DynamoBudgetLedger) -> None:
    assert ledger.reserve(reservation("j1"), cap_usd=Decimal(1), principal_cap_usd=None) is ReserveOutcome.RESERVED
    again = ledger.reserve(reservation("j1"), cap_usd=Decimal(1), principal_cap_usd=None)
    assert again is ReserveOutcome.ALREADY
    for scope in (None, "AIDAALICE"):
        usage = ledger.usage(DAY, scope)
        assert usage.reserved_usd == Decimal("0.075") and usage.spent_usd == 0
        model = usage.models[MODEL]
        assert (model.jobs, model.video_seconds, model.reserved_usd) == (1, 5, Decimal("0.075"))
    assert ledger.usage("2026-12-01").reserved_usd == 0


def test_the_caps_hold_both_scopes_or_neither(ledger: DynamoBudgetLedger) -> None:
    cap, bob_cap = Decimal("0.3"), Decimal("0.1")
    assert ledger.reserve(reservation("a1"), cap_usd=cap, principal_cap_usd=None) is ReserveOutcome.RESERVED
    assert ledger.reserve(reservation("b1", principal="AIDABOB"), cap_usd=cap, principal_cap_usd=bob_cap) == "reserved"
    refused = ledger.reserve(reservation("b2", principal="AIDABOB"), cap_usd=cap, principal_cap_usd=bob_cap)
    assert refused is ReserveOutcome.OVER_PRINCIPAL
    assert ledger.usage(DAY).reserved_usd == Decimal("0.15")  # the deployment had room: nothing counted there either
    refused = ledger.reserve(reservation("a2", "0.2"), cap_usd=cap, principal_cap_usd=None)
    assert refused is ReserveOutcome.OVER_DEPLOYMENT
    assert ledger.usage(DAY, "AIDAALICE").reserved_usd == Decimal("0.075")
    # A refused job may reserve later: it left no trace.
    assert ledger.reserve(reservation("a2", "0.2"), cap_usd=Decimal(1), principal_cap_usd=None) == "reserved"


def test_settling_keeps_or_gives_back_exactly_once(ledger: DynamoBudgetLedger) -> None:
    for job_id in ("ok", "bad"):
        ledger.reserve(reservation(job_id), cap_usd=None, principal_cap_usd=None)
    kept = ledger.settle("ok", spent=True)
    assert kept is not None and kept.usd == Decimal("0.075") and kept.principal == "AIDAALICE"
    assert ledger.settle("ok", spent=True) is None and ledger.settle("ok", spent=False) is None
    assert ledger.settle("bad", spent=False) is not None
    assert ledger.settle("bad", spent=False) is None
    assert ledger.settle("never-reserved", spent=False) is None
    for scope in (None, "AIDAALICE"):
        usage = ledger.usage(DAY, scope)
        assert (usage.reserved_usd, usage.spent_usd) == (Decimal("0.075"), Decimal("0.075"))
        model = usage.models[MODEL]
        assert (model.jobs, model.video_seconds, model.spent_usd) == (1, 5, Decimal("0.075"))


def test_concurrent_reservations_never_pass_the_cap(ledger: DynamoBudgetLedger) -> None:
    cap = Decimal("0.5")  # room for 6 of 0.075
    outcomes: list[ReserveOutcome] = []
    start = threading.Barrier(12)

    def reserve(index: int) -> None:
        start.wait()
        for attempt in range(3):
            outcome = ledger.reserve(reservation(f"j{index}-{attempt}"), cap_usd=cap, principal_cap_usd=None)
            outcomes.append(outcome)

    threads = [threading.Thread(target=reserve, args=(index,)) for index in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == 36
    assert outcomes.count(ReserveOutcome.RESERVED) == 6
    assert ledger.usage(DAY).reserved_usd == Decimal("0.45") == ledger.usage(DAY).models[MODEL].reserved_usd


def test_a_transaction_that_lost_a_race_on_the_day_item_is_tried_again(
    ledger: DynamoBudgetLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ledger._client.transact_write_items
    conflicts = [2]  # DynamoDB cancels a transaction that meets a concurrent one on an item: TransactionConflict

    def conflicting(**request: Any) -> Any:
        if conflicts[0]:
            conflicts[0] -= 1
            reasons = [{"Code": "None"}, {"Code": "TransactionConflict"}, {"Code": "None"}]
            error = {"Error": {"Code": "TransactionCanceledException", "Message": "conflict"}}
            raise ClientError({**error, "CancellationReasons": reasons}, "TransactWriteItems")  # type: ignore[typeddict-unknown-key]
        return real(**request)

    monkeypatch.setattr(ledger._client, "transact_write_items", conflicting)
    assert ledger.reserve(reservation("j1"), cap_usd=Decimal(1), principal_cap_usd=None) is ReserveOutcome.RESERVED
    assert conflicts == [0] and ledger.usage(DAY).reserved_usd == Decimal("0.075")


def test_a_threshold_is_claimed_once_and_only_once_reached(ledger: DynamoBudgetLedger) -> None:
    ledger.reserve(reservation("j1", "0.7"), cap_usd=Decimal(1), principal_cap_usd=None)
    assert ledger.claim_threshold(DAY, None, "0.8", reserved_at_least=Decimal("0.8")) is None  # not reached
    ledger.reserve(reservation("j2", "0.2"), cap_usd=Decimal(1), principal_cap_usd=None)
    claimed = ledger.claim_threshold(DAY, None, "0.8", reserved_at_least=Decimal("0.8"))
    assert claimed is not None and claimed.reserved_usd == Decimal("0.9") and "0.8" in claimed.announced
    assert ledger.claim_threshold(DAY, None, "0.8", reserved_at_least=Decimal("0.8")) is None
    # 100% when the first job is held: no amount to reach; once.
    assert ledger.claim_threshold(DAY, "AIDABOB", "1.0", reserved_at_least=None) is not None
    assert ledger.claim_threshold(DAY, "AIDABOB", "1.0", reserved_at_least=None) is None
    assert ledger.usage(DAY).announced == frozenset({"0.8"})


def test_day_items_expire_long_after_their_day(ledger: DynamoBudgetLedger) -> None:
    ledger.reserve(reservation("j1"), cap_usd=None, principal_cap_usd=None)
    item = boto3.resource("dynamodb").Table("admission").get_item(Key={"pk": day_key(DAY)})["Item"]
    assert int(item["expires_at"]) > 1_764_547_200 + 300 * 86_400  # 2026-12-01 + 300 days  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- settings


def settings(**environment: str) -> Settings:
    return Settings.from_environment({**BASE_ENVIRONMENT, **environment})


def test_budget_settings_default_to_no_cap() -> None:
    defaults = settings(WANFLOW_DAILY_BUDGET_USD="0")
    assert defaults.daily_budget_usd == 0 and defaults.caller_budgets_usd == {}
    assert defaults.caller_budget_for("AIDAALICEEXAMPLE0001", None) is None


def test_caller_budgets_name_unique_ids_user_arns_and_role_arns() -> None:
    parsed = settings(
        WANFLOW_DAILY_BUDGET_USD="100.5",
        WANFLOW_CALLER_BUDGETS_USD=(
            "arn:aws:iam::123456789012:role/path/batch=25, arn:aws:iam::123456789012:user/y=10,"
            "AIDAALICEEXAMPLE0001=2.5,arn:aws:iam::123456789012:user/alice=3"
        ),
    )
    assert parsed.daily_budget_usd == Decimal("100.5")
    role_session = "arn:aws:sts::123456789012:assumed-role/batch/session-1"
    assert parsed.caller_budget_for("AROABATCHEXAMPLE0001", role_session) == 25
    assert parsed.caller_budget_for("AIDAYEXAMPLE00000001", "arn:aws:iam::123456789012:user/y") == 10
    # Named twice (unique id and ARN): the smaller cap applies; an intake job (no ARN) matches by unique id.
    assert parsed.caller_budget_for("AIDAALICEEXAMPLE0001", "arn:aws:iam::123456789012:user/alice") == Decimal("2.5")
    assert parsed.caller_budget_for("AIDAALICEEXAMPLE0001", None) == Decimal("2.5")
    assert parsed.caller_budget_for("AIDAOTHEREXAMPLE0001", "arn:aws:iam::123456789012:user/other") is None


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("WANFLOW_DAILY_BUDGET_USD", "-1", "not an amount of USD"),
        ("WANFLOW_DAILY_BUDGET_USD", "ten", "not an amount of USD"),
        ("WANFLOW_DAILY_BUDGET_USD", "0.00001", "at most 4 decimals"),
        ("WANFLOW_DAILY_BUDGET_USD", "NaN", "not an amount of USD"),
        ("WANFLOW_CALLER_BUDGETS_USD", "AIDAALICEEXAMPLE0001", "is not <principal>=<USD per day>"),
        ("WANFLOW_CALLER_BUDGETS_USD", "alice=5", "is not <principal>=<USD per day>"),
        ("WANFLOW_CALLER_BUDGETS_USD", "arn:aws:iam::123456789012:group/g=5", "is not <principal>=<USD per day>"),
        ("WANFLOW_CALLER_BUDGETS_USD", "AIDAALICEEXAMPLE0001=0", "a number > 0"),
        ("WANFLOW_CALLER_BUDGETS_USD", "AIDAALICEEXAMPLE0001=1e400", "not an amount of USD"),
        ("WANFLOW_CALLER_BUDGETS_USD", "AIDAALICEEXAMPLE0001=5,AIDAALICEEXAMPLE0001=6", "given twice"),
    ],
)
def test_bad_budget_settings_fail_fast_naming_the_variable(variable: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        settings(**{variable: value})
    assert variable in str(caught.value) and problem in str(caught.value)
