"""template.yaml, statemachine/job.asl.json, docs/openapi.yaml, schemas/ and events/, checked offline.

The SAM template is transformed with aws-sam-translator (as CloudFormation's transform would, minus the
upload of local code) and the result is linted with cfn-lint, which also catches dependency cycles. The
security properties are asserted on the transformed template, so that what SAM generates is covered too.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import cfnlint.api
import jsonschema
import pytest
from cfnlint.config import ManualArgs
from openapi_spec_validator import validate as validate_openapi
from openapi_spec_validator.readers import read_from_filename
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
ASL = REPO / "statemachine" / "job.asl.json"
OPENAPI = REPO / "docs" / "openapi.yaml"
EVENT_SCHEMA = REPO / "schemas" / "job-event.v1.schema.json"
EVENTS = REPO / "events"
FUNCTION_FOLDERS = {
    "ApiFunction": "api",
    "IntakeFunction": "intake",
    "StatusFunction": "status",
    "CreateTaskFunction": "create_task",
    "FinalizeFunction": "finalize",
    "RecordFailureFunction": "record_failure",
    "SweeperFunction": "sweeper",
    "WebhookFunction": "webhook",
}
# Actions AWS only grants on "*": they write traces and read sampling rules, they touch no data.
STAR_RESOURCE_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "xray:GetSamplingStatisticSummaries",
}
ALLOWED_MANAGED_POLICIES = {"AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess"}
KEY_ARN = "arn:aws:kms:ap-southeast-1:123456789012:key/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
KMS_ACTIONS = {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"}
# What each function may reserve (ReserveConcurrency "true"); the intake reserves IntakeMaxConcurrency.
RESERVED_CONCURRENCY = {
    "ApiFunction": 50,
    "StatusFunction": 20,
    "CreateTaskFunction": 10,
    "FinalizeFunction": 20,
    "RecordFailureFunction": 10,
    "SweeperFunction": 1,
    "WebhookFunction": 10,
}


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return yaml_parse(TEMPLATE.read_text())


@pytest.fixture(scope="module")
def transformed(sam: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation template SAM makes, with local code paths replaced as `sam package` would."""
    template = copy.deepcopy(sam)
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            properties["CodeUri"] = f"s3://wanflow-artifacts/{logical_id}.zip"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            properties["ContentUri"] = f"s3://wanflow-artifacts/{logical_id}.zip"
        elif resource["Type"] == "AWS::Serverless::StateMachine":
            properties["Definition"] = json.loads((REPO / properties.pop("DefinitionUri")).read_text())
    # A region for the translator's pseudo parameters; no AWS call is made.
    translator = Translator({}, Parser(), boto_session=boto3.session.Session(region_name="ap-southeast-1"))
    return translator.translate(template, parameter_values={}, get_managed_policy_map=dict)


_NO_VALUE = object()


