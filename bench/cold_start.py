"""Cold start: import time of each handler module, as a ratio to importing boto3 alone, in the same run.

Each import runs in a fresh interpreter (`python -X importtime` is not used: wall time of the import is what a
cold Lambda pays). Median of several runs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

HANDLERS = ("api", "intake", "status", "finalize", "record_failure", "sweeper")
RUNS = 7
_PROGRAM = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def import_seconds(module: str) -> float:
    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
    samples = []
    for _ in range(RUNS):
        out = subprocess.run(
            [sys.executable, "-c", _PROGRAM.format(module=module)], capture_output=True, text=True, check=True, env=env
        )
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def run() -> dict[str, dict[str, float]]:
    baseline = import_seconds("boto3")
    results = {"boto3": {"seconds": round(baseline, 4), "ratio_to_boto3": 1.0}}
    for handler in HANDLERS:
        seconds = import_seconds(f"functions.{handler}.app")
        results[handler] = {"seconds": round(seconds, 4), "ratio_to_boto3": round(seconds / baseline, 2)}
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
