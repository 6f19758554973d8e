"""README.md states facts that live in code; these tests keep the two equal."""

from __future__ import annotations

import re
from pathlib import Path

from wanflow_tools.local_mode.banner import SAMPLE_IMAGE, Endpoints, example_commands
from wanflow_tools.moto_stack import MotoStack
from wanflow_tools.price_table import price_table_markdown

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_the_price_table_is_the_one_wanflow_capabilities_gives() -> None:
    match = re.search(r"<!-- price-table:begin -->\n(.*?)\n<!-- price-table:end -->", README, re.DOTALL)
    assert match, "README.md lost its price-table markers"
    assert match.group(1) == price_table_markdown(), "regenerate with: python -m wanflow_tools.price_table"


def test_the_local_mode_examples_are_the_ones_wanflow_local_prints() -> None:
    # What `wanflow local` prints on its default ports, as run from the repository root with the venv's wanflow.
    stack = MotoStack(state_dir=".wanflow", dashscope_base_url=None, dashscope_api_key="unused")
    endpoints = Endpoints(
        api_url="http://127.0.0.1:8000",
        aws_endpoint="http://127.0.0.1:5000",
        region=stack.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        dashscope_base_url="",
        dashscope_is_emulator=True,
        intake_bucket=stack.local_name("IntakeBucket"),
        output_bucket=stack.local_name("OutputBucket"),
        jobs_table="",
        topic_arn="",
        state_machine_arn="",
        notifications_path=Path(".wanflow/notifications.jsonl"),
        poll_interval_seconds=15,
    )
    relative_image = str(SAMPLE_IMAGE.relative_to(REPO_ROOT))
    commands = [
        line.strip().replace(str(SAMPLE_IMAGE), relative_image)
        for line in example_commands(endpoints, ".venv/bin/wanflow")
        if not line.strip().startswith("#")
    ]
    assert len(commands) == 4
    readme_lines = README.splitlines()
    for command in commands:
        assert command in readme_lines, f"README.md lacks the example:\n{command}"