def deployed(template: dict[str, Any], **parameters: str) -> dict[str, Any]:
    """The template as CloudFormation would create it with these parameters (defaults otherwise): resources whose
    Condition is false dropped, every Fn::If chosen, AWS::NoValue removed. Other intrinsics stay as they are."""
    values = {name: str(parameter.get("Default", "")) for name, parameter in template["Parameters"].items()}
    values.update(parameters)
    conditions: dict[str, bool] = {}

    def evaluate(expression: Any) -> Any:
        if not isinstance(expression, dict):
            return expression
        if len(expression) == 1:
            ((function, argument),) = expression.items()
            if function == "Ref" and argument in values:
                return values[argument]
            if function == "Condition":
                return conditions[argument]
            if function == "Fn::Equals":
                return str(evaluate(argument[0])) == str(evaluate(argument[1]))
            if function == "Fn::Not":
                return not evaluate(argument[0])
            if function == "Fn::And":
                return all(evaluate(item) for item in argument)
            if function == "Fn::Or":
                return any(evaluate(item) for item in argument)
        raise AssertionError(f"cannot evaluate {expression}")

    for name, expression in template.get("Conditions", {}).items():
        conditions[name] = evaluate(expression)

    def resolve(value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in map(resolve, value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if value == {"Ref": "AWS::NoValue"}:
            return _NO_VALUE
        if list(value) == ["Fn::If"]:
            name, when_true, when_false = value["Fn::If"]
            return resolve(when_true if conditions[name] else when_false)
        resolved = {key: resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    return {
        **template,
        "Resources": {
            logical_id: resolve(resource)
            for logical_id, resource in template["Resources"].items()
            if conditions.get(resource.get("Condition", ""), True)
        },
    }


@pytest.fixture(scope="module")
def with_defaults(transformed: dict[str, Any]) -> dict[str, Any]:
    return deployed(transformed)


@pytest.fixture(scope="module")
def with_key(transformed: dict[str, Any]) -> dict[str, Any]:
    return deployed(transformed, KmsKeyArn=KEY_ARN)


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource.get("Properties", {})
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------------------------------- template


def test_the_transformed_template_lints_clean(transformed: dict[str, Any]) -> None:
    matches = cfnlint.api.lint(
        json.dumps(transformed),
        config=ManualArgs(regions=["ap-southeast-1", "us-east-1", "eu-central-1"]),
    )
    assert [str(match) for match in matches] == []


def test_parameters_and_their_defaults(sam: dict[str, Any]) -> None:
    parameters = sam["Parameters"]
    assert parameters["DashScopeRegion"]["Default"] == "ap-southeast-1"
    assert set(parameters["DashScopeRegion"]["AllowedValues"]) == {
        "ap-southeast-1",
        "us-east-1",
        "cn-beijing",
        "eu-central-1",
    }
    assert parameters["DashScopeWorkspaceId"]["Default"] == ""
    assert parameters["DashScopeSecretArn"]["Default"] == ""
    assert parameters["DefaultModel"]["Default"] == "wan2.6-i2v-flash"
    assert parameters["PollIntervalSeconds"]["Default"] == 15
    assert parameters["NotificationEmail"]["Default"] == ""
    assert parameters["IntakeMaxConcurrency"]["Default"] == 2
    assert parameters["IntakeMaxConcurrency"]["MinValue"] == 2  # SQS event sources' minimum
    assert (parameters["ProviderRetries"]["Default"], parameters["ProviderRetries"]["MinValue"]) == (2, 0)
    assert sam["Resources"]["DashScopeSecret"]["Condition"] == "CreateDashScopeSecret"
    assert sam["Resources"]["JobTopicEmailSubscription"]["Condition"] == "HasNotificationEmail"


def test_no_api_key_is_written_in_the_template() -> None:
    assert not re.search(r"sk-[A-Za-z0-9]{8,}", TEMPLATE.read_text())


def test_globals_give_every_function_the_documented_environment(sam: dict[str, Any]) -> None:
    function_globals = sam["Globals"]["Function"]
    assert function_globals["Runtime"] == "python3.13"
    assert function_globals["Architectures"] == ["arm64"]
    assert function_globals["Tracing"] == "Active"
    assert function_globals["Layers"] == [{"Ref": "WanflowLayer"}]
    variables = function_globals["Environment"]["Variables"]
    documented = set(re.findall(r"^\| `(WANFLOW_[A-Z_]+)` \|", (REPO / "docs" / "architecture.md").read_text(), re.M))
    assert documented, "the architecture's environment table moved"
    assert documented <= set(variables)
    assert {name for name in variables if name.startswith("WANFLOW_")} == documented
    assert variables["POWERTOOLS_SERVICE_NAME"] == "wanflow"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "wanflow"
    assert "POWERTOOLS_LOG_LEVEL" in variables
    # The state machine ARN is built from the machine's fixed name (a Ref would be a dependency cycle).
    machine = sam["Resources"]["JobStateMachine"]["Properties"]
    assert machine["Name"] == {"Fn::Sub": "${AWS::StackName}-job"}
    assert variables["WANFLOW_STATE_MACHINE_ARN"]["Fn::Sub"].endswith(":stateMachine:${AWS::StackName}-job")


def test_functions_layer_and_handlers(sam: dict[str, Any]) -> None:
    functions = resources_of_type(sam, "AWS::Serverless::Function")
    assert set(functions) == set(FUNCTION_FOLDERS)
    handler = sam["Globals"]["Function"].get("Handler")
    for logical_id, properties in functions.items():
        folder = FUNCTION_FOLDERS[logical_id]
        assert properties["CodeUri"] == f"functions/{folder}/"
        assert (properties.get("Handler") or handler) == "app.lambda_handler"
        assert (REPO / "functions" / folder / "app.py").is_file()
        module = importlib.import_module(f"functions.{folder}.app")
        assert callable(module.lambda_handler)
    assert functions["FinalizeFunction"]["Timeout"] == 900
    assert functions["FinalizeFunction"]["MemorySize"] == 1024
    layer = sam["Resources"]["WanflowLayer"]
    assert layer["Properties"]["ContentUri"] == "layers/"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}
    assert (REPO / "layers" / "wanflow" / "__init__.py").is_file()
    assert (REPO / "layers" / "requirements.txt").is_file()


def test_intake_queue_and_event_source(sam: dict[str, Any]) -> None:
    queue = sam["Resources"]["IntakeQueue"]["Properties"]
    intake = sam["Resources"]["IntakeFunction"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * intake["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["IntakeDeadLetterQueue", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
    event = intake["Events"]["IntakeQueue"]
    assert event["Type"] == "SQS"
    assert event["Properties"]["BatchSize"] == 10
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["Properties"]["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "IntakeMaxConcurrency"}}
    notification = sam["Resources"]["IntakeBucket"]["Properties"]["NotificationConfiguration"]
    (queue_config,) = notification["QueueConfigurations"]
    assert queue_config["Queue"] == {"Fn::GetAtt": ["IntakeQueue", "Arn"]}
    assert queue_config["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "incoming/"}]
    sweeper_event = sam["Resources"]["SweeperFunction"]["Properties"]["Events"]["Sweep"]
    assert sweeper_event["Type"] == "ScheduleV2"
    assert sweeper_event["Properties"]["ScheduleExpression"] == "rate(5 minutes)"


@pytest.mark.parametrize("key", ["", KEY_ARN], ids=["aws-managed-keys", "customer-managed-key"])
def test_buckets_are_private_encrypted_versioned_and_tls_only(transformed: dict[str, Any], key: str) -> None:
    template = deployed(transformed, KmsKeyArn=key)
    buckets = resources_of_type(template, "AWS::S3::Bucket")
    assert set(buckets) == {"IntakeBucket", "OutputBucket"}
    policies = {
        properties["Bucket"]["Ref"]: properties["PolicyDocument"]
        for properties in resources_of_type(template, "AWS::S3::BucketPolicy").values()
    }
    for logical_id, properties in buckets.items():
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, logical_id
        (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"] == (
            {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Ref": "KmsKeyArn"}} if key else {"SSEAlgorithm": "AES256"}
        )
        assert rule["BucketKeyEnabled"] is True
        assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
        assert properties["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        assert properties["LifecycleConfiguration"]["Rules"]
        (deny,) = [s for s in policies[logical_id]["Statement"] if s["Effect"] == "Deny"]
        assert deny["Principal"] == "*"
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert len(deny["Resource"]) == 2  # the bucket and its objects
    assert "NotificationConfiguration" not in buckets["OutputBucket"]  # outputs never trigger intake


def test_topic_is_encrypted_and_tls_only(transformed: dict[str, Any]) -> None:
    (topic,) = resources_of_type(deployed(transformed), "AWS::SNS::Topic").values()
    assert topic["KmsMasterKeyId"] == "alias/aws/sns"
    (topic,) = resources_of_type(deployed(transformed, KmsKeyArn=KEY_ARN), "AWS::SNS::Topic").values()
    assert topic["KmsMasterKeyId"] == {"Ref": "KmsKeyArn"}
    policy = transformed["Resources"]["JobTopicPolicy"]["Properties"]
    assert policy["Topics"] == [{"Ref": "JobTopic"}]
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert "sns:Publish" in deny["Action"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_jobs_table_keys_indexes_recovery_and_ttl(transformed: dict[str, Any]) -> None:
    table = transformed["Resources"]["JobsTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]
    indexes = {
        index["IndexName"]: [(key["AttributeName"], key["KeyType"]) for key in index["KeySchema"]]
        for index in table["GlobalSecondaryIndexes"]
    }
    assert indexes == {
        "by_status": [("status", "HASH"), ("created_at", "RANGE")],
        "by_created": [("record_type", "HASH"), ("created_at", "RANGE")],
        "by_owner": [("owner", "HASH"), ("created_at", "RANGE")],
        "by_owner_status": [("owner_status", "HASH"), ("created_at", "RANGE")],
        "by_queue": [("queue_model", "HASH"), ("queue_rank", "RANGE")],
        "by_task": [("task_id", "HASH")],
        "by_batch": [("batch_id", "HASH"), ("batch_index", "RANGE")],
    }
    projections = {index["IndexName"]: index["Projection"] for index in table["GlobalSecondaryIndexes"]}
    # The queue and task indexes only answer "which jobs": they keep keys, not whole jobs.
    assert projections["by_queue"] == projections["by_task"] == {"ProjectionType": "KEYS_ONLY"}
    assert projections["by_batch"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["status"]}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert deployed(transformed)["Resources"]["JobsTable"]["Properties"]["SSESpecification"] == {"SSEEnabled": True}
    assert deployed(transformed, KmsKeyArn=KEY_ARN)["Resources"]["JobsTable"]["Properties"]["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Ref": "KmsKeyArn"},
    }


def iam_statements(transformed: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, role in resources_of_type(transformed, "AWS::IAM::Role").items():
        for policy in role.get("Policies", []):
            for statement in as_list(policy["PolicyDocument"]["Statement"]):
                yield logical_id, statement
    for logical_id, policy in resources_of_type(transformed, "AWS::IAM::ManagedPolicy").items():
        for statement in as_list(policy["PolicyDocument"]["Statement"]):
            yield logical_id, statement


def resource_text(resource: Any) -> str:
    """An IAM Resource as text: literal, or the template of its Fn::Sub."""
    if isinstance(resource, str):
        return resource
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        sub = resource["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return json.dumps(resource)  # Ref / GetAtt of one resource


@pytest.mark.parametrize("key", ["", KEY_ARN], ids=["aws-managed-keys", "customer-managed-key"])
def test_iam_is_least_privilege(transformed: dict[str, Any], key: str) -> None:
    transformed = deployed(transformed, KmsKeyArn=key)
    statements = list(iam_statements(transformed))
    assert statements
    for role, statement in statements:
        if statement["Effect"] != "Allow":
            continue
        actions = as_list(statement["Action"])
        resources = [resource_text(resource) for resource in as_list(statement["Resource"])]
        for action in actions:
            assert "*" not in action, (role, action)
        for resource in resources:
            if resource == "*":
                assert set(actions) <= STAR_RESOURCE_ACTIONS, (role, actions)
            else:
                # A whole service or account ("arn:aws:s3:::*", "...:table/*") is as wide as "*".
                assert not re.fullmatch(r"arn:[^:]*:[^:]*:[^:]*:[^:]*:(\*|[a-z-]+/\*)", resource), (role, resource)
                assert not resource.endswith(":::*"), (role, resource)
    for role_id, role in resources_of_type(transformed, "AWS::IAM::Role").items():
        for arn in role.get("ManagedPolicyArns", []):
            assert resource_text(arn).rsplit("/", 1)[-1] in ALLOWED_MANAGED_POLICIES, (role_id, arn)


def test_without_a_customer_managed_key_nothing_refers_to_one(with_defaults: dict[str, Any]) -> None:
    assert '{"Ref": "KmsKeyArn"}' not in json.dumps(with_defaults["Resources"])
    assert "AWS::IAM::ManagedPolicy" not in {resource["Type"] for resource in with_defaults["Resources"].values()}
    for role, statement in iam_statements(with_defaults):
        assert not any(action.startswith("kms:") for action in as_list(statement["Action"])), role
    # Lambda encrypts the environment with its AWS managed key by itself.
    for function in resources_of_type(with_defaults, "AWS::Lambda::Function").values():
        assert "KmsKeyArn" not in function


def test_a_customer_managed_key_encrypts_every_store_and_only_the_functions_may_use_it(
    sam: dict[str, Any], with_key: dict[str, Any]
) -> None:
    parameter = sam["Parameters"]["KmsKeyArn"]
    assert parameter["Default"] == ""
    for value, allowed in [
        ("", True),
        (KEY_ARN, True),
        ("alias/wanflow", False),
        ("arn:aws:kms:ap-southeast-1:123456789012:alias/wanflow", False),
    ]:
        assert bool(re.fullmatch(parameter["AllowedPattern"], value)) is allowed, value
    # S3 notifications, CloudWatch Logs and SNS deliveries need the key policy to let their services use the key.
    for service in ("s3.amazonaws.com", "logs.REGION.amazonaws.com", "sns.amazonaws.com"):
        assert service in parameter["Description"]

    key = {"Ref": "KmsKeyArn"}
    resources = with_key["Resources"]
    assert resources["JobsTable"]["Properties"]["SSESpecification"]["KMSMasterKeyId"] == key
    assert resources["JobTopic"]["Properties"]["KmsMasterKeyId"] == key
    for secret in resources_of_type(with_key, "AWS::SecretsManager::Secret").values():
        assert secret["KmsKeyId"] == key
    for queue in resources_of_type(with_key, "AWS::SQS::Queue").values():
        assert queue["KmsMasterKeyId"] == key
        assert "SqsManagedSseEnabled" not in queue
    for bucket in resources_of_type(with_key, "AWS::S3::Bucket").values():
        (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == key
    for log_group in resources_of_type(with_key, "AWS::Logs::LogGroup").values():
        assert log_group["KmsKeyId"] == key
    functions = resources_of_type(with_key, "AWS::Lambda::Function")
    for function in functions.values():
        assert function["KmsKeyArn"] == key

    # One policy, on the six function roles only, to use (not administer) this key only.
    (policy,) = resources_of_type(with_key, "AWS::IAM::ManagedPolicy").values()
    assert sorted(role["Ref"] for role in policy["Roles"]) == sorted(
        function["Role"]["Fn::GetAtt"][0] for function in functions.values()
    )
    kms_statements = [
        (role, statement)
        for role, statement in iam_statements(with_key)
        if any(action.startswith("kms:") for action in as_list(statement["Action"]))
    ]
    assert kms_statements
    for role, statement in kms_statements:
        assert role == "KmsKeyUsePolicy"
        assert set(as_list(statement["Action"])) <= KMS_ACTIONS
        assert statement["Resource"] == key


@pytest.mark.parametrize("key", ["", KEY_ARN], ids=["aws-managed-keys", "customer-managed-key"])
def test_every_queue_is_encrypted(transformed: dict[str, Any], key: str) -> None:
    queues = resources_of_type(deployed(transformed, KmsKeyArn=key), "AWS::SQS::Queue")
    assert set(queues) == {
        "IntakeQueue",
        "IntakeDeadLetterQueue",
        "SweeperDeadLetterQueue",
        "WebhookQueue",
        "WebhookDeadLetterQueue",
    }
    for logical_id, queue in queues.items():
        # SQS-managed encryption by default: S3 may send to it without any key policy.
        assert (queue.get("KmsMasterKeyId") == {"Ref": "KmsKeyArn"}) if key else (queue["SqsManagedSseEnabled"] is True)
        assert queue["MessageRetentionPeriod"] == 1209600, logical_id


def test_every_function_reserves_concurrency_unless_told_not_to(
    sam: dict[str, Any], transformed: dict[str, Any]
) -> None:
    parameter = sam["Parameters"]["ReserveConcurrency"]
    assert parameter["Default"] == "true"
    assert set(parameter["AllowedValues"]) == {"true", "false"}
    reserved = {
        logical_id: function.get("ReservedConcurrentExecutions")
        for logical_id, function in resources_of_type(deployed(transformed), "AWS::Lambda::Function").items()
    }
    assert set(reserved) == set(FUNCTION_FOLDERS)
    # Never below the SQS event source's maximum concurrency (throttled batches would count as receives).
    assert reserved.pop("IntakeFunction") == {"Ref": "IntakeMaxConcurrency"}
    assert reserved == RESERVED_CONCURRENCY  # 0 would disable a function
    total = sum(RESERVED_CONCURRENCY.values()) + sam["Parameters"]["IntakeMaxConcurrency"]["Default"]
    assert f"{total} together with the defaults" in " ".join(parameter["Description"].split())
    # The API may take as many concurrent requests as the stage lets through in a burst.
    burst = sam["Resources"]["HttpApi"]["Properties"]["DefaultRouteSettings"]["ThrottlingBurstLimit"]
    assert RESERVED_CONCURRENCY["ApiFunction"] >= burst
    # Accounts with a small concurrency quota deploy without reservations.
    unreserved = deployed(transformed, ReserveConcurrency="false")
    for function in resources_of_type(unreserved, "AWS::Lambda::Function").values():
        assert "ReservedConcurrentExecutions" not in function


def test_the_http_api_writes_access_logs_without_bodies_or_headers(
    sam: dict[str, Any], transformed: dict[str, Any]
) -> None:
    (stage,) = resources_of_type(transformed, "AWS::ApiGatewayV2::Stage").values()
    settings = stage["AccessLogSettings"]
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["HttpApiAccessLogs", "Arn"]}
    fields = json.loads(settings["Format"])  # one JSON object per request
    assert fields == {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "requestTime": "$context.requestTime",
        "httpMethod": "$context.httpMethod",
        "routeKey": "$context.routeKey",
        "status": "$context.status",
        "protocol": "$context.protocol",
        "responseLength": "$context.responseLength",
        "integrationErrorMessage": "$context.integrationErrorMessage",
    }
    # Bodies, headers (Authorization, presigned URLs) and query strings never reach the log.
    assert not re.search(r"body|header|authoriz|querystring|\$input|\$request\.", settings["Format"], re.I)
    log_group = sam["Resources"]["HttpApiAccessLogs"]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["RetentionInDays"] == 365


def test_only_the_asynchronously_invoked_sweeper_has_a_lambda_dead_letter_queue(with_defaults: dict[str, Any]) -> None:
    functions = resources_of_type(with_defaults, "AWS::Lambda::Function")
    assert {logical_id for logical_id, function in functions.items() if "DeadLetterConfig" in function} == {
        "SweeperFunction"
    }
    dlq = {"Fn::GetAtt": ["SweeperDeadLetterQueue", "Arn"]}
    assert functions["SweeperFunction"]["DeadLetterConfig"] == {"TargetArn": dlq}
    assert any(
        statement["Resource"] == dlq and as_list(statement["Action"]) == ["sqs:SendMessage"]
        for role, statement in iam_statements(with_defaults)
        if role == "SweeperFunctionRole"
    )


def test_the_state_machine_may_invoke_only_its_four_functions(transformed: dict[str, Any]) -> None:
    role = transformed["Resources"]["JobStateMachineRole"]["Properties"]
    invoked = set()
    for policy in role["Policies"]:
        for statement in as_list(policy["PolicyDocument"]["Statement"]):
            assert as_list(statement["Action"]) == ["lambda:InvokeFunction"]
            invoked.add(statement["Resource"]["Fn::Sub"][1]["functionName"]["Ref"])
    assert invoked == {"CreateTaskFunction", "StatusFunction", "FinalizeFunction", "RecordFailureFunction"}
    machine = transformed["Resources"]["JobStateMachine"]["Properties"]
    assert machine["StateMachineType"] == "STANDARD"
    assert machine["TracingConfiguration"] == {"Enabled": True}
    assert set(machine["DefinitionSubstitutions"]) == {
        "CreateTaskFunctionArn",
        "StatusFunctionArn",
        "FinalizeFunctionArn",
        "RecordFailureFunctionArn",
    }


def test_every_http_route_requires_iam_auth(sam: dict[str, Any], transformed: dict[str, Any]) -> None:
    auth = sam["Resources"]["HttpApi"]["Properties"]["Auth"]
    assert auth["DefaultAuthorizer"] == "AWS_IAM"
    body = transformed["Resources"]["HttpApi"]["Properties"]["Body"]
    operations = [operation for path in body["paths"].values() for operation in path.values()]
    routes = [event for event in sam["Resources"]["ApiFunction"]["Properties"]["Events"].values()]
    assert len(operations) == len(routes) >= 10
    for operation in operations:
        assert operation["security"] == [{"AWS_IAM": []}]
        assert operation["x-amazon-apigateway-integration"]["payloadFormatVersion"] == "2.0"


def test_outputs(sam: dict[str, Any]) -> None:
    assert set(sam["Outputs"]) == {
        "ApiUrl",
        "IntakeBucketName",
        "OutputBucketName",
        "TopicArn",
        "StateMachineArn",
        "JobsTableName",
        "DashScopeSecretArn",
        "WebhookSecretArn",
        "DashboardUrl",
        "AlarmTopicArn",
    }
    assert sam["Outputs"]["AlarmTopicArn"]["Condition"] == "HasAlarmEmail"


# ------------------------------------------------------------------------------------------- state machine


def test_the_state_machine_graph_is_sound() -> None:
    definition = json.loads(ASL.read_text())
    states = definition["States"]
    terminal = {"Succeed", "Fail"}

    def exits(name: str) -> set[str]:
        state = states[name]
        targets = {state["Next"]} if "Next" in state else set()
        targets |= {choice["Next"] for choice in state.get("Choices", [])}
        if "Default" in state:
            targets.add(state["Default"])
        targets |= {catch["Next"] for catch in state.get("Catch", [])}
        return targets

    for name, state in states.items():
        assert exits(name) <= set(states), f"{name} leads to a state that does not exist"
        if state["Type"] in terminal:
            assert not exits(name), name
        else:
            assert exits(name) or state.get("End") is True, f"{name} has no way out"

    reachable, frontier = set(), [definition["StartAt"]]
    while frontier:
        name = frontier.pop()
        if name not in reachable:
            reachable.add(name)
            frontier.extend(exits(name))
    assert reachable == set(states), f"unreachable: {set(states) - reachable}"

    # Every state can still reach an end (no loop without an exit).
    can_end = {name for name, state in states.items() if state["Type"] in terminal or state.get("End")}
    changed = True
    while changed:
        changed = False
        for name in states:
            if name not in can_end and exits(name) & can_end:
                can_end.add(name)
                changed = True
    assert can_end == set(states)


def test_the_state_machine_is_the_documented_loop() -> None:
    machine = json.loads(ASL.read_text())
    states = machine["States"]
    # A granted job's execution creates its task first, and comes back to it after a throttled create.
    assert machine["StartAt"] == "CreateTask"
    create = states["CreateTask"]
    assert create["Resource"] == "${CreateTaskFunctionArn}" and create["ResultPath"] == "$.poll"
    assert create["Next"] == "NextStep" and create["Catch"][0]["Next"] == "RecordFailure"
    assert states["WaitToCreate"] == {"Type": "Wait", "SecondsPath": "$.poll.wait_seconds", "Next": "CreateTask"}
    assert states["Wait"] == {"Type": "Wait", "SecondsPath": "$.poll.wait_seconds", "Next": "CheckStatus"}
    check = states["CheckStatus"]
    assert check["Resource"] == "${StatusFunctionArn}"
    assert check["ResultPath"] == "$.poll"
    retried = {error for retrier in check["Retry"] for error in retrier["ErrorEquals"]}
    assert {
        "Lambda.ServiceException",
        "Lambda.TooManyRequestsException",
        "Lambda.SdkClientException",
        "States.Timeout",
        "TransientError",
    } <= retried
    assert check["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "RecordFailure"}]
    choice = states[check["Next"]]
    assert {(c["Variable"], c["StringEquals"], c["Next"]) for c in choice["Choices"]} == {
        ("$.poll.next", "submit", "WaitToCreate"),
        ("$.poll.next", "wait", "Wait"),
        ("$.poll.next", "finalize", "Finalize"),
        ("$.poll.next", "fail", "RecordFailure"),
    }
    assert choice["Default"] == "RecordFailure"
    assert "TransientError" in {error for r in states["Finalize"]["Retry"] for error in r["ErrorEquals"]}
    assert states["Finalize"]["Catch"][0]["Next"] == "RecordFailure"
    assert states[states["Finalize"]["Next"]]["Type"] == "Succeed"
    assert states["RecordFailure"]["Retry"]
    assert states[states["RecordFailure"]["Catch"][0]["Next"]]["Type"] == "Fail"
    assert states[states["RecordFailure"]["Next"]]["Type"] == "Succeed"


# ------------------------------------------------------------------------------------------- API contract


def test_the_openapi_document_is_valid_and_matches_the_routes(sam: dict[str, Any]) -> None:
    spec, base_uri = read_from_filename(str(OPENAPI))
    validate_openapi(spec, base_uri=base_uri)  # also resolves the job schema in schemas/
    assert spec["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    routes = {
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"])
        for event in sam["Resources"]["ApiFunction"]["Properties"]["Events"].values()
        if event["Type"] == "HttpApi"
    }
    assert documented == routes
    create = spec["paths"]["/v1/jobs"]["post"]["responses"]
    assert "Location" in create["202"]["headers"]
    assert {"400", "409", "413", "429"} <= set(create)
    assert "Retry-After" in spec["components"]["responses"]["Throttled"]["headers"]
    assert set(spec["components"]["schemas"]["Error"]["required"]) == {"code", "message", "errors", "request_id"}
    assert spec["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"


def test_the_event_schema_is_valid_and_the_sample_notification_matches() -> None:
    schema = json.loads(EVENT_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    sample = json.loads((EVENTS / "notification-job-succeeded.json").read_text())
    validator.validate(sample)
    failed = copy.deepcopy(sample)
    failed["type"] = "job.failed"  # still SUCCEEDED inside: the schema ties type to status
    assert list(validator.iter_errors(failed))
    failed["job"]["status"] = "FAILED"
    failed["job"]["error"] = {"code": "DataInspectionFailed", "message": "inappropriate content"}
    validator.validate(failed)
    assert list(validator.iter_errors({**sample, "time": "yesterday"}))


def test_the_sample_notification_of_a_job_that_succeeded_after_a_retry_matches_the_schema() -> None:
    validator = jsonschema.Draft202012Validator(
        json.loads(EVENT_SCHEMA.read_text()), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    sample = json.loads((EVENTS / "notification-job-succeeded-after-retry.json").read_text())
    validator.validate(sample)
    attempts = sample["job"]["attempts"]
    assert [attempt["status"] for attempt in attempts] == ["FAILED", "SUCCEEDED"]
    assert attempts[-1]["task_id"] == sample["job"]["provider"]["task_id"]
    broken = copy.deepcopy(sample)
    del broken["job"]["attempts"][0]["started"]
    assert list(validator.iter_errors(broken))


# ------------------------------------------------------------------------------------------- sample events


def test_sample_api_events_cover_every_route(sam: dict[str, Any]) -> None:
    routes = {
        f"{event['Properties']['Method'].upper()} {event['Properties']['Path']}"
        for event in sam["Resources"]["ApiFunction"]["Properties"]["Events"].values()
    }
    samples = [json.loads(path.read_text()) for path in sorted(EVENTS.glob("api-*.json"))]
    assert {sample["routeKey"] for sample in samples} == routes
    for sample in samples:
        assert sample["version"] == "2.0"
        assert sample["requestContext"]["routeKey"] == sample["routeKey"]
        assert sample["requestContext"]["authorizer"]["iam"]["userArn"]
        if "body" in sample:
            json.loads(sample["body"])


def test_sample_sqs_event_carries_an_s3_put_under_incoming() -> None:
    event = json.loads((EVENTS / "sqs-intake-s3-put.json").read_text())
    (record,) = event["Records"]
    assert record["eventSource"] == "aws:sqs"
    (s3_record,) = json.loads(record["body"])["Records"]
    assert s3_record["eventName"].startswith("ObjectCreated:")
    assert s3_record["s3"]["object"]["key"] == "incoming/cat.png"
    assert s3_record["s3"]["object"]["versionId"]


def test_sample_state_machine_and_scheduler_events(sam: dict[str, Any]) -> None:
    for name in ("sfn-status.json", "sfn-finalize.json", "sfn-record-failure.json", "sfn-record-failure-caught.json"):
        state = json.loads((EVENTS / name).read_text())
        assert state["job_id"]
        assert set(state["poll"]) == {"next", "wait_seconds", "polls"}
    caught = json.loads((EVENTS / "sfn-record-failure-caught.json").read_text())
    assert set(caught["error"]) == {"Error", "Cause"}
    schedule = json.loads((EVENTS / "scheduler-sweeper.json").read_text())
    schedule_input = sam["Resources"]["SweeperFunction"]["Properties"]["Events"]["Sweep"]["Properties"]["Input"]
    assert set(schedule) == set(json.loads(schedule_input))


def test_the_intake_knows_how_often_its_queue_delivers_a_message(transformed: dict[str, Any]) -> None:
    variables = transformed["Resources"]["IntakeFunction"]["Properties"]["Environment"]["Variables"]
    queue = transformed["Resources"]["IntakeQueue"]["Properties"]
    assert int(variables["WANFLOW_INTAKE_MAX_RECEIVES"]) == queue["RedrivePolicy"]["maxReceiveCount"]


def test_an_undeliverable_notification_raises_an_alarm(transformed: dict[str, Any]) -> None:
    alarm = transformed["Resources"]["UndeliverableNotificationAlarm"]["Properties"]
    # The metric the sweeper handler emits for the repair named in wanflow.usecases.sweep.
    assert (alarm["Namespace"], alarm["MetricName"]) == ("wanflow", "Sweeper_notification_undeliverable")
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"


def test_the_finalizer_outlasts_throttling_for_as_long_as_the_video_url_is_valid() -> None:
    states = json.loads((REPO / "statemachine" / "job.asl.json").read_text())["States"]
    (transient,) = [retry for retry in states["Finalize"]["Retry"] if retry["ErrorEquals"] == ["TransientError"]]
    waits, delay = [], float(transient["IntervalSeconds"])
    for _ in range(transient["MaxAttempts"]):
        waits.append(min(delay, transient["MaxDelaySeconds"]))
        delay *= transient["BackoffRate"]
    # With full jitter each wait is uniform in [0, bound]: on average half of it. Half the bounds must still
    # cover the 24 hours a video URL lives, so a job only fails on a verdict (the URL expired), not on throttling.
    assert sum(waits) / 2 >= 24 * 3600
    assert transient["JitterStrategy"] == "FULL"
