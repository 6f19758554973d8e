"""Cold start: import time of each handler module, as a ratio to importing boto3 alone, in the same run.

Each import runs in a fresh interpreter (`python -X importtime` is not used: wall time of the import is what a
cold Lambda pays). Median of several runs; each run imports every module once, in turn, so that load from
elsewhere on the machine falls on all of them alike. Three settings, side by side:

- `tracing_disabled`: POWERTOOLS_TRACE_DISABLED=true, everything in .venv importable (the issue's setting; the
  goal is every handler at most 2.0x boto3 here).
- `layer_only`: the same, but only the packages the Lambda layer ships (layers/requirements.txt) can be
  imported. The development venv also holds click, rich and pygments, which httpx imports when they are present
  (for its command-line client); a deployed function has none of them.
- `lambda_traced`: as deployed: layer packages only, LAMBDA_TASK_ROOT set and POWERTOOLS_TRACE_DISABLED unset
  (template.yaml sets `Tracing: Active` for every function), so Powertools' Tracer imports the X-Ray SDK and
  patches botocore and httpx while the handler is imported.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HANDLERS = ("api", "intake", "status", "finalize", "record_failure", "sweeper")
RUNS = 7
LAYER_REQUIREMENTS = Path(__file__).resolve().parent.parent / "layers" / "requirements.txt"
FIRST_PARTY = frozenset({"wanflow", "wanflow_tools", "functions", "bench", "tests"})
_TIMED = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
# Installed before the clock starts: top-level names in `blocked` cannot be imported, as in the deployed layer.
_LAYER_ONLY = """import sys
class _NotInLayer:
    blocked = frozenset({blocked!r})
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in cls.blocked:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the Lambda layer)", name=name)
        return None
sys.meta_path.insert(0, _NotInLayer)
"""


def not_in_layer() -> list[str]:
    """Top-level modules installed in this venv by distributions that layers/requirements.txt does not list."""
    layer = set()
    for line in LAYER_REQUIREMENTS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            layer.add(_normalise(re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]))
    return sorted(
        module
        for module, distributions in metadata.packages_distributions().items()
        if module not in FIRST_PARTY and not any(_normalise(name) in layer for name in distributions)
    )


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def settings() -> dict[str, tuple[dict[str, str], str]]:
    """Setting name -> (environment changes, program prefix)."""
    layer_only = _LAYER_ONLY.format(blocked=not_in_layer())
    return {
        "tracing_disabled": ({"POWERTOOLS_TRACE_DISABLED": "true"}, ""),
        "layer_only": ({"POWERTOOLS_TRACE_DISABLED": "true"}, layer_only),
        "lambda_traced": ({"LAMBDA_TASK_ROOT": str(Path.cwd()), "AWS_LAMBDA_FUNCTION_NAME": "bench"}, layer_only),
    }


def import_samples(modules: list[str], changes: dict[str, str], prefix: str) -> dict[str, list[float]]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("POWERTOOLS_", "LAMBDA_"))}
    env.update(AWS_DEFAULT_REGION="us-east-1", **changes)
    samples: dict[str, list[float]] = {module: [] for module in modules}
    for _ in range(RUNS):
        for module in modules:
            out = subprocess.run(
                [sys.executable, "-c", prefix + _TIMED.format(module=module)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            samples[module].append(float(out.stdout.strip().splitlines()[-1]))
    return samples


def run() -> dict[str, dict[str, dict[str, float]]]:
    modules = ["boto3", *(f"functions.{handler}.app" for handler in HANDLERS)]
    results = {}
    for setting, (changes, prefix) in settings().items():
        medians = {
            module: statistics.median(times) for module, times in import_samples(modules, changes, prefix).items()
        }
        baseline = medians["boto3"]
        results[setting] = {
            module.removeprefix("functions.").removesuffix(".app"): {
                "seconds": round(seconds, 4),
                "ratio_to_boto3": round(seconds / baseline, 2),
            }
            for module, seconds in medians.items()
        }
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
