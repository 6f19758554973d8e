"""In-process Lambda runtime for the local stack.

Every function of template.yaml runs in this process: its handler (`functions.<folder>.app.lambda_handler`,
from CodeUri/Handler) is imported lazily and called with a JSON round-tripped event and a fake Lambda
context. The same code path serves three callers:

* moto's Lambda service, patched here, so that Step Functions Task states executed by moto's ASL
  interpreter run the real handlers (`install_moto_patch`);
* the SQS and scheduler event-source emulation (`wanflow_tools.moto_stack.events`);
* the HTTP API emulation (`wanflow_tools.moto_stack.apigw`).

Errors are reported the Lambda way: a payload `{"errorType", "errorMessage", "requestId", "stackTrace"}`
with FunctionError "Unhandled", so that ASL Retry/Catch match on the exception class name
(an exception class named TransientError is the error "TransientError").
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[Any, Any], Any]

log = logging.getLogger(__name__)

# Real Lambda limits for a synchronous invocation's request and response payloads.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024


@dataclass
class LambdaContext:
    """The attributes and method of the Python runtime's context object that handlers and Powertools use."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    timeout_seconds: int
    function_version: str = "$LATEST"
    identity: Any = None
    client_context: Any = None
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"{time.strftime('%Y/%m/%d')}/[$LATEST]{self.aws_request_id.replace('-', '')}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class InvocationResult:
    """What a synchronous Lambda invoke returns: the JSON payload text and, on error, the FunctionError."""

    request_id: str
    payload: str
    function_error: str | None = None
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.function_error is None

    def value(self) -> Any:
        """The payload decoded from JSON (a Lambda error payload when not ok)."""
        return json.loads(self.payload) if self.payload else None

    @property
    def error_type(self) -> str | None:
        if self.ok:
            return None
        return str((self.value() or {}).get("errorType", "Unknown"))


@dataclass
class LocalFunction:
    logical_id: str
    name: str
    arn: str
    handler_ref: str  # "functions.api.app.lambda_handler"
    timeout: int
    memory_size: int
    override: Handler | None = None
    _handler: Handler | None = field(default=None, repr=False)

    def handler(self) -> Handler:
        if self.override is not None:
            return self.override
        if self._handler is None:
            # Imported on first use, as Lambda does on a cold start: the stack can start before every
            # handler module exists, and import errors surface as Runtime.ImportModuleError.
            module_name, _, attribute = self.handler_ref.rpartition(".")
            module = importlib.import_module(module_name)
            self._handler = getattr(module, attribute)
        return self._handler


