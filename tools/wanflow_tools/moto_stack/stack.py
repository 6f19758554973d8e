"""The whole wanflow stack on loopback: a moto server built from template.yaml, handlers run in-process.

    with MotoStack(state_dir=tmp, dashscope_base_url="http://127.0.0.1:8080/api/v1",
                   dashscope_api_key="sk-local", api_port=8000) as stack:
        stack.api_url, stack.aws_endpoint, stack.resources["IntakeBucket"], stack.notifications()

What it does, in order:

1. starts moto's server in this process (`ThreadedMotoServer`) and switches on Step Functions
   execution (moto's ASL interpreter), through the server's `/moto-api/config` endpoint;
2. patches moto's Lambda service so that invocations run the template's handlers in this process
   (`wanflow_tools.moto_stack.lambdas`), and moto's S3 events so that they carry `versionId` and `sequencer`
   as S3's do;
3. creates every resource of template.yaml, read from the template itself: queues (with redrive),
   topic, table (GSIs, TTL), the DashScope secret, buckets (versioning, S3 -> SQS notification),
   Lambda functions (dummy code; the patch runs the real handlers), the state machine (definition from
   DefinitionUri with DefinitionSubstitutions resolved to the local function ARNs);
4. resolves the Globals environment against the local names, overlays the local endpoint and
   credentials, and sets it in `os.environ` (all handlers share this process and the Globals env);
5. starts the event sources: the intake queue's poller, the notification sink, the HTTP API
   (when api_port is not None); the sweeper schedule runs on demand (`run_sweeper`) or periodically
   (`start_schedules`).

Since the environment, the moto backends and the patches are process-wide, one MotoStack runs per
process at a time. `stop()` undoes everything, in reverse.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import secrets
import socket
import string
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import httpx
from botocore.config import Config

from wanflow import redaction
from wanflow_tools.moto_stack.apigw import LocalHttpApi, Page
from wanflow_tools.moto_stack.events import Schedule, SqsEventSource
from wanflow_tools.moto_stack.inprocess import InProcessAws
from wanflow_tools.moto_stack.lambdas import Handler, InvocationResult, LambdaRuntime, LocalFunction, MotoLambdaPatch
from wanflow_tools.moto_stack.notifications import Notification, NotificationSink
from wanflow_tools.moto_stack.template import DEFAULT_TEMPLATE, FunctionSpec, SamTemplate, TemplateError

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
STACK_NAME = "wanflow-local"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

# Template resource types the local stack does not create, and why. Any other type is an error, so
# that a resource added to template.yaml is either emulated or consciously listed here.
NOT_EMULATED = {
    "AWS::S3::BucketPolicy": "moto does not enforce bucket policies",
    "AWS::SQS::QueuePolicy": "moto does not enforce queue policies",
    "AWS::SNS::TopicPolicy": "moto does not enforce topic policies",
    "AWS::IAM::Role": "moto does not enforce IAM; functions share one local role",
    "AWS::Serverless::LayerVersion": "the layer package is imported from the repository",
    "AWS::Serverless::HttpApi": "served by wanflow_tools.moto_stack.apigw",
    "AWS::Logs::LogGroup": "no CloudWatch Logs offline; the local HTTP API logs requests itself",
    "AWS::CloudWatch::Alarm": "no CloudWatch offline (local mode publishes no metrics)",
    "AWS::CloudWatch::Dashboard": "no CloudWatch offline (local mode publishes no metrics)",
    "AWS::KMS::Key": "only the alarm topic's (with AlarmEmail, which local mode does not set); moto encrypts nothing",
}
# Logical-id suffixes dropped from readable local names: IntakeBucket -> wanflow-local-intake.
_NAME_SUFFIXES = ("Bucket", "Table", "Function")

_active_lock = threading.Lock()
_active: MotoStack | None = None


class MotoStack:
    def __init__(
        self,
        *,
        state_dir: Path | str,
        aws_port: int = 0,
        api_port: int | None = None,
        host: str = "127.0.0.1",
        dashscope_base_url: str | None,
        dashscope_api_key: str,
        poll_interval_seconds: float | None = None,
        template_path: Path | str = DEFAULT_TEMPLATE,
        parameter_overrides: Mapping[str, Any] | None = None,
        handlers: Mapping[str, Handler] | None = None,
        on_notification: Callable[[Notification], None] | None = None,
        stack_name: str = STACK_NAME,
        in_process_aws: bool = False,
        environment: Mapping[str, str] | None = None,
        pages: Callable[[str, str], Page | None] | None = None,
    ) -> None:
        """
        state_dir: where notifications.jsonl is written (created if missing).
        aws_port: the moto server's port (0: a free one). api_port: the HTTP API's (None: no HTTP server).
        dashscope_base_url: DASHSCOPE_BASE_URL for the handlers (None: the region's real endpoint).
        dashscope_api_key: stored in the stack's DashScope secret.
        poll_interval_seconds: WANFLOW_POLL_INTERVAL_SECONDS (None: the template's default).
        handlers: logical id -> callable replacing that function's handler (tests).
        on_notification: called with every notification record (e.g. to print it).
        in_process_aws: this process's AWS calls to the moto server skip loopback HTTP and call its WSGI
            application directly (wanflow_tools.moto_stack.inprocess): about half the CPU per request, for load
            tests; other processes still use the server.
        environment: extra variables for every handler, over the template's (e.g. local mode's
            WANFLOW_WEBHOOK_ALLOW_LOOPBACK, or tests' short WANFLOW_WEBHOOK_RETRY_SECONDS).
        pages: static pages the HTTP API serves beside its routes (local mode's web console).
        """
        self._state_dir = Path(state_dir)
        self._aws_port = aws_port
        self._api_port = api_port
        self._pages = pages
        self._host = host
        self._dashscope_base_url = dashscope_base_url
        self._dashscope_api_key = dashscope_api_key
        # The key goes into a secret through botocore, which logs request bodies at DEBUG: keep it out of every log.
        redaction.install()
        redaction.register_secret(dashscope_api_key)
        self._poll_interval_seconds = poll_interval_seconds
        self._template_path = Path(template_path)
        self._parameter_overrides = dict(parameter_overrides or {})
        self._handler_overrides = dict(handlers or {})
        self._on_notification = on_notification
        self._stack_name = stack_name
        self._in_process_aws = in_process_aws
        self._in_process: InProcessAws | None = None
        self._extra_environment = dict(environment or {})

        self._template: SamTemplate | None = None
        self._server: Any = None
        self._endpoint: str | None = None
        self._refs: dict[str, Any] = {}
        self._attributes: dict[tuple[str, str], Any] = {}
        self._function_env: dict[str, dict[str, str]] = {}
        self._env: dict[str, str] = {}
        self._saved_environ: dict[str, str | None] = {}
        self._runtime: LambdaRuntime | None = None
        self._lambda_patch: MotoLambdaPatch | None = None
        self._s3_event_patch: _S3EventPatch | None = None
        self._dynamodb_patch: DynamoDbAtomicity | None = None
        self._dispatch_cache: MotoDispatchCache | None = None
        self._sqs_sources: dict[str, SqsEventSource] = {}
        self._schedules: dict[str, Schedule] = {}
        self._sink: NotificationSink | None = None
        self._http_api: LocalHttpApi | None = None
        self._previous_moto_config: dict[str, Any] | None = None
        self._saved_log_levels: dict[str, int] = {}
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> MotoStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> MotoStack:
        global _active
        with _active_lock:
            if _active is not None:
                raise RuntimeError(
                    "a MotoStack is already running in this process (the environment, "
                    "moto's backends and the Lambda patch are process-wide)"
                )
            _active = self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._started = True
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._template = SamTemplate.load(
            self._template_path, self._parameter_overrides, pseudo_parameters=self._pseudo_parameters()
        )

        # moto's server logs every request at INFO; that is noise next to the stack's own output.
        self._quiet_loggers()
        if self._aws_port:
            # ThreadedMotoServer.start() would wait forever for a server that failed to bind.
            _check_port_free(self._host, self._aws_port)
        self._dispatch_cache = MotoDispatchCache()
        self._dispatch_cache.install()
        self._server = ThreadedMotoServer(ip_address=self._host, port=self._aws_port, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self._endpoint = f"http://{host}:{port}"
        if self._in_process_aws:
            self._in_process = InProcessAws(self._server._server.app, host, port)
            self._in_process.install()
        # moto's ASL interpreter calls Lambda through the server at localhost:$MOTO_PORT.
        self._set_environ({"MOTO_PORT": str(port)})
        self._moto_api("reset")
        # The server runs in this process, so its configuration is this module-level dict; remember the
        # Step Functions part to put it back on stop.
        from moto.core.config import default_user_config

        self._previous_moto_config = {"stepfunctions": dict(default_user_config.get("stepfunctions") or {})}
        self._moto_api("config", {"stepfunctions": {"execute_state_machine": True}})

        self._create_resources()

        self._runtime = LambdaRuntime(self._local_functions())
        self._lambda_patch = MotoLambdaPatch(self._runtime)
        self._lambda_patch.install()
        self._set_environ(self._env)
        _reset_wanflow_caches()

        self._start_event_sources()

    def stop(self) -> None:
        global _active
        try:
            if self._started:
                self._stop()
        finally:
            with _active_lock:
                if _active is self:
                    _active = None

    def _stop(self) -> None:
        # Every step runs even if an earlier one failed: the process must get its environment back.
        self._started = False
        steps: list[Callable[[], None]] = []
        if self._http_api is not None:
            steps.append(self._http_api.stop)
        steps.extend(schedule.stop for schedule in self._schedules.values())
        steps.extend(source.stop for source in self._sqs_sources.values())
        if self._sink is not None:
            steps.append(self._sink.stop)
        if self._server is not None and self._endpoint is not None:
            steps.append(self._stop_executions)
        if self._lambda_patch is not None:
            steps.append(self._lambda_patch.uninstall)
        if self._in_process is not None:
            steps.append(self._in_process.uninstall)
        if self._s3_event_patch is not None:
            steps.append(self._s3_event_patch.uninstall)
        if self._dynamodb_patch is not None:
            steps.append(self._dynamodb_patch.uninstall)
        if self._server is not None:
            steps.append(lambda: self._moto_api("reset"))
            if self._previous_moto_config is not None:
                steps.append(lambda: self._moto_api("config", self._previous_moto_config))
            steps.append(self._server.stop)
        if self._dispatch_cache is not None:
            steps.append(self._dispatch_cache.uninstall)
        steps.extend([self._restore_environ, _reset_wanflow_caches, self._restore_loggers])
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:
                log.exception("stopping the local stack: %s failed", getattr(step, "__qualname__", step))
                errors.append(exc)
        self._http_api = self._sink = self._server = self._lambda_patch = self._s3_event_patch = None
        self._dynamodb_patch = self._dispatch_cache = self._in_process = None
        self._sqs_sources, self._schedules = {}, {}
        if errors:
            raise errors[0]

    # -- public API --------------------------------------------------------------------------------

    @property
    def aws_endpoint(self) -> str:
        """The moto server, e.g. http://127.0.0.1:5000 (AWS_ENDPOINT_URL for any AWS SDK)."""
        assert self._endpoint is not None, "start the stack first"
        return self._endpoint

    @property
    def api_url(self) -> str | None:
        """The HTTP API's base URL, or None when the stack runs without it."""
        return self._http_api.url if self._http_api is not None else None

    @property
    def region(self) -> str:
        return REGION

    @property
    def account_id(self) -> str:
        return ACCOUNT_ID

    @property
    def resources(self) -> dict[str, Any]:
        """Logical id -> what CloudFormation's Ref returns locally (bucket/table/function name, queue URL,
        topic/secret/state machine ARN)."""
        return dict(self._refs)

    def attribute(self, logical_id: str, name: str) -> Any:
        """What Fn::GetAtt returns locally, e.g. attribute("IntakeQueue", "Arn")."""
        return self._attributes[(logical_id, name)]

    @property
    def env(self) -> dict[str, str]:
        """The Lambda environment every handler runs with (Globals resolved, plus the local overlay)."""
        return dict(self._env)

    @property
    def function_env(self) -> dict[str, dict[str, str]]:
        """Logical id -> that function's environment as the template declares it, resolved locally."""
        return {logical_id: dict(env) for logical_id, env in self._function_env.items()}

    @property
    def template(self) -> SamTemplate:
        assert self._template is not None, "start the stack first"
        return self._template

    @property
    def lambdas(self) -> LambdaRuntime:
        assert self._runtime is not None, "start the stack first"
        return self._runtime

    @property
    def notifications_path(self) -> Path:
        return self._state_dir / "notifications.jsonl"

    def boto3_client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for the local endpoint with the local credentials and region."""
        options: dict[str, Any] = {
            "endpoint_url": self.aws_endpoint,
            "region_name": REGION,
            **CREDENTIALS,
            "config": Config(retries={"max_attempts": 3, "mode": "standard"}),
        }
        options.update(kwargs)
        # boto3-stubs type client() for literal service names only; this helper takes any name.
        return boto3.client(service, **options)  # type: ignore[call-overload]

    def invoke(self, name_or_logical_id: str, event: Any) -> InvocationResult:
        """Invoke a function in-process, as a synchronous Lambda invoke would."""
        return self.lambdas.invoke(name_or_logical_id, event)

    def notifications(self) -> list[Notification]:
        """Every notification received so far (see wanflow_tools.moto_stack.notifications for the shape)."""
        return self._sink.notifications() if self._sink is not None else []

    def wait_for_notifications(self, count: int, timeout: float) -> list[Notification]:
        """Block until `count` notifications have arrived; TimeoutError after `timeout` seconds."""
        assert self._sink is not None, "start the stack first"
        return self._sink.wait_for(count, timeout)

    def sqs_event_source(self, function_logical_id: str) -> SqsEventSource:
        """The SQS poller feeding a function (e.g. "IntakeFunction"), to wait on its progress."""
        return self._sqs_sources[function_logical_id]

    def run_sweeper(self) -> InvocationResult:
        """Invoke every scheduled function (the sweeper) once, now, with its schedule's Input."""
        results = [schedule.run() for schedule in self._schedules.values()]
        if len(results) != 1:
            raise TemplateError(f"expected one scheduled function, found {len(results)}")
        return results[0]

    def start_schedules(self, interval_seconds: float | None = None) -> None:
        """Run the scheduled functions periodically (default: their template rate, e.g. 5 minutes)."""
        for schedule in self._schedules.values():
            schedule.start(interval_seconds)

    def wait_for_execution(self, execution_arn: str, timeout: float) -> dict[str, Any]:
        """Wait until a Step Functions execution leaves RUNNING and return describe_execution.

        moto has no completion callback, so this asks the server at most every 50 ms until a deadline.
        """
        sfn = self.boto3_client("stepfunctions")
        deadline = time.monotonic() + timeout
        stopping = threading.Event()
        while True:
            description = sfn.describe_execution(executionArn=execution_arn)
            if description["status"] != "RUNNING":
                return description
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"execution {execution_arn} still RUNNING after {timeout} s")
            stopping.wait(min(0.05, remaining))

    # -- building the stack ------------------------------------------------------------------------

    def _pseudo_parameters(self) -> dict[str, Any]:
        return {
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self._stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{self._stack_name}/"
            f"{uuid.uuid5(uuid.NAMESPACE_URL, self._stack_name)}",
            "AWS::NotificationARNs": [],
        }

    def local_name(self, logical_id: str) -> str:
        """Readable physical name: IntakeBucket -> wanflow-local-intake, IntakeQueue -> wanflow-local-intake-queue."""
        base = logical_id
        for suffix in _NAME_SUFFIXES:
            if base.endswith(suffix) and base != suffix:
                base = base[: -len(suffix)]
                break
        words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", base).lower()
        return f"{self._stack_name}-{words}"

    def _resolve(self, value: Any) -> Any:
        resolver = self.template.resolver(self._refs, lambda logical_id, name: self._attributes.get((logical_id, name)))
        return resolver.resolve(value)

    def _create_resources(self) -> None:
        template = self.template
        handled = {
            "AWS::SQS::Queue",
            "AWS::SNS::Topic",
            "AWS::SNS::Subscription",
            "AWS::DynamoDB::Table",
            "AWS::SecretsManager::Secret",
            "AWS::S3::Bucket",
            "AWS::Serverless::Function",
            "AWS::Serverless::StateMachine",
        }
        unknown = {
            f"{logical_id} ({resource['Type']})"
            for logical_id, resource in template.resources.items()
            if resource["Type"] not in handled and resource["Type"] not in NOT_EMULATED
        }
        if unknown:
            raise TemplateError(
                f"the local stack cannot create {sorted(unknown)}: emulate them in "
                f"wanflow_tools/moto_stack/stack.py or list them in NOT_EMULATED"
            )
        for logical_id, resource in template.resources.items():
            if resource["Type"] == "AWS::Serverless::LayerVersion":
                self._refs[logical_id] = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:layer:{self.local_name(logical_id)}:1"
            elif resource["Type"] == "AWS::Serverless::HttpApi":
                self._refs[logical_id] = "local"

        self._create_queues()
        self._create_topics()
        self._create_subscriptions()
        self._create_tables()
        self._create_secrets()
        self._s3_event_patch = _S3EventPatch()
        self._s3_event_patch.install()
        self._dynamodb_patch = DynamoDbAtomicity()
        self._dynamodb_patch.install()
        self._create_buckets()
        self._create_functions()
        self._create_state_machines()

    def _create_queues(self) -> None:
        sqs = self.boto3_client("sqs")
        queues = self.template.resources_of_type("AWS::SQS::Queue")
        plain_attributes = (
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "MaximumMessageSize",
            "ReceiveMessageWaitTimeSeconds",
        )
        for logical_id, properties in queues.items():
            name = self.local_name(logical_id)
            attributes = {key: str(self._resolve(properties[key])) for key in plain_attributes if key in properties}
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            arn = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"
            self._refs[logical_id] = url
            self._attributes.update(
                {(logical_id, "Arn"): arn, (logical_id, "QueueName"): name, (logical_id, "QueueUrl"): url}
            )
        # Redrive policies name other queues, so they are set once every queue exists.
        for logical_id, properties in queues.items():
            if "RedrivePolicy" in properties:
                redrive = self._resolve(properties["RedrivePolicy"])
                sqs.set_queue_attributes(
                    QueueUrl=self._refs[logical_id], Attributes={"RedrivePolicy": json.dumps(redrive)}
                )

    def _create_topics(self) -> None:
        sns = self.boto3_client("sns")
        for logical_id, properties in self.template.resources_of_type("AWS::SNS::Topic").items():
            name = self.local_name(logical_id)
            attributes = {}
            if "DisplayName" in properties:
                attributes["DisplayName"] = str(self._resolve(properties["DisplayName"]))
            arn = sns.create_topic(Name=name, Attributes=attributes)["TopicArn"]
            self._refs[logical_id] = arn
            self._attributes.update({(logical_id, "TopicArn"): arn, (logical_id, "TopicName"): name})

    def _create_subscriptions(self) -> None:
        """SNS -> SQS subscriptions to the template's queues, as the template declares them (e.g. the webhook
        queue's raw delivery). Other protocols (e-mail) do not exist offline: the notification sink stands in."""
        sns = self.boto3_client("sns")
        for logical_id, raw in self.template.resources_of_type("AWS::SNS::Subscription").items():
            properties = self._resolve(raw)
            if properties.get("Protocol") != "sqs":
                log.info("%s: %s subscriptions are not emulated", logical_id, properties.get("Protocol"))
                continue
            raw_delivery = str(properties.get("RawMessageDelivery", False)).lower() == "true"
            attributes = {"RawMessageDelivery": "true" if raw_delivery else "false"}
            if "FilterPolicy" in properties:  # on message attributes, as SNS filters by default
                attributes["FilterPolicy"] = json.dumps(properties["FilterPolicy"])
            arn = sns.subscribe(
                TopicArn=str(properties["TopicArn"]),
                Protocol="sqs",
                Endpoint=str(properties["Endpoint"]),
                Attributes=attributes,
                ReturnSubscriptionArn=True,
            )["SubscriptionArn"]
            self._refs[logical_id] = arn

    def _create_tables(self) -> None:
        dynamodb = self.boto3_client("dynamodb")
        for logical_id, raw in self.template.resources_of_type("AWS::DynamoDB::Table").items():
            properties = self._resolve(raw)
            name = self.local_name(logical_id)
            arguments: dict[str, Any] = {
                "TableName": name,
                "AttributeDefinitions": properties["AttributeDefinitions"],
                "KeySchema": properties["KeySchema"],
                "BillingMode": properties.get("BillingMode", "PROVISIONED"),
            }
            if "GlobalSecondaryIndexes" in properties:
                arguments["GlobalSecondaryIndexes"] = properties["GlobalSecondaryIndexes"]
            if "ProvisionedThroughput" in properties:
                arguments["ProvisionedThroughput"] = properties["ProvisionedThroughput"]
            description = dynamodb.create_table(**arguments)["TableDescription"]
            ttl = properties.get("TimeToLiveSpecification")
            if ttl and ttl.get("Enabled"):
                dynamodb.update_time_to_live(
                    TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
                )
            self._refs[logical_id] = name
            self._attributes[(logical_id, "Arn")] = description["TableArn"]

    def _create_secrets(self) -> None:
        secretsmanager = self.boto3_client("secretsmanager")
        for logical_id, properties in self.template.resources_of_type("AWS::SecretsManager::Secret").items():
            name = self.local_name(logical_id)
            if "GenerateSecretString" in properties:
                # A secret the stack generates for itself (e.g. the cursor signing key): random, as CloudFormation's,
                # of its length and, with ExcludePunctuation, of letters and digits only (the webhook secret's value
                # is the base64 part of a whsec_ secret, which that keeps valid).
                value = _generated_secret(self._resolve(properties["GenerateSecretString"]))
            else:
                value = self._secret_value(properties.get("SecretString"))
            arn = secretsmanager.create_secret(Name=name, SecretString=value)["ARN"]
            self._refs[logical_id] = arn
            self._attributes[(logical_id, "Id")] = arn

    def _secret_value(self, placeholder: Any) -> str:
        # The key goes in the same shape as the template's placeholder ({"api_key": ""}), the shape a
        # deployed stack's owner is told to fill in.
        try:
            shape = json.loads(str(placeholder))
        except (TypeError, ValueError):
            shape = None
        if isinstance(shape, dict) and "api_key" in shape:
            return json.dumps({**shape, "api_key": self._dashscope_api_key})
        return self._dashscope_api_key

    def _create_buckets(self) -> None:
        s3 = self.boto3_client("s3")
        buckets = self.template.resources_of_type("AWS::S3::Bucket")
        for logical_id in buckets:
            name = self.local_name(logical_id)
            s3.create_bucket(Bucket=name)
            self._refs[logical_id] = name
            self._attributes.update(
                {
                    (logical_id, "Arn"): f"arn:aws:s3:::{name}",
                    (logical_id, "DomainName"): f"{name}.s3.amazonaws.com",
                    (logical_id, "RegionalDomainName"): f"{name}.s3.{REGION}.amazonaws.com",
                }
            )
        for logical_id, raw in buckets.items():
            properties = self._resolve(raw)
            name = self._refs[logical_id]
            versioning = properties.get("VersioningConfiguration") or {}
            if versioning.get("Status"):
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning["Status"]})
            notification = properties.get("NotificationConfiguration")
            if notification:
                s3.put_bucket_notification_configuration(
                    Bucket=name, NotificationConfiguration=_s3_notification_api_shape(notification)
                )

    def _create_role(self, suffix: str, service_principal: str) -> str:
        """A role the service may assume (moto requires one; it enforces no policy)."""
        trust = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service_principal}, "Action": "sts:AssumeRole"}],
        }
        role = self.boto3_client("iam").create_role(
            RoleName=f"{self._stack_name}-{suffix}", AssumeRolePolicyDocument=json.dumps(trust)
        )
        return role["Role"]["Arn"]

    def _create_functions(self) -> None:
        role_arn = self._create_role("lambda", "lambda.amazonaws.com")
        awslambda = self.boto3_client("lambda")
        # Handlers run in-process; moto only needs a function to exist for Step Functions to invoke.
        code = _placeholder_zip()
        globals_env = {key: str(value) for key, value in self._resolve(self.template.global_environment()).items()}
        for spec in self.template.functions():
            name = self.local_name(spec.logical_id)
            env = {
                key: str(value)
                for key, value in self._resolve(
                    (spec.properties.get("Environment") or {}).get("Variables") or {}
                ).items()
            }
            self._function_env[spec.logical_id] = env
            if env != globals_env:
                log.warning(
                    "%s declares its own environment; in-process handlers all run with the Globals environment",
                    spec.logical_id,
                )
            configuration = awslambda.create_function(
                FunctionName=name,
                Runtime=str(self._resolve(spec.properties.get("Runtime", "python3.13"))),
                Role=role_arn,
                Handler=spec.handler,
                Code={"ZipFile": code},
                Timeout=spec.timeout,
                MemorySize=spec.memory_size,
                Architectures=[str(item) for item in self._resolve(spec.properties.get("Architectures", ["arm64"]))],
                Environment={"Variables": env},
            )
            self._refs[spec.logical_id] = name
            self._attributes[(spec.logical_id, "Arn")] = configuration["FunctionArn"]
        self._env = self._local_overlay(globals_env)

    def _local_overlay(self, env: dict[str, str]) -> dict[str, str]:
        env = dict(env)
        env.update(
            {
                "AWS_ENDPOINT_URL": self.aws_endpoint,
                "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
                "AWS_SESSION_TOKEN": "testing",
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                # No X-Ray daemon and no CloudWatch offline: keep Powertools from trying.
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_DISABLED": "true",
            }
        )
        if self._dashscope_base_url:
            env["DASHSCOPE_BASE_URL"] = self._dashscope_base_url
        if self._poll_interval_seconds is not None:
            seconds = self._poll_interval_seconds
            env["WANFLOW_POLL_INTERVAL_SECONDS"] = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
        # Loopback traffic must never go through a proxy configured for the outside world.
        no_proxy = [item for item in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",") if item]
        for host in ("127.0.0.1", "localhost", self._host):
            if host not in no_proxy:
                no_proxy.append(host)
        env["NO_PROXY"] = env["no_proxy"] = ",".join(no_proxy)
        env.update(self._extra_environment)
        return env

    def _create_state_machines(self) -> None:
        role_arn = self._create_role("states", "states.amazonaws.com")
        sfn = self.boto3_client("stepfunctions")
        for logical_id, raw in self.template.resources_of_type("AWS::Serverless::StateMachine").items():
            name = str(self._resolve(raw["Name"])) if "Name" in raw else self.local_name(logical_id)
            if "DefinitionUri" in raw:
                definition = (self.template.root / str(raw["DefinitionUri"])).read_text(encoding="utf-8")
            else:
                definition = json.dumps(raw["Definition"])
            substitutions = self._resolve(raw.get("DefinitionSubstitutions") or {})
            for key, value in substitutions.items():
                definition = definition.replace("${" + key + "}", str(value))
            leftover = re.findall(r"\$\{[^}]+\}", definition)
            if leftover:
                raise TemplateError(f"{logical_id}: unresolved substitutions {leftover}")
            arn = sfn.create_state_machine(
                name=name, definition=definition, roleArn=role_arn, type=str(raw.get("Type", "STANDARD"))
            )["stateMachineArn"]
            self._refs[logical_id] = arn
            self._attributes.update({(logical_id, "Name"): name, (logical_id, "Arn"): arn})

    def _local_functions(self) -> dict[str, LocalFunction]:
        functions = {}
        for spec in self.template.functions():
            functions[spec.logical_id] = LocalFunction(
                logical_id=spec.logical_id,
                name=self._refs[spec.logical_id],
                arn=self._attributes[(spec.logical_id, "Arn")],
                handler_ref=f"{spec.handler_module}.{spec.handler_attribute}",
                timeout=spec.timeout,
                memory_size=spec.memory_size,
                override=self._handler_overrides.get(spec.logical_id),
            )
        unknown = set(self._handler_overrides) - set(functions)
        if unknown:
            raise TemplateError(f"handler overrides for functions the template does not have: {sorted(unknown)}")
        return functions

    # -- event sources -----------------------------------------------------------------------------

    def _start_event_sources(self) -> None:
        assert self._runtime is not None
        for spec in self.template.functions():
            self._add_event_sources(spec)

        sqs = self.boto3_client("sqs")
        sns = self.boto3_client("sns")
        sink_name = f"{self._stack_name}-notifications"
        sink_url = sqs.create_queue(QueueName=sink_name)["QueueUrl"]
        for logical_id in self.template.resources_of_type("AWS::SNS::Topic"):
            sns.subscribe(
                TopicArn=self._refs[logical_id],
                Protocol="sqs",
                Endpoint=f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{sink_name}",
                Attributes={"RawMessageDelivery": "false"},
            )
        self._sink = NotificationSink(
            sqs_client=sqs, queue_url=sink_url, path=self.notifications_path, callback=self._on_notification
        )
        self._sink.start()
        for source in self._sqs_sources.values():
            source.start()

        if self._api_port is not None:
            routes = self.template.http_routes()
            self._http_api = LocalHttpApi(
                routes=routes, invoke=self._runtime.invoke, host=self._host, port=self._api_port, pages=self._pages
            )
            self._http_api.start()

    def _add_event_sources(self, spec: FunctionSpec) -> None:
        assert self._runtime is not None
        for name, event in spec.events.items():
            event_type = event.get("Type")
            properties = event.get("Properties") or {}
            if event_type == "SQS":
                resolved = self._resolve(properties)
                queue_arn = str(resolved["Queue"])
                queue_name = queue_arn.rsplit(":", 1)[1]
                scaling = resolved.get("ScalingConfig") or {}
                self._sqs_sources[spec.logical_id] = SqsEventSource(
                    runtime=self._runtime,
                    function=spec.logical_id,
                    sqs_client=self.boto3_client("sqs"),
                    queue_url=self._queue_url(queue_name),
                    queue_arn=queue_arn,
                    region=REGION,
                    batch_size=int(resolved.get("BatchSize", 10)),
                    # Without ScalingConfig, Lambda starts with 5 concurrent pollers.
                    max_concurrency=int(scaling.get("MaximumConcurrency", 5)),
                    report_batch_item_failures="ReportBatchItemFailures"
                    in (resolved.get("FunctionResponseTypes") or []),
                )
            elif event_type in ("ScheduleV2", "Schedule"):
                resolved = self._resolve(properties)
                self._schedules[spec.logical_id] = Schedule(
                    runtime=self._runtime,
                    function=spec.logical_id,
                    expression=str(resolved["ScheduleExpression"]),
                    input_template=resolved.get("Input"),
                )
            elif event_type == "HttpApi":
                continue  # served by the HTTP API emulation
            else:
                raise TemplateError(f"{spec.logical_id}.{name}: event type {event_type} is not emulated locally")

    def _queue_url(self, queue_name: str) -> str:
        for (logical_id, attribute), value in self._attributes.items():
            if attribute == "QueueName" and value == queue_name:
                return str(self._attributes[(logical_id, "QueueUrl")])
        raise TemplateError(f"no local queue {queue_name}")

    # -- helpers -----------------------------------------------------------------------------------

    def _moto_api(self, action: str, body: Mapping[str, Any] | None = None) -> Any:
        """Call moto's own API on the local server: POST reset, GET or POST config."""
        url = f"{self.aws_endpoint}/moto-api/{action}"
        # trust_env=False: never through a proxy, the server is on loopback.
        with httpx.Client(trust_env=False, timeout=30) as http:
            if action == "config" and body is None:
                response = http.get(url)
            else:
                response = http.post(url, json=body) if body is not None else http.post(url)
        response.raise_for_status()
        return response.json() if response.content else None

    def _stop_executions(self) -> None:
        # Executions are threads in this process: stop them before the functions they call go away.
        try:
            sfn = self.boto3_client("stepfunctions")
            for machine in sfn.list_state_machines()["stateMachines"]:
                for execution in _paginate(
                    sfn,
                    "list_executions",
                    "executions",
                    stateMachineArn=machine["stateMachineArn"],
                    statusFilter="RUNNING",
                ):
                    sfn.stop_execution(executionArn=execution["executionArn"], error="MotoStackStopped")
        except Exception:
            log.exception("stopping running executions failed")

    def _restore_loggers(self) -> None:
        for name, level in self._saved_log_levels.items():
            logging.getLogger(name).setLevel(level)
        self._saved_log_levels = {}

    def _quiet_loggers(self) -> None:
        for name in ("werkzeug", "moto"):
            logger = logging.getLogger(name)
            self._saved_log_levels[name] = logger.level
            # werkzeug turns an unset level into INFO with its own handler, so "unset" counts as chatty.
            if logger.level == logging.NOTSET or logger.level < logging.WARNING:
                logger.setLevel(logging.WARNING)

    def _set_environ(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            if key not in self._saved_environ:
                self._saved_environ[key] = os.environ.get(key)
            os.environ[key] = value

    def _restore_environ(self) -> None:
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environ = {}


def _generated_secret(options: Mapping[str, Any]) -> str:
    alphabet = string.ascii_letters + string.digits
    if str(options.get("ExcludePunctuation", False)).lower() != "true":
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    length = int(options.get("PasswordLength", 32))
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot serve the AWS endpoint on {host}:{port}: {exc.strerror}") from exc


def _reset_wanflow_caches() -> None:
    """Make the handlers re-read the environment: wanflow caches its settings and clients per process."""
    try:
        from wanflow.wiring import reset as reset_application
    except ImportError:  # the domain package is optional for the runtime itself
        return
    reset_application()


def _paginate(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page[key]


def _placeholder_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "# wanflow local: handlers run in-process, not from this package\n")
    return buffer.getvalue()


def _s3_notification_api_shape(notification: Mapping[str, Any]) -> dict[str, Any]:
    """CloudFormation's NotificationConfiguration -> the S3 API's PutBucketNotificationConfiguration shape."""
    kinds = {
        "QueueConfigurations": ("Queue", "QueueArn"),
        "TopicConfigurations": ("Topic", "TopicArn"),
        "LambdaConfigurations": ("Function", "LambdaFunctionArn"),
    }
    shaped: dict[str, Any] = {}
    for kind, (cfn_key, api_key) in kinds.items():
        for index, item in enumerate(notification.get(kind) or []):
            entry: dict[str, Any] = {"Id": f"{kind}{index}", api_key: item[cfn_key], "Events": [item["Event"]]}
            rules = ((item.get("Filter") or {}).get("S3Key") or {}).get("Rules")
            if rules:
                entry["Filter"] = {
                    "Key": {"FilterRules": [{"Name": rule["Name"], "Value": rule["Value"]} for rule in rules]}
                }
            shaped.setdefault(kind, []).append(entry)
    if notification.get("EventBridgeConfiguration"):
        shaped["EventBridgeConfiguration"] = {}
    return shaped


class MotoDispatchCache:
    """Remembers which moto backend serves a host name instead of working it out again for every request.

    moto's server picks the backend of every request under one lock (`DomainDispatcherApplication.get_application`),
    and `get_backend_for_host` lists moto's package directory on the way (a listdir and a stat per module, about 170)
    and then tries about 180 URL patterns: a millisecond or so per request, while every other request waits for the
    lock. Under load (bench/burst.py) that was the largest single cost of the local stack. The answer for a host name
    never changes while the server runs, so it is kept.
    """

    def __init__(self) -> None:
        self._original: Any = None

    def install(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        if self._original is not None:
            return
        original = DomainDispatcherApplication.get_backend_for_host
        known: dict[str | None, Any] = {}

        @functools.wraps(original)
        def get_backend_for_host(app: Any, host: str | None) -> Any:
            try:
                return known[host]
            except KeyError:
                backend = known[host] = original(app, host)
                return backend

        self._original = original
        DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        if self._original is not None:
            DomainDispatcherApplication.get_backend_for_host = self._original  # type: ignore[method-assign]
            self._original = None


class DynamoDbAtomicity:
    """Gives each of moto's DynamoDB requests DynamoDB's own atomicity.

    moto evaluates a condition, applies the update and builds the reply in separate Python steps, so two threads of
    its server can interleave inside one request: two conditional `ADD`s may both pass a `size(...) < :slots` check,
    two turns of the rate limiter may be the same. DynamoDB never does that, and wanflow's running slots, paced
    turns and versioned job writes rely on it. One lock around each request handler restores it; the requests of
    different callers still interleave freely, as they do against DynamoDB.
    """

    _OPERATIONS = ("get_item", "put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items")

    def __init__(self) -> None:
        self._originals: dict[str, Any] = {}
        self._lock = threading.Lock()

    def install(self) -> None:
        from moto.dynamodb.responses import DynamoHandler

        if self._originals:
            return
        for name in self._OPERATIONS:
            original = getattr(DynamoHandler, name)
            self._originals[name] = original
            setattr(DynamoHandler, name, self._locked(original))

    def uninstall(self) -> None:
        from moto.dynamodb.responses import DynamoHandler

        for name, original in self._originals.items():
            setattr(DynamoHandler, name, original)
        self._originals = {}

    def _locked(self, method: Callable[..., Any]) -> Callable[..., Any]:
        lock = self._lock

        @functools.wraps(method)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return locked


class _S3EventPatch:
    """Makes moto's S3 event records look like S3's: versionId, sequencer and the identities added, and the key
    URL-encoded the way S3 does it (spaces as "+", "/" kept; moto also encodes "/").

    The intake relies on versionId ("one object version gives one job"), so the local events must have it.
    """

    def __init__(self) -> None:
        self._original: Any = None
        self._sequence = 0
        self._lock = threading.Lock()

    def install(self) -> None:
        from moto.s3 import notifications

        if self._original is not None:
            return
        original = notifications._get_s3_event
        patch = self

        def _get_s3_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
            event = original(event_name, bucket, key, notification_id)
            with patch._lock:
                patch._sequence += 1
                sequencer = f"{time.time_ns():016X}{patch._sequence:04X}"
            for record in event["Records"]:
                record.setdefault("userIdentity", {"principalId": "AWS:AIDALOCALWANFLOW0000"})
                record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
                record.setdefault(
                    "responseElements",
                    {"x-amz-request-id": uuid.uuid4().hex[:16].upper(), "x-amz-id-2": uuid.uuid4().hex},
                )
                s3_object = record["s3"]["object"]
                s3_object["key"] = quote_plus(key.name, safe="/")
                version_id = getattr(key, "version_id", None)
                if version_id and version_id != "null":
                    s3_object["versionId"] = version_id
                s3_object["sequencer"] = sequencer
            return event

        self._original = original
        notifications._get_s3_event = _get_s3_event

    def uninstall(self) -> None:
        from moto.s3 import notifications

        if self._original is not None:
            notifications._get_s3_event = self._original
            self._original = None
