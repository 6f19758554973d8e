"""Schemathesis, every check, against the HTTP API of the local stack (docs/openapi.yaml as a user reads it).

Bounded: a fixed seed and a fixed number of examples per operation (about a thousand requests, about a minute).
Local mode has no auth (IAM is API Gateway's job when deployed), so the run uses the document without its
`security` requirement; everything else is the document as published. DashScope tasks never finish during the
run (the emulator keeps them pending), so no video is rendered and nothing is polled.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from wanflow.wiring import reset as reset_application
from wanflow_tools.emulator import Emulator, EmulatorConfig
from wanflow_tools.moto_stack import MotoStack

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Schemathesis's CLI (`st`), run with more recursion headroom than Python's default 1,000 frames: hypothesis
# describes the strategy of the nested batch body recursively, and on Python 3.11 running out of frames inside `ast`
# surfaces as "SystemError: AST constructor recursion depth mismatch", failing a run now and then.
SCHEMATHESIS = [
    sys.executable,
    "-c",
    "import sys; sys.setrecursionlimit(4000); from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
]
CONFIG = Path(__file__).resolve().parent / "schemathesis" / "schemathesis.toml"
API_KEY = "sk-fuzz-test-key"
EXAMPLES_PER_OPERATION = 60
DEADLINE_SECONDS = 600


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoStack]:
    config = EmulatorConfig(api_key=API_KEY, pending_seconds=3600, running_seconds=3600, rate_limits=False)
    with (
        Emulator(config) as emulator,
        MotoStack(
            state_dir=tmp_path_factory.mktemp("state"),
            api_port=0,
            dashscope_base_url=emulator.base_url,
            dashscope_api_key=API_KEY,
            poll_interval_seconds=3600,
        ) as running,
    ):
        reset_application()
        yield running
    reset_application()


def local_mode_document(folder: Path) -> Path:
    """docs/openapi.yaml without its security requirement, beside the event schema it references."""
    document = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    document.pop("security", None)
    (folder / "docs").mkdir()
    shutil.copytree(REPO / "schemas", folder / "schemas")
    path = folder / "docs" / "openapi.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_every_schemathesis_check_passes_against_the_local_api(stack: MotoStack, tmp_path: Path) -> None:
    document = local_mode_document(tmp_path)
    command = [
        *SCHEMATHESIS, "--config-file", str(CONFIG), "--no-color",
        "run", str(document),
        "--url", stack.api_url,
        "--checks", "all",
        "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--seed", "20261130",
        "--workers", "2",
        "--request-timeout", "30",
        "--generation-database", "none",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE_SECONDS, cwd=tmp_path, check=False)
    summary = run.stdout[-6000:]
    assert run.returncode == 0, summary
    generated = re.search(r"(\d+) generated", summary)
    assert generated and int(generated.group(1)) >= 500, summary  # the run really exercised the API