class LambdaRuntime:
    """The functions of one local stack and the means to invoke them in this process."""

    def __init__(self, functions: Mapping[str, LocalFunction]) -> None:
        self._by_logical_id = dict(functions)
        self._by_name = {function.name: function for function in functions.values()}
        self._import_lock = threading.Lock()

    @property
    def functions(self) -> dict[str, LocalFunction]:
        return dict(self._by_logical_id)

    def function(self, name_or_logical_id: str) -> LocalFunction:
        """By logical id, physical name or ARN (optionally with a qualifier)."""
        if name_or_logical_id in self._by_logical_id:
            return self._by_logical_id[name_or_logical_id]
        name = name_or_logical_id
        if name.startswith("arn:"):
            name = name.split(":")[6]
        if name in self._by_name:
            return self._by_name[name]
        raise KeyError(f"no local function {name_or_logical_id!r}")

    def invoke(self, name_or_logical_id: str, event: Any) -> InvocationResult:
        function = self.function(name_or_logical_id)
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        try:
            # A JSON round trip, as Lambda does: the handler never shares objects with the caller, and
            # events that could not cross the wire fail here rather than only in AWS.
            event_text = json.dumps(event)
            if len(event_text.encode()) > MAX_PAYLOAD_BYTES:
                return _error(
                    request_id,
                    "RequestEntityTooLargeException",
                    f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the InvokeFunction operation",
                    started,
                )
            decoded_event = json.loads(event_text)
            try:
                with self._import_lock:
                    handler = function.handler()
            except Exception as exc:
                return _error(
                    request_id,
                    "Runtime.ImportModuleError",
                    f"Unable to import module '{function.handler_ref}': {exc}",
                    started,
                )
            context = LambdaContext(
                function_name=function.name,
                invoked_function_arn=function.arn,
                memory_limit_in_mb=function.memory_size,
                aws_request_id=request_id,
                timeout_seconds=function.timeout,
            )
            result = handler(decoded_event, context)
        except Exception as exc:
            log.info("%s raised %s: %s", function.logical_id, type(exc).__name__, exc)
            return _error(
                request_id, type(exc).__name__, str(exc), started, stack_trace=traceback.format_tb(exc.__traceback__)
            )
        duration = time.monotonic() - started
        if duration > function.timeout:
            # A thread cannot be stopped, so the timeout is applied after the fact: the result is
            # dropped and the caller sees what Lambda reports for a timed-out invocation.
            return _error(
                request_id, "Sandbox.Timedout", f"Task timed out after {function.timeout:.2f} seconds", started
            )
        try:
            payload = json.dumps(result)
        except (TypeError, ValueError) as exc:
            return _error(request_id, "Runtime.MarshalError", f"Unable to marshal response: {exc}", started)
        if len(payload.encode()) > MAX_PAYLOAD_BYTES:
            return _error(
                request_id,
                "Function.ResponseSizeTooLarge",
                "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
                started,
            )
        return InvocationResult(request_id=request_id, payload=payload, duration_seconds=duration)


def _error(
    request_id: str, error_type: str, message: str, started: float, stack_trace: list[str] | None = None
) -> InvocationResult:
    payload = {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": stack_trace or [],
    }
    return InvocationResult(
        request_id=request_id,
        payload=json.dumps(payload),
        function_error="Unhandled",
        duration_seconds=time.monotonic() - started,
    )


class MotoLambdaPatch:
    """Makes moto's Lambda service run functions through a LambdaRuntime instead of Docker.

    moto's `LambdaFunction._invoke_lambda(self, event) -> (payload, errored, logs)` is the single place
    where it would start a container; it is replaced for the lifetime of the patch. moto marks errors
    FunctionError "Handled"; the real runtime marks a raised exception "Unhandled", so `invoke` is
    wrapped to say so. `uninstall()` restores both methods.
    """

    def __init__(self, runtime: LambdaRuntime) -> None:
        self._runtime = runtime
        self._originals: dict[str, Any] = {}

    def install(self) -> None:
        from moto.awslambda.models import LambdaFunction

        if self._originals:
            return
        runtime = self._runtime
        original_invoke = LambdaFunction.invoke

        def _invoke_lambda(function_self: Any, event: Any = None) -> tuple[str, bool, str]:
            # moto hands over the decoded request body, or the text "{}" for an empty one.
            if event is None or event == "{}":
                event = {}
            result = runtime.invoke(function_self.function_name, event)
            logs = (
                f"START RequestId: {result.request_id}\nEND RequestId: {result.request_id}\n"
                f"REPORT RequestId: {result.request_id}\tDuration: {result.duration_seconds * 1000:.2f} ms"
            )
            return result.payload, not result.ok, logs

        def invoke(function_self: Any, body: Any, request_headers: Any, response_headers: Any) -> Any:
            response = original_invoke(function_self, body, request_headers, response_headers)
            if response_headers.get("x-amz-function-error") == "Handled":
                response_headers["x-amz-function-error"] = "Unhandled"
            return response

        replacements = {"_invoke_lambda": _invoke_lambda, "invoke": invoke}
        self._originals = {name: getattr(LambdaFunction, name) for name in replacements}
        for name, replacement in replacements.items():
            setattr(LambdaFunction, name, replacement)

    def uninstall(self) -> None:
        from moto.awslambda.models import LambdaFunction

        for name, original in self._originals.items():
            setattr(LambdaFunction, name, original)
        self._originals = {}
