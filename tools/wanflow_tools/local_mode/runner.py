"""The emulator and the local stack, started and stopped as one thing.

Both `wanflow local` and `wanflow demo` use `LocalMode`; it reads the documented environment
(`DASHSCOPE_BASE_URL`, `DASHSCOPE_API_KEY`, `WANFLOW_POLL_INTERVAL_SECONDS`) through `LocalModeOptions`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx

if TYPE_CHECKING:
    from wanflow_tools.emulator import Emulator
    from wanflow_tools.moto_stack import MotoStack, Notification

# The key the local stack stores in its DashScope secret when the emulator stands in for DashScope; the
# emulator is started to accept exactly this key, as DashScope accepts only real ones.
EMULATOR_API_KEY = "sk-wanflow-local-emulator"
DEFAULT_POLL_INTERVAL_SECONDS = 15.0


class LocalModeError(RuntimeError):
    """The local mode cannot start as configured; the message says what to change."""


@dataclass
class LocalModeOptions:
    host: str = "127.0.0.1"
    api_port: int = 8000  # 0: a free port
    aws_port: int = 5000  # 0: a free port
    state_dir: Path = Path(".wanflow")
    dashscope_base_url: str | None = None  # None: start the emulator
    dashscope_api_key: str | None = None
    poll_interval_seconds: float = DEFAULT_POLL_INTERVAL_SECONDS
    emulator_overrides: dict[str, Any] = field(default_factory=dict)
    # The webhook signing secret (whsec_...) to use instead of the one the stack generates.
    webhook_secret: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], **values: Any) -> LocalModeOptions:
        """Options from `values` plus the documented environment variables."""
        options = cls(**values)
        options.dashscope_base_url = environ.get("DASHSCOPE_BASE_URL") or None
        options.dashscope_api_key = environ.get("DASHSCOPE_API_KEY") or None
        interval = environ.get("WANFLOW_POLL_INTERVAL_SECONDS")
        if interval:
            try:
                options.poll_interval_seconds = float(interval)
            except ValueError:
                raise LocalModeError(
                    f"WANFLOW_POLL_INTERVAL_SECONDS must be a number of seconds, not {interval!r}"
                ) from None
            if options.poll_interval_seconds < 0:
                raise LocalModeError("WANFLOW_POLL_INTERVAL_SECONDS must not be negative")
        if options.dashscope_base_url and not options.dashscope_api_key:
            raise LocalModeError("DASHSCOPE_BASE_URL is set, so DASHSCOPE_API_KEY must be too (the key for it)")
        return options


class LocalMode:
    """The DashScope emulator (when no DASHSCOPE_BASE_URL is given) plus the local stack."""

    def __init__(
        self, options: LocalModeOptions, on_notification: Callable[[Notification], None] | None = None
    ) -> None:
        self.options = options
        self._on_notification = on_notification
        self.emulator: Emulator | None = None
        self.stack: MotoStack | None = None
        self.dashscope_base_url = ""
        self.webhook_secret = ""  # the secret webhook deliveries are signed with, once started

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        # Imported here: both pull in moto, PyAV and numpy, which `wanflow --help` should not pay for.
        from wanflow_tools.console import ConsoleSite
        from wanflow_tools.emulator import Emulator, EmulatorConfig
        from wanflow_tools.moto_stack import MotoStack

        options = self.options
        try:
            api_key = options.dashscope_api_key or EMULATOR_API_KEY
            if options.dashscope_base_url:
                self.dashscope_base_url = options.dashscope_base_url.rstrip("/")
            else:
                config = EmulatorConfig(host=options.host, port=0, api_key=api_key, **options.emulator_overrides)
                self.emulator = Emulator(config)
                self.dashscope_base_url = self.emulator.start()
            self.stack = MotoStack(
                state_dir=options.state_dir,
                host=options.host,
                aws_port=options.aws_port,
                api_port=options.api_port,
                dashscope_base_url=self.dashscope_base_url,
                dashscope_api_key=api_key,
                poll_interval_seconds=options.poll_interval_seconds,
                on_notification=self._on_notification,
                # Local webhook receivers (wanflow webhook listen) are on loopback, plain http:// included.
                environment={"WANFLOW_WEBHOOK_ALLOW_LOOPBACK": "true"},
                # The web console at the API's own address: http://127.0.0.1:8000/
                pages=ConsoleSite().respond,
            )
            self.stack.start()
            self.webhook_secret = self._set_up_webhook_secret(self.stack, options.webhook_secret)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _set_up_webhook_secret(stack: MotoStack, wanted: str | None) -> str:
        """Store `wanted` as the stack's webhook signing secret (if given); the secret deliveries are signed with."""
        from standardwebhooks import Webhook

        from wanflow.wiring import webhook_secrets_from_value

        secretsmanager = stack.boto3_client("secretsmanager")
        arn = stack.resources["WebhookSecret"]
        if wanted:
            try:
                Webhook(wanted)
            except Exception as exc:
                raise LocalModeError(f"--webhook-secret must be whsec_ followed by base64: {exc}") from None
            secretsmanager.put_secret_value(SecretId=arn, SecretString=wanted)
        return webhook_secrets_from_value(secretsmanager.get_secret_value(SecretId=arn)["SecretString"])[0]

    def stop(self) -> None:
        """Stops whatever started, the stack first (its executions still poll the emulator)."""
        stack, self.stack = self.stack, None
        emulator, self.emulator = self.emulator, None
        try:
            if stack is not None:
                stack.stop()
        finally:
            if emulator is not None:
                emulator.stop()

    @property
    def api_url(self) -> str:
        assert self.stack is not None and self.stack.api_url is not None, "start the local mode first"
        return self.stack.api_url

    def wait_until_ready(self, timeout: float = 30.0, stop: threading.Event | None = None) -> bool:
        """Wait until `GET /v1/jobs` answers 200; False if `stop` was set first. TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        last_problem = "no answer"
        with httpx.Client(base_url=self.api_url, timeout=5.0) as client:
            while True:
                try:
                    response = client.get("/v1/jobs", params={"limit": 1})
                    if response.status_code == 200:
                        return True
                    last_problem = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.TransportError as error:
                    last_problem = str(error) or type(error).__name__
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the HTTP API did not answer GET /v1/jobs within {timeout:g} s ({last_problem})"
                    )
                # Between attempts: wake at once when asked to stop.
                if stop is not None and stop.wait(0.1):
                    return False
                if stop is None:
                    time.sleep(0.1)
