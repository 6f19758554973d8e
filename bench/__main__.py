"""`make bench`: run every benchmark and print its numbers as JSON (also saved to bench/results/latest.json)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import burst, cold_start, emulator_bench, finalizer, poll_budget

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def main() -> None:
    results = {
        "poll_budget": poll_budget.run(),
        "cold_start": cold_start.run(),
        "finalizer": finalizer.run(),
        "emulator": emulator_bench.run(),
        "burst": burst.run(),  # about 13 minutes on 2 cores (BENCH_BURST_JOBS=100 for a quick try)
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
