"""Configuration from the environment, validated once per process into a typed object."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

from pydantic import BaseModel, Field, ValidationError, field_validator

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
    "WANFLOW_WEBHOOK_QUEUE_URL": "webhook_queue_url",
    "WANFLOW_WEBHOOK_SECRET_ARN": "webhook_secret_arn",
    "WANFLOW_WEBHOOK_RETRY_SECONDS": "webhook_retry_seconds",
    "WANFLOW_WEBHOOK_ALLOW_LOOPBACK": "webhook_allow_loopback",
}


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
