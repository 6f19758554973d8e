"""The one place that builds the real adapters from the environment: once per process (a warm Lambda container
keeps them), and again after `reset()` (the local stack and tests call it after changing the environment).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from typing import Any

from wanflow import redaction
from wanflow.adapters import boto
from wanflow.adapters.batch_table import BatchTable
from wanflow.adapters.budget_ledger import DynamoBudgetLedger
from wanflow.adapters.job_table import JobTable
from wanflow.adapters.notifier import SnsNotifier
from wanflow.adapters.objects import S3Objects
from wanflow.adapters.rate_limits import DynamoRateLimiter
from wanflow.adapters.running_slots import DynamoRunningSlots
from wanflow.adapters.webhook_http import HttpWebhookSender
from wanflow.adapters.webhook_queue import SqsWebhookQueue
from wanflow.adapters.workflow import StepFunctionsWorkflow
from wanflow.errors import WanflowError
from wanflow.observability import EmfTelemetry
from wanflow.ports import DashScopeApi, WebhookPorts
from wanflow.settings import Settings, get_settings
from wanflow.usecases.context import Dependencies


@functools.cache
def dependencies() -> Dependencies:
    """The process's adapters, built on first use from the environment."""
    redaction.install()
    settings = get_settings()
    admission_table = boto.dynamodb_table(settings.admission_table)
    return Dependencies(
        settings=settings,
        jobs=JobTable(boto.dynamodb_table(settings.jobs_table)),
        objects=S3Objects(boto.s3()),
        workflow=StepFunctionsWorkflow(boto.stepfunctions(), settings.state_machine_arn),
        notifier=SnsNotifier(boto.sns(), settings.topic_arn),
        dashscope_client=functools.partial(dashscope_from_secret, settings),
        cursor_key=functools.partial(cursor_key_from_secret, settings),
        slots=DynamoRunningSlots(admission_table),
        limiter=DynamoRateLimiter(admission_table),
        seal_key=functools.partial(seal_key_from_secret, settings),
        budget=DynamoBudgetLedger(admission_table),
        batches=BatchTable(boto.dynamodb_table(settings.batches_table)),
        webhooks=WebhookPorts(
            queue=SqsWebhookQueue(boto.sqs(), settings.webhook_queue_url),
            sender=HttpWebhookSender(),
            secrets=functools.partial(webhook_secrets_from_secret, settings),
        ),
        telemetry=EmfTelemetry(),
    )


def reset() -> None:
    """Forget everything built from the environment, Powertools' secret providers (and their clients) included."""
    from aws_lambda_powertools.utilities.parameters.base import DEFAULT_PROVIDERS

    DEFAULT_PROVIDERS.clear()  # what parameters.clear_caches() does (it is untyped)
    dependencies.cache_clear()
    get_settings.cache_clear()
    boto.reset_clients()
    if "wanflow.dashscope" in sys.modules:  # only a process that made clients has any to close
        sys.modules["wanflow.dashscope"].clear_shared_clients()


def dashscope_from_secret(settings: Settings) -> DashScopeApi:
    """The shared DashScope client for the key in Secrets Manager.

    The client (and httpx under it) is imported on first use, not at cold start: most invocations of most
    functions never call DashScope (a GET of a job, a finalizer rerun, a failure record).
    """
    from aws_lambda_powertools.utilities.parameters import get_secret

    from wanflow.dashscope import base_url_for_region, shared_client

    # Cached for five minutes: a rotated key is picked up without a redeploy.
    secret = get_secret(settings.dashscope_secret_arn, max_age=300)
    base_url = settings.dashscope_base_url or base_url_for_region(
        settings.dashscope_region, settings.dashscope_workspace_id or None
    )
    api_key = api_key_from_secret(secret)
    redaction.register_secret(api_key)
    return shared_client(base_url, api_key)


def cursor_key_from_secret(settings: Settings) -> bytes:
    """The key list cursors are signed with: a digest of the stack's cursor secret (cached, rotation-aware)."""
    from aws_lambda_powertools.utilities.parameters import get_secret

    if not settings.cursor_secret_arn:
        raise WanflowError(
            "WANFLOW_CURSOR_SECRET_ARN is not set; list cursors cannot be signed", code="ConfigurationError"
        )
    secret: Any = get_secret(settings.cursor_secret_arn, max_age=300)  # bytes for a SecretBinary
    value = secret if isinstance(secret, bytes) else str(secret).encode()
    return hashlib.sha256(b"wanflow-cursor\x00" + value).digest()


def seal_key_from_secret(settings: Settings) -> bytes:
    """The key video URLs are sealed with between the poll and finalize steps (cached, rotation-aware: a token
    sealed before a rotation fails to open and the finalizer asks DashScope for the URL instead)."""
    from aws_lambda_powertools.utilities.parameters import get_secret

    from wanflow.sealing import derive_key

    if not settings.seal_secret_arn:
        raise WanflowError("WANFLOW_SEAL_SECRET_ARN is not set; video URLs cannot be sealed", code="ConfigurationError")
    secret: Any = get_secret(settings.seal_secret_arn, max_age=300)
    return derive_key(secret if isinstance(secret, bytes) else str(secret), "video-url")


def api_key_from_secret(secret: str | bytes | dict[str, Any]) -> str:
    """The key from the secret's value: plain text, or JSON `{"api_key": "sk-..."}`."""
    value: Any = secret.decode() if isinstance(secret, bytes) else secret
    if isinstance(value, str) and value.strip().startswith("{"):
        value = json.loads(value)
    if isinstance(value, dict):
        value = value.get("api_key") or value.get("DASHSCOPE_API_KEY") or ""
    key = str(value).strip()
    if not key:
        raise WanflowError("the DashScope API key secret is empty; put the key in it", code="ConfigurationError")
    return key


def webhook_secrets_from_secret(settings: Settings) -> list[str]:
    """The webhook signing secrets (cached for five minutes, so a rotation is picked up without a redeploy)."""
    from aws_lambda_powertools.utilities.parameters import get_secret

    if not settings.webhook_secret_arn:
        raise WanflowError(
            "WANFLOW_WEBHOOK_SECRET_ARN is not set; webhook deliveries cannot be signed", code="ConfigurationError"
        )
    secrets = webhook_secrets_from_value(get_secret(settings.webhook_secret_arn, max_age=300))
    for secret in secrets:
        redaction.register_secret(secret)
    return secrets


def webhook_secrets_from_value(secret: str | bytes | dict[str, Any]) -> list[str]:
    """The signing secrets in the secret's value (docs/product.md, "Webhooks"): JSON `{"secrets": ["whsec_...",
    ...]}` (every one signs: two during a rotation), or the stack's generated key as plain text, which is the
    base64 part of the secret `whsec_<key>`."""
    value: Any = secret.decode() if isinstance(secret, bytes) else secret
    if isinstance(value, str) and value.strip().startswith("{"):
        value = json.loads(value)
    if isinstance(value, dict):
        listed = value.get("secrets")
        entries = [str(entry).strip() for entry in listed] if isinstance(listed, list) else []
    else:
        entries = [str(value).strip()]
    secrets = [entry if entry.startswith("whsec_") else f"whsec_{entry}" for entry in entries if entry]
    if not secrets:
        raise WanflowError("the webhook signing secret is empty", code="ConfigurationError")
    return secrets
