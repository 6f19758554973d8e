"""The operations kit in template.yaml: the dashboard's body is JSON once CloudFormation substituted it and names the
stack's own resources, every wanflow metric the dashboard and the alarms read is one the code emits (names and
dimension sets from wanflow.telemetry, which tests/unit/test_metrics.py checks against the handlers' EMF), every
alarm notifies the alarm topic only when there is one and has a runbook in docs/operations.md, and the alarm topic
is encrypted with a key CloudWatch may use."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from wanflow import telemetry
from wanflow.jobs import JobStatus

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
RUNBOOK = REPO / "docs" / "operations.md"
SWEEP_SOURCES = [REPO / "layers" / "wanflow" / "usecases" / name for name in ("sweep.py", "admission.py")]
KEY_ARN = "arn:aws:kms:ap-southeast-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
NO_ACTIONS = {"Fn::If": ["HasAlarmEmail", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]}
# Values a dimension can take, where the code fixes them.
DIMENSION_VALUES = {
    (telemetry.JOBS_FINISHED, "outcome"): {status.value for status in JobStatus if status.is_final},
    (telemetry.WEBHOOK_DELIVERIES, "outcome"): {telemetry.DELIVERED, telemetry.RETRY, telemetry.GIVEN_UP},
    (telemetry.DASHSCOPE_THROTTLED, "operation"): {telemetry.CREATE, telemetry.QUERY},
    (telemetry.DASHSCOPE_ERRORS, "operation"): {telemetry.CREATE, telemetry.QUERY},
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml_parse(TEMPLATE.read_text())


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return dict(template["Resources"])


def alarms(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def substituted(template: dict[str, Any], text: str) -> str:
    """`text` as !Sub makes it: parameters get their defaults, resources (and their attributes) a sample value. A
    name that is neither fails the test, as it would fail the stack."""
    parameters = template["Parameters"]

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("AWS::"):
            return {"AWS::Region": "ap-southeast-1", "AWS::StackName": "wanflow"}.get(name, "sample")
        if name in parameters:
            return str(parameters[name].get("Default", ""))
        logical_id = name.split(".", 1)[0]
        assert logical_id in template["Resources"], f"the dashboard names ${{{name}}}, which the stack does not have"
        assert "Condition" not in template["Resources"][logical_id], f"{logical_id} does not always exist"
        return f"sample-{name.replace('.', '-')}"

    return re.sub(r"\$\{([^}!]+)\}", value, text)


@pytest.fixture(scope="module")
def dashboard(template: dict[str, Any], resources: dict[str, Any]) -> dict[str, Any]:
    body = resources["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    parsed = json.loads(substituted(template, body))
    assert isinstance(parsed, dict)
    return parsed


def metric_widgets(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for widget in dashboard["widgets"]:
        if widget["type"] == "metric":
            yield widget["properties"]


_SEARCH = re.compile(r"SEARCH\('\{(?P<schema>[^}]*)\}(?P<filters>[^']*)',\s*'(?P<stat>[^']+)'")
_FILTER = re.compile(r'(\w+)="([^"]*)"')

# (namespace, metric name, dimension names, fixed dimension values) of one metric a graph or an alarm reads.
Read = tuple[str, str, tuple[str, ...], dict[str, str]]


def dashboard_reads(dashboard: dict[str, Any]) -> Iterator[Read]:
    """Every metric the dashboard reads: SEARCH expressions (their schema and filters) and metric arrays
    ([namespace, name, dimension, value, ..., {options}])."""
    for properties in metric_widgets(dashboard):
        for entry in properties["metrics"]:
            options = entry[-1] if isinstance(entry[-1], dict) else {}
            search = _SEARCH.search(options.get("expression", ""))
            if search:
                namespace, *dimensions = [part.strip() for part in search["schema"].split(",")]
                filters = dict(_FILTER.findall(search["filters"]))
                name = filters.pop("MetricName")
                assert set(filters) <= set(dimensions)
                yield namespace, name, tuple(sorted(dimensions)), filters
            elif "expression" not in options:
                namespace, name, *pairs = [item for item in entry if not isinstance(item, dict)]
                assert "." not in (namespace, name, *pairs), "spell every metric out: the test reads them"
                fixed = dict(zip(pairs[::2], pairs[1::2], strict=True))
                yield namespace, name, tuple(sorted(fixed)), fixed


def alarm_reads(resources: dict[str, Any]) -> Iterator[tuple[str, Read]]:
    for logical_id, alarm in alarms(resources).items():
        stats = (
            [alarm]
            if "MetricName" in alarm
            else [query["MetricStat"]["Metric"] for query in alarm["Metrics"] if "MetricStat" in query]
        )
        for stat in stats:
            fixed = {dimension["Name"]: dimension["Value"] for dimension in stat.get("Dimensions", [])}
            yield logical_id, (stat["Namespace"], stat["MetricName"], tuple(sorted(fixed)), fixed)


def sweeper_repairs() -> set[str]:
    """Every repair name the sweeper counts (its Sweeper_<repair> metrics): the strings its code returns or counts."""
    names: set[str] = set()
    for source in SWEEP_SOURCES:
        text = source.read_text()
        names.update(re.findall(r'return "([a-z_]+)"', text))
        names.update(re.findall(r'counts\["([a-z_]+)"\]', text))
        names.update(re.findall(r'outcome = "([a-z_]+)"', text))
        names.update(re.findall(r'"(?:granted|held)": "([a-z_]+)"', text))
    return names


def assert_emitted(read: Read, where: str) -> None:
    namespace, name, dimensions, fixed = read
    if namespace != telemetry.NAMESPACE:
        return
    if name.startswith(telemetry.SWEEPER_PREFIX):
        assert name.removeprefix(telemetry.SWEEPER_PREFIX) in sweeper_repairs(), f"{where}: no repair makes {name}"
    else:
        assert name in telemetry.DIMENSION_SETS, f"{where}: nothing emits {name}"
    assert dimensions in telemetry.dimension_sets_of(name), f"{where}: {name} is never emitted with {dimensions}"
    assert fixed.get("service", telemetry.SERVICE) == telemetry.SERVICE
    for dimension, value in fixed.items():
        allowed = DIMENSION_VALUES.get((name, dimension))
        assert allowed is None or value in allowed, f"{where}: {name} never has {dimension}={value}"


# ------------------------------------------------------------------------------------------- dashboard


def test_the_dashboard_is_json_after_substitution_and_lays_out_its_widgets(dashboard: dict[str, Any]) -> None:
    widgets = dashboard["widgets"]
    assert len(widgets) >= 10
    for widget in widgets:
        assert {"type", "x", "y", "width", "height", "properties"} <= set(widget)
        assert widget["x"] + widget["width"] <= 24
    for properties in metric_widgets(dashboard):
        assert properties["region"] == "ap-southeast-1" and properties["title"]


def test_the_dashboard_shows_what_the_issue_asks_for(
    dashboard: dict[str, Any], template: dict[str, Any], resources: dict[str, Any]
) -> None:
    reads = list(dashboard_reads(dashboard))
    wanflow = {name for namespace, name, _, _ in reads if namespace == telemetry.NAMESPACE}
    assert {
        telemetry.JOBS_SUBMITTED,
        telemetry.JOBS_FINISHED,
        telemetry.TIME_TO_VIDEO,
        telemetry.DASHSCOPE_THROTTLED,
        telemetry.DASHSCOPE_ERRORS,
        telemetry.QUEUE_DEPTH,
        telemetry.WEBHOOK_DELIVERIES,
        telemetry.SPEND_RESERVED_USD,
        telemetry.JOBS_PAST_DEADLINE,
    } <= wanflow
    finished = {fixed.get("outcome") for _, name, _, fixed in reads if name == telemetry.JOBS_FINISHED}
    assert {"SUCCEEDED", "FAILED"} <= finished
    text = json.dumps(dashboard)
    assert "'p50'" in text and "'p95'" in text  # time to video percentiles
    # Spend against the cap: the parameter's value is drawn on the spend graph.
    (spend,) = [p for p in metric_widgets(dashboard) if "SpendReservedUsd" in json.dumps(p["metrics"])]
    assert spend["annotations"]["horizontal"][0]["value"] == template["Parameters"]["DailyBudgetUsd"]["Default"]
    # Every dead-letter queue, the state machine's failures, every function's errors.
    queues = {fixed["QueueName"] for namespace, _, _, fixed in reads if namespace == "AWS/SQS"}
    assert queues == {f"sample-{queue}-QueueName" for queue in resources if queue.endswith("DeadLetterQueue")}
    assert ("AWS/States", "ExecutionsFailed") in {(namespace, name) for namespace, name, _, _ in reads}
    functions = {
        fixed["FunctionName"] for namespace, name, _, fixed in reads if (namespace, name) == ("AWS/Lambda", "Errors")
    }
    assert functions == {
        f"sample-{logical_id}" for logical_id, resource in resources.items() if resource["Type"].endswith("::Function")
    }


def test_every_wanflow_metric_the_dashboard_reads_is_one_the_code_emits(dashboard: dict[str, Any]) -> None:
    reads = list(dashboard_reads(dashboard))
    assert any(namespace == telemetry.NAMESPACE for namespace, *_ in reads)
    for read in reads:
        assert_emitted(read, "dashboard")


def test_the_dashboards_alarm_widget_lists_every_alarm(dashboard: dict[str, Any], resources: dict[str, Any]) -> None:
    (widget,) = [widget for widget in dashboard["widgets"] if widget["type"] == "alarm"]
    assert set(widget["properties"]["alarms"]) == {f"sample-{logical_id}-Arn" for logical_id in alarms(resources)}


# ------------------------------------------------------------------------------------------- alarms


def test_every_wanflow_metric_an_alarm_reads_is_one_the_code_emits(resources: dict[str, Any]) -> None:
    for logical_id, read in alarm_reads(resources):
        assert_emitted(read, logical_id)


def test_the_issues_alarms_exist_on_the_right_metrics(resources: dict[str, Any]) -> None:
    reads = {logical_id: read for logical_id, read in alarm_reads(resources)}
    sqs = {read[3]["QueueName"]["Fn::GetAtt"][0] for _, read in alarm_reads(resources) if read[0] == "AWS/SQS"}
    assert sqs == {"IntakeDeadLetterQueue", "WebhookDeadLetterQueue", "SweeperDeadLetterQueue"}
    assert reads["StuckJobAlarm"][:2] == (telemetry.NAMESPACE, telemetry.JOBS_PAST_DEADLINE)
    assert reads["SweeperErrorsAlarm"][:2] == ("AWS/Lambda", "Errors")
    assert reads["SweeperErrorsAlarm"][3] == {"FunctionName": {"Ref": "SweeperFunction"}}
    assert reads["ExecutionsFailedAlarm"][:2] == ("AWS/States", "ExecutionsFailed")
    assert reads["ExecutionsFailedAlarm"][3] == {"StateMachineArn": {"Ref": "JobStateMachine"}}
    webhook = reads["WebhookDeadLetteredAlarm"]
    assert webhook[1:] == (
        telemetry.WEBHOOK_DELIVERIES,
        ("outcome", "service"),
        {"service": "wanflow", "outcome": telemetry.GIVEN_UP},
    )


def test_the_failure_ratio_alarm_divides_failed_by_ended_jobs_above_the_parameter(resources: dict[str, Any]) -> None:
    alarm = resources["FailureRatioAlarm"]["Properties"]
    assert alarm["Threshold"] == {"Ref": "FailureRatioThreshold"}
    queries = {query["Id"]: query for query in alarm["Metrics"]}
    outcomes = {
        query_id: query["MetricStat"]["Metric"]["Dimensions"]
        for query_id, query in queries.items()
        if "MetricStat" in query
    }
    assert outcomes == {
        "succeeded": [{"Name": "service", "Value": "wanflow"}, {"Name": "outcome", "Value": "SUCCEEDED"}],
        "failed": [{"Name": "service", "Value": "wanflow"}, {"Name": "outcome", "Value": "FAILED"}],
    }
    (returned,) = [query for query in queries.values() if query.get("ReturnData", True)]
    expression = returned["Expression"]
    assert "FILL(failed, 0) / (FILL(succeeded, 0) + FILL(failed, 0))" in expression
    assert set(re.findall(r"\b([a-z]\w*)\b(?!\()", expression)) <= set(queries)


def test_every_alarm_notifies_the_alarm_topic_only_when_there_is_one(resources: dict[str, Any]) -> None:
    assert len(alarms(resources)) >= 9
    for logical_id, alarm in alarms(resources).items():
        assert alarm["AlarmActions"] == NO_ACTIONS, logical_id
        assert alarm["OKActions"] == NO_ACTIONS, logical_id
        assert "Condition" not in resources[logical_id]  # the alarms always exist
        assert alarm["TreatMissingData"] == "notBreaching", logical_id


def test_every_alarm_has_a_runbook(resources: dict[str, Any]) -> None:
    headings = [line for line in RUNBOOK.read_text().splitlines() if line.startswith("#")]
    for logical_id, alarm in alarms(resources).items():
        assert any(logical_id in heading for heading in headings), f"docs/operations.md has no runbook for {logical_id}"
        assert "docs/operations.md" in alarm["AlarmDescription"] or logical_id in (
            "UndeliverableNotificationAlarm",
            "WebhookDeadLetteredAlarm",
        )


# ------------------------------------------------------------------------------------------- alarm topic


def test_the_alarm_topic_exists_only_with_an_email_and_is_encrypted(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    conditions = template["Conditions"]
    assert conditions["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    for logical_id in ("AlarmTopic", "AlarmTopicPolicy", "AlarmEmailSubscription"):
        assert resources[logical_id]["Condition"] == "HasAlarmEmail"
    subscription = resources["AlarmEmailSubscription"]["Properties"]
    assert subscription == {"TopicArn": {"Ref": "AlarmTopic"}, "Protocol": "email", "Endpoint": {"Ref": "AlarmEmail"}}
    # Never the AWS managed aws/sns key, whose policy CloudWatch may not use: the stack's key, or the given one.
    topic = resources["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AlarmTopicKey"}]}
    key = resources["AlarmTopicKey"]
    assert key["Condition"] == "CreatesAlarmTopicKey"
    assert conditions["CreatesAlarmTopicKey"] == {
        "Fn::And": [{"Condition": "HasAlarmEmail"}, {"Fn::Not": [{"Condition": "HasKmsKey"}]}]
    }
    assert key["Properties"]["EnableKeyRotation"] is True
    (cloudwatch,) = [
        statement
        for statement in key["Properties"]["KeyPolicy"]["Statement"]
        if statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert cloudwatch["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_only_this_accounts_alarms_may_publish_to_the_alarm_topic_over_tls(resources: dict[str, Any]) -> None:
    policy = resources["AlarmTopicPolicy"]["Properties"]
    assert policy["Topics"] == [{"Ref": "AlarmTopic"}]
    allow, deny = policy["PolicyDocument"]["Statement"]
    assert (allow["Effect"], allow["Principal"], allow["Action"]) == (
        "Allow",
        {"Service": "cloudwatch.amazonaws.com"},
        "sns:Publish",
    )
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert ":alarm:*" in allow["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
