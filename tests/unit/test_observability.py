"""wanflow.observability: X-Ray tracing where Powertools would trace (in Lambda), and no X-Ray SDK where it would not.

Each case runs in a fresh interpreter: which tracer the handlers get is decided when wanflow.observability is
imported, and an enabled Tracer patches botocore and httpx for the whole process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # imports every handler in fresh interpreters

REPO = Path(__file__).resolve().parents[2]
HANDLERS = ("api", "intake", "status", "finalize", "record_failure", "sweeper")
TRACE_HEADER = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

# Imports every handler, then calls the status handler (its application stubbed out) once and prints a report.
PROGRAM = """
import json, sys, types
HANDLERS = {handlers!r}
for name in HANDLERS:
    __import__(f"functions.{{name}}.app")
from wanflow.observability import tracer
report = {{
    "disabled": tracer.disabled,
    "xray_modules": sorted(m for m in sys.modules if m.split(".")[0] == "aws_xray_sdk"),
    "entities": [],
}}
if not tracer.disabled:
    from aws_xray_sdk.core import patcher, xray_recorder
    from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter

    class Recorded(UDPEmitter):  # what would have gone to the X-Ray daemon
        def send_entity(self, entity):
            report["entities"].append(json.loads(entity.serialize()))

    xray_recorder.emitter = Recorded()
    report["patched"] = sorted(patcher._PATCHED_MODULES)

status = sys.modules["functions.status.app"]

class Result:
    next, polls = "wait", 1
    def as_state(self):
        return {{"next": "wait", "polls": 1}}

status.dependencies = lambda: None
status.check_status = lambda deps, job_id, polls: Result()
context = types.SimpleNamespace(
    function_name="wanflow-status", memory_limit_in_mb=512, aws_request_id="req-1",
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:wanflow-status",
)
report["returned"] = status.lambda_handler({{"job_id": "job-1", "poll": {{"next": "wait", "polls": 0}}}}, context)
print(json.dumps(report))
"""


def run_handlers(**environment: str | None) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("POWERTOOLS_", "LAMBDA_", "AWS_"))}
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.update({key: value for key, value in environment.items() if value is not None})
    completed = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(handlers=HANDLERS)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "environment",
    [
        pytest.param({"POWERTOOLS_TRACE_DISABLED": "true"}, id="POWERTOOLS_TRACE_DISABLED"),
        pytest.param({}, id="outside-lambda"),
        pytest.param({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "1"}, id="lambda-disabled"),
        pytest.param({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, id="sam-local"),
    ],
)
def test_without_tracing_no_handler_imports_the_xray_sdk(environment: dict[str, str]) -> None:
    report = run_handlers(**environment)
    assert report["disabled"] is True
    assert report["xray_modules"] == []
    assert report["returned"] == {"next": "wait", "polls": 1}


def test_in_lambda_the_handler_call_is_traced_through_xray() -> None:
    report = run_handlers(
        LAMBDA_TASK_ROOT=str(REPO),
        AWS_LAMBDA_FUNCTION_NAME="wanflow-status",
        _X_AMZN_TRACE_ID=TRACE_HEADER,
        POWERTOOLS_SERVICE_NAME="wanflow",
        POWERTOOLS_TRACER_CAPTURE_RESPONSE="false",
    )
    assert report["disabled"] is False
    assert "aws_xray_sdk.core" in report["xray_modules"]
    # Patched at import, as Powertools' Tracer always did: AWS calls and DashScope/video downloads are traced.
    assert {"botocore", "httpx"} <= set(report["patched"])
    assert report["returned"] == {"next": "wait", "polls": 1}
    [handler] = [entity for entity in report["entities"] if entity["name"] == "## lambda_handler"]
    assert handler["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert handler["annotations"] == {"ColdStart": True, "Service": "wanflow"}
    assert "metadata" not in handler  # POWERTOOLS_TRACER_CAPTURE_RESPONSE=false keeps responses out of traces
