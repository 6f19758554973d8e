"""checkov, the usual IaC scanner, on template.yaml: no check fails, and every skip is one the template states.

checkov pins boto3 and other packages below requirements.lock, so it runs from a virtualenv of its own
(.venv/checkov/, pinned by requirements-checkov.lock), which `make test` and `make checkov` build. It scans the SAM
template itself (`--framework cloudformation` reads Serverless resources and merges Globals into them). A finding
is fixed in the template or skipped in the resource's `Metadata: checkov: skip:` with a one-line reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

pytestmark = pytest.mark.slow  # runs checkov over the template in a subprocess

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
CHECKOV = REPO / ".venv" / "checkov" / "bin" / "checkov"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    if not CHECKOV.exists():
        message = f"{CHECKOV.relative_to(REPO)} is missing: `make checkov` (or `make test`) installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    completed = subprocess.run(
        # --skip-download: no call to the vendor's platform (offline, and nothing there is needed).
        [
            str(CHECKOV),
            "--file",
            "template.yaml",
            "--framework",
            "cloudformation",
            "--skip-download",
            "--output",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # checkov exits 1 when a check fails; anything else that is not 0 is checkov itself failing.
    assert completed.returncode in (0, 1), completed.stderr[-4000:]
    result = json.loads(completed.stdout)
    assert isinstance(result, dict), f"checkov scanned nothing: {completed.stdout[:2000]}"
    return result


@pytest.fixture(scope="module")
def metadata_skips() -> dict[tuple[str, str], str]:
    """(check id, logical id) -> comment, from the template's Metadata."""
    skips = {}
    for logical_id, resource in yaml_parse(TEMPLATE.read_text())["Resources"].items():
        for skip in (resource.get("Metadata") or {}).get("checkov", {}).get("skip", []):
            skips[(skip["id"], logical_id)] = skip.get("comment", "")
    return skips


def checks(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return report["results"][kind]


def test_checkov_scanned_every_resource_of_the_template(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] == len(yaml_parse(TEMPLATE.read_text())["Resources"])
    assert summary["passed"] >= 50
    assert summary["checkov_version"].startswith("3.3.")


def test_no_checkov_check_fails(report: dict[str, Any]) -> None:
    failed = [
        f"{check['check_id']} on {check['resource']}: {check['check_name']}"
        for check in checks(report, "failed_checks")
    ]
    assert failed == [], "fix the template, or skip in the resource's Metadata with a reason:\n" + "\n".join(failed)


def test_every_skip_has_a_one_line_reason_and_is_one_checkov_applies(
    report: dict[str, Any], metadata_skips: dict[tuple[str, str], str]
) -> None:
    assert metadata_skips
    for (check_id, logical_id), comment in metadata_skips.items():
        assert re.fullmatch(r"CKV_AWS_\d+", check_id), (check_id, logical_id)
        assert comment.strip() and "\n" not in comment and len(comment) <= 200, (check_id, logical_id, comment)
    skipped = {
        (check["check_id"], check["resource"].rsplit(".", 1)[1]): check["check_result"]["suppress_comment"]
        for check in checks(report, "skipped_checks")
    }
    # A skip for a check that no longer applies to its resource is stale: checkov does not report it as skipped.
    assert skipped == metadata_skips
