"""Configuration from the environment, validated once per process into a typed object."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, Field, ValidationError, field_validator

from wanflow.callers import principal_matches
from wanflow.capabilities import MODELS, REGIONS
from wanflow.webhooks import DEFAULT_RETRY_SECONDS, MAX_RETRY_DELAY_SECONDS

# Environment variable -> Settings field. The names are part of the template (template.yaml Globals).
_ENVIRONMENT = {
    "WANFLOW_JOBS_TABLE": "jobs_table",
    "WANFLOW_INTAKE_BUCKET": "intake_bucket",
    "WANFLOW_OUTPUT_BUCKET": "output_bucket",
    "WANFLOW_TOPIC_ARN": "topic_arn",
    "WANFLOW_STATE_MACHINE_ARN": "state_machine_arn",
    "WANFLOW_DASHSCOPE_REGION": "dashscope_region",
    "WANFLOW_DASHSCOPE_WORKSPACE_ID": "dashscope_workspace_id",
    "WANFLOW_DASHSCOPE_SECRET_ARN": "dashscope_secret_arn",
    "WANFLOW_DEFAULT_MODEL": "default_model",
    "WANFLOW_POLL_INTERVAL_SECONDS": "poll_interval_seconds",
    "DASHSCOPE_BASE_URL": "dashscope_base_url",
    "WANFLOW_RECONCILE_AFTER_SECONDS": "reconcile_after_seconds",
    "WANFLOW_ADMISSION_TABLE": "admission_table",
    "WANFLOW_MODEL_SLOTS": "model_slots",
    "WANFLOW_QUERY_BUDGET_RPS": "query_budget_rps",
    "WANFLOW_SEAL_SECRET_ARN": "seal_secret_arn",
    "WANFLOW_ADMIN_PRINCIPALS": "admin_principals",
    "WANFLOW_INTAKE_MAX_RECEIVES": "intake_max_receives",
    "WANFLOW_THROTTLED_WAIT_CAP_SECONDS": "throttled_wait_cap_seconds",
    "WANFLOW_CURSOR_SECRET_ARN": "cursor_secret_arn",
    "WANFLOW_PROVIDER_RETRIES": "provider_retries",
    "WANFLOW_PROVIDER_RETRY_BACKOFF_SECONDS": "provider_retry_backoff_seconds",
    "WANFLOW_DAILY_BUDGET_USD": "daily_budget_usd",
    "WANFLOW_CALLER_BUDGETS_USD": "caller_budgets_usd",
    "WANFLOW_BATCHES_TABLE": "batches_table",
    "WANFLOW_WEBHOOK_QUEUE_URL": "webhook_queue_url",
    "WANFLOW_WEBHOOK_SECRET_ARN": "webhook_secret_arn",
    "WANFLOW_WEBHOOK_RETRY_SECONDS": "webhook_retry_seconds",
    "WANFLOW_WEBHOOK_ALLOW_LOOPBACK": "webhook_allow_loopback",
}


# What a caller's budget may name: a unique id, or an IAM user or role ARN (docs/product.md section 8).
_BUDGET_PRINCIPAL = re.compile(
    r"^(?:A[A-Z0-9]{15,127}|arn:aws[a-z-]*:iam::\d{12}:(?:user|role)/(?:[\w+=.@-]+/)*[\w+=.@-]+)$"
)


def _usd(text: str, entry: str | None = None) -> Decimal:
    """A non-negative amount of USD with at most 4 decimals (the estimates' precision)."""
    try:
        amount = Decimal(text.strip())
        exact = amount.is_finite() and amount == amount.quantize(Decimal("0.0001"))
    except InvalidOperation:
        exact = False
    if not exact or amount < 0 or (entry is not None and amount == 0):
        where = f" in {entry!r}" if entry else ""
        floor = "> 0" if entry is not None else ">= 0"
        raise ValueError(f"{text.strip()!r}{where} is not an amount of USD (a number {floor}, at most 4 decimals)")
    return amount


class ConfigurationError(RuntimeError):
    """The function's environment is incomplete or wrong: a deployment problem, not a user error."""


class Settings(BaseModel):
    jobs_table: str
    intake_bucket: str
    output_bucket: str
    topic_arn: str
    state_machine_arn: str = ""  # only the functions that start or stop executions get it
    dashscope_region: str = "ap-southeast-1"
    dashscope_workspace_id: str = ""
    dashscope_secret_arn: str
    default_model: str = "wan2.6-i2v-flash"
    poll_interval_seconds: int = Field(default=15, ge=0, le=3600)
    # The longest wait between two queries of a task DashScope keeps throttling (wanflow.usecases.poll).
    throttled_wait_cap_seconds: int = Field(default=300, ge=1, le=3600)
    dashscope_base_url: str = ""
    # Running slots and paced turns of the admission queue (wanflow.usecases.admission), one table per stack.
    admission_table: str = ""
    # Running slots per model where the account's quota differs from the capability table: "wan2.6-i2v=10,...".
    model_slots: dict[str, int] = Field(default_factory=dict)
    # DashScope task queries per second for the whole deployment, below the account's 20/s for other users of the key.
    query_budget_rps: float = Field(default=15, gt=0, le=1000)
    # The secret the poll step seals a video URL with before handing it to the finalizer (wanflow.sealing).
    seal_secret_arn: str = ""
    # The intake queue's maxReceiveCount: on a message's last receive, an object that still fails gets a FAILED job.
    intake_max_receives: int = Field(default=5, ge=1)
    # How long after an unanswered create the sweeper looks for its task: DashScope's task list may lag a create.
    reconcile_after_seconds: int = Field(default=120, ge=0)
    # Output video URLs handed to users are short-lived on purpose.
    output_url_ttl_seconds: int = 3600
    # Presigned URLs from which DashScope fetches s3:// inputs; it may fetch them only when the task starts.
    input_url_ttl_seconds: int = 6 * 3600
    upload_max_bytes: int = 20 * 1024 * 1024
    upload_url_ttl_seconds: int = 900
    # Callers who see every job: unique ids (AIDA..., AROA...), user ARNs or role ARNs, comma-separated.
    admin_principals: str = ""
    # The secret list cursors are signed with (only the API function has it).
    cursor_secret_arn: str = ""
    # New tasks for a job whose task DashScope failed for its own reason (wanflow.usecases.retries); 0: none.
    provider_retries: int = Field(default=2, ge=0, le=5)
    # The first backoff before such a new task; each later one is four times longer (at most 15 minutes).
    provider_retry_backoff_seconds: int = Field(default=30, ge=0, le=900)
    # The spend cap (wanflow.usecases.budget): list-price USD per UTC day for the whole deployment; 0 = no cap.
    daily_budget_usd: Decimal = Field(default=Decimal(0), ge=0, le=10_000_000)
    # Caps of single callers, USD per UTC day: IAM unique id, user ARN or role ARN -> cap ("AROA...=25,arn:...=10").
    caller_budgets_usd: dict[str, Decimal] = Field(default_factory=dict)
    # Batch records (wanflow.usecases.batches); a batch's jobs live in the jobs table.
    batches_table: str = ""
    # Webhook deliveries (wanflow.usecases.webhooks): their queue, the signing secret, the waits between attempts
    # ("5,300,..." seconds; tests use tiny ones), and whether loopback targets are allowed (local mode only).
    webhook_queue_url: str = ""
    webhook_secret_arn: str = ""
    webhook_retry_seconds: tuple[int, ...] = DEFAULT_RETRY_SECONDS
    webhook_allow_loopback: bool = False

    @property
    def admins(self) -> tuple[str, ...]:
        return tuple(entry.strip() for entry in self.admin_principals.split(",") if entry.strip())

    def slots_for(self, model: str) -> int:
        """`model`'s running slots (canonical name): the deployment's override, else the capability table's."""
        return self.model_slots.get(model) or MODELS[model].max_running

    @field_validator("model_slots", mode="before")
    @classmethod
    def _parse_slots(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        slots: dict[str, int] = {}
        for entry in filter(None, (part.strip() for part in value.split(","))):
            model, separator, count = entry.partition("=")
            model, count = model.strip(), count.strip()
            if not separator or model not in MODELS or not count.isascii() or not count.isdigit() or int(count) < 1:
                raise ValueError(
                    f"{entry!r} is not <model>=<slots> with a known model (one of {', '.join(MODELS)}) and slots >= 1"
                )
            slots[model] = int(count)
        return slots

    def caller_budget_for(self, principal: str, arn: str | None) -> Decimal | None:
        """The daily cap of the caller with unique id `principal` (and `arn`, when known); None: no cap of its own.

        An entry names a unique id, a user ARN or a role ARN (every session of the role); if several name the
        caller, the smallest cap applies.
        """
        caps = [cap for entry, cap in self.caller_budgets_usd.items() if principal_matches(principal, arn or "", entry)]
        return min(caps) if caps else None

    @field_validator("daily_budget_usd", mode="before")
    @classmethod
    def _parse_budget(cls, value: object) -> object:
        return _usd(str(value)) if isinstance(value, str) else value

    @field_validator("caller_budgets_usd", mode="before")
    @classmethod
    def _parse_caller_budgets(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        budgets: dict[str, Decimal] = {}
        for entry in filter(None, (part.strip() for part in value.split(","))):
            # rpartition: an IAM name may contain "=" itself, an amount never does.
            principal, separator, amount = (part.strip() for part in entry.rpartition("="))
            if not separator or not _BUDGET_PRINCIPAL.match(principal):
                raise ValueError(
                    f"{entry!r} is not <principal>=<USD per day>, where <principal> is an IAM unique id "
                    "(AIDA..., AROA...), an IAM user ARN or an IAM role ARN"
                )
            if principal in budgets:
                raise ValueError(f"{principal!r} is given twice")
            budgets[principal] = _usd(amount, entry)
        return budgets

    @field_validator("webhook_retry_seconds", mode="before")
    @classmethod
    def _parse_retry_seconds(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        if not all(entry.isascii() and entry.isdigit() for entry in entries):
            raise ValueError(f"{value!r} is not a comma-separated list of whole seconds")
        seconds = tuple(int(entry) for entry in entries)
        if any(wait > MAX_RETRY_DELAY_SECONDS for wait in seconds):
            raise ValueError(f"each wait must be at most {MAX_RETRY_DELAY_SECONDS} s (SQS's longest visibility)")
        return seconds

    @field_validator("dashscope_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value not in REGIONS:
            raise ValueError(f"must be one of {', '.join(REGIONS)}")
        return value

    @field_validator("default_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"must be one of {', '.join(MODELS)}")
        return value

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Settings:
        values = {field: environ[name] for name, field in _ENVIRONMENT.items() if environ.get(name)}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            field_to_env = {field: name for name, field in _ENVIRONMENT.items()}
            problems = "; ".join(
                f"{field_to_env.get(str(error['loc'][0]), error['loc'][0])}: {error['msg']}" for error in exc.errors()
            )
            raise ConfigurationError(f"invalid wanflow configuration: {problems}") from None


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once (Lambda containers keep them across invocations)."""
    return Settings.from_environment(os.environ)
