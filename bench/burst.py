"""Issue 9's burst: 1,000 jobs at once through the whole local stack, against the DashScope emulator.

    .venv/bin/python -m bench.burst                        # 1,000 jobs: about 13 minutes on 2 cores
    BENCH_BURST_JOBS=100 .venv/bin/python -m bench.burst   # a quick try (about 2 minutes)

What runs: `MotoStack` (template.yaml on moto; moto executes the real statemachine/job.asl.json; every Lambda
handler in this process) with its local HTTP API, and the emulator with its rate limits on (per-model submit rate,
20 queries/s) in a child process, so that its HTTP server, lifecycle ticks and renders use the second core. All jobs
are POSTed to /v1/jobs from SUBMIT_THREADS threads as fast as the API answers; then the bench waits for one
notification per job. No sweeper runs: a job the main path loses stays lost, and is counted.

The scenario, and why these numbers:
- one model, wan2.6-i2v-flash (submit 5/s at DashScope), 720P, 2 s, silent (the cheapest video to render),
  first frame a 320x256 PNG sent as a data URI (so each job also stashes its image in S3, as users' jobs do);
- SLOTS = 12 running slots (`ModelSlots`), and the emulator told the account may run as many (`max_running`), as
  for an account with raised quotas; otherwise tasks beyond DashScope's 5 would wait PENDING there, holding slots;
- poll interval 1 s (the smallest the stack takes) and the default query budget, 15/s, spaced at 90%: 13.5/s.
  With every slot busy the polls need about SLOTS/s, so 12 slots stay under the budget and no poll is pushed back
  for want of a turn (above 13 the comparison with the ideal would measure the budget, not the pipeline);
- tasks of PENDING_SECONDS + RUNNING_SECONDS = 7 s at DashScope: long against what a slot costs besides the task
  (seeing its end, up to one poll interval later; the next job's grant, execution start and create), short enough
  for 1,000 jobs in about 10 minutes. Creates then come at about SLOTS / 8 s = 1.5/s, far under the 4.5/s pacing;
- SUBMIT_THREADS = 4: the API's throughput here is bounded by this process's one core (the GIL), not by the
  number of callers. 16 threads submitted 300 jobs no faster (46 s against 44 s) but slowed everything else (p95
  end detection 8.1 s against 4.3 s), because every handler thread then waits longer for the GIL;
- the stack runs with `in_process_aws=True`: the handlers' AWS calls reach moto's application directly instead of
  over loopback HTTP. Over HTTP the local stack costs about 0.75 s of CPU per job (about 150 AWS requests per job
  at 2 to 2.5 ms each, plus a thread and a TCP connection per request); the 300-job run over HTTP needed 390 s to
  submit, API calls passed the function's 29 s timeout (answered 500 though the job was stored) and CheckStatus
  invocations passed theirs (jobs FAILED). That is the local stack's limit on 2 cores, not wanflow's.

Reported:
- `outcomes`: jobs by final status, with `failures_by_code`; `lost` (accepted, and no notification or not ended);
  `accepted_202`, `refused` (other answers; 0 = no answer), the API's accept latency (client side, p50/p95);
- `tasks_per_job`: emulator tasks / jobs; `jobs_with_more_than_one_task` (matched through the image's presigned URL,
  which names the job) and `duplicate_notifications`;
- `queries_per_second`: peak (busiest sliding second, DashScope's way of counting) and mean (queries / (last -
  first)) of GET /tasks/{id}, against the budget; the same for creates against the submit rate; `throttled_429`
  over every kind of request, and when each came (seconds after the first POST);
- `create_sent_after_turn_seconds`: how long after its paced turn each create left wanflow (see TurnDelays);
- `end_detection_seconds`: job `finished_at` minus its task's `end_time` at the emulator, p50/p95, against one
  poll interval + 5 s; split into the part until the poll saw the end (`seen`, timed by a wrapper around the status
  handler) and the finalizer's (`finalize`: video streamed to S3, job recorded, notification published); and
  apart for the tasks that ended `while_submitting` (the API taking jobs competes for this process's GIL) and
  `after_submitting`;
- `wall_seconds`: from the first POST to the last job's `finished_at`, against the ideal: jobs x mean task time
  (create to end, at the emulator) / slots. `ideal_with_detection_seconds` adds the measured mean `seen` delay to
  each task: what a slot costs when the only overhead is seeing the end one poll later;
- `cpu_seconds` of this process and of the emulator's, and `bench_seconds` (the whole run, setup included).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx

JOBS = int(os.environ.get("BENCH_BURST_JOBS", "1000"))
MODEL = "wan2.6-i2v-flash"
SUBMIT_RPS = 5  # the model's submit rate at DashScope (capability table)
SLOTS = 12
POLL_INTERVAL_SECONDS = 1
QUERY_BUDGET_RPS = 15
DASHSCOPE_QUERY_LIMIT = 20
PENDING_SECONDS = 0.5
RUNNING_SECONDS = 6.5
SUBMIT_THREADS = int(os.environ.get("BENCH_BURST_SUBMIT_THREADS", "4"))
PROGRESS_SECONDS = 30
API_KEY = "sk-bench-burst"
_JOB_ID_IN_URL = re.compile(r"/([0-9a-f]{32})/image\.")

Submitted = tuple[int, int, str | None, float]  # (number, HTTP status or 0, job id, seconds)


def job_body(image_uri: str, number: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "input": {"prompt": f"burst job {number}", "img_url": image_uri},
        "parameters": {"resolution": "720P", "duration": 2, "audio": False},
    }


# -- the emulator, in a child process ---------------------------------------------------------------


def serve_emulator(settings: dict[str, Any]) -> None:
    """Child process: run an emulator until stdin closes; print its URLs as one JSON line first."""
    from wanflow_tools.emulator import Emulator, EmulatorConfig

    logging.basicConfig(level=logging.WARNING)
    with Emulator(EmulatorConfig(**settings)) as emulator:
        print(json.dumps({"root_url": emulator.root_url, "base_url": emulator.base_url}), flush=True)
        sys.stdin.read()


class EmulatorProcess:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.process: subprocess.Popen[str] | None = None
        self.root_url = self.base_url = ""

    def __enter__(self) -> EmulatorProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.burst", "--emulator", json.dumps(self.settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        urls = json.loads(self.process.stdout.readline())
        self.root_url, self.base_url = urls["root_url"], urls["base_url"]
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def get(self, path: str) -> Any:
        return httpx.get(f"{self.root_url}{path}", timeout=120).json()


# -- instrumentation --------------------------------------------------------------------------------


class SeenTimes:
    """Wraps the status handler: when a poll returns "finalize" or "fail", the moment it saw the task's end."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._lock = threading.Lock()

    def handler(self, event: Any, context: Any) -> Any:
        from functions.status.app import lambda_handler

        result = lambda_handler(event, context)
        if isinstance(result, dict) and result.get("next") in ("finalize", "fail"):
            with self._lock:
                self.times.setdefault(event["job_id"], time.time())
        return result


class TurnDelays:
    """How long after its paced turn each create left wanflow.

    The create step takes its turn (`pacing.create_turn` returns, after waiting for it) and sends the request
    (`DashScopeClient.create_task`) in the same thread; in between it records the claim in the job and builds the
    request, and this process's other threads may hold the GIL. Creates are spaced for 90% of the submit rate, so
    gaps that differ by more than the headroom (22 ms at 5/s) can put six creates into one second at DashScope.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._turns = threading.local()
        self._originals: dict[str, Any] = {}

    def __enter__(self) -> TurnDelays:
        from wanflow import dashscope
        from wanflow.usecases import pacing

        create_turn, create_task = pacing.create_turn, dashscope.DashScopeClient.create_task
        self._originals = {"create_turn": create_turn, "create_task": create_task}
        turns, delays = self._turns, self.delays

        def timed_turn(*args: Any, **kwargs: Any) -> bool:
            granted = create_turn(*args, **kwargs)
            turns.at = time.time() if granted else None
            return granted

        def timed_create(client: Any, body: Any) -> Any:
            turn = getattr(turns, "at", None)
            if turn is not None:
                delays.append(time.time() - turn)
                turns.at = None
            return create_task(client, body)

        setattr(pacing, "create_turn", timed_turn)  # noqa: B010 - typed modules: a plain assignment fails mypy
        setattr(dashscope.DashScopeClient, "create_task", timed_create)  # noqa: B010
        return self

    def __exit__(self, *exc_info: object) -> None:
        from wanflow import dashscope
        from wanflow.usecases import pacing

        setattr(pacing, "create_turn", self._originals["create_turn"])  # noqa: B010
        setattr(dashscope.DashScopeClient, "create_task", self._originals["create_task"])  # noqa: B010


class Progress:
    """One line on stderr every PROGRESS_SECONDS: whether all jobs are submitted, and how many ended."""

    def __init__(self, stack: Any, jobs: int, started: float) -> None:
        self.stack, self.jobs, self.started = stack, jobs, started
        self.submitted = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(PROGRESS_SECONDS):
            ended = len(self.stack.notifications())
            phase = "all submitted" if self.submitted else "submitting"
            elapsed = time.time() - self.started
            print(f"burst: {elapsed:5.0f} s, {phase}, {ended}/{self.jobs} jobs ended", file=sys.stderr, flush=True)


def _epoch(moment: str | None) -> float | None:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp() if moment else None


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "mean": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "mean": round(statistics.fmean(ordered), 3),
        "max": round(ordered[-1], 3),
    }


# -- the run ----------------------------------------------------------------------------------------


def submit_all(api_url: str, count: int) -> list[Submitted]:
    """POST `count` jobs from SUBMIT_THREADS threads."""
    from wanflow_tools.testing import image_data_uri

    image = image_data_uri(320, 256)
    local = threading.local()

    def one(number: int) -> Submitted:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=api_url, timeout=600)
        started = time.perf_counter()
        try:
            response = client.post("/v1/jobs", json=job_body(image, number))
        except httpx.HTTPError:
            return number, 0, None, time.perf_counter() - started  # no answer at all
        seconds = time.perf_counter() - started
        job_id = response.json().get("job_id") if response.status_code == 202 else None
        return number, response.status_code, job_id, seconds

    with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
        return list(pool.map(one, range(count)))


def final_jobs(api_url: str, job_ids: list[str], notifications: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each job as it ended (its notification carries the job), or as the API shows it now if it never did."""
    jobs = {n["message"]["job"]["job_id"]: n["message"]["job"] for n in notifications}
    missing = [job_id for job_id in job_ids if job_id not in jobs]
    with httpx.Client(base_url=api_url, timeout=120) as client:
        for job_id in missing:
            jobs[job_id] = client.get(f"/v1/jobs/{job_id}").json()
    return {job_id: jobs[job_id] for job_id in job_ids}


def run(jobs: int = JOBS) -> dict[str, Any]:
    from wanflow.observability import logger as wanflow_logger
    from wanflow.wiring import reset as reset_application
    from wanflow_tools.moto_stack.stack import MotoStack

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    # The stack disables Powertools metrics while it runs; keep them off afterwards too (no EMF lines on stdout).
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    emulator_settings = {
        "api_key": API_KEY,
        "pending_seconds": PENDING_SECONDS,
        "running_seconds": RUNNING_SECONDS,
        "rate_limits": True,
        "max_running": {MODEL: SLOTS},
        "render_workers": 2,
    }
    seen = SeenTimes()
    bench_started = time.perf_counter()
    cpu_started = time.process_time()
    with (
        # Powertools keeps adding metrics while they are disabled and prints them anyway at the 100th value of one
        # (an EMF line on stdout every 100 jobs): stdout is for the bench's JSON, so everything else goes to stderr.
        contextlib.redirect_stdout(sys.stderr),
        TurnDelays() as turn_delays,
        EmulatorProcess(emulator_settings) as emulator,
        tempfile.TemporaryDirectory() as state_dir,
        MotoStack(
            state_dir=state_dir,
            api_port=0,
            dashscope_base_url=emulator.base_url,
            dashscope_api_key=API_KEY,
            poll_interval_seconds=POLL_INTERVAL_SECONDS,
            parameter_overrides={"ModelSlots": f"{MODEL}={SLOTS}", "QueryBudgetPerSecond": QUERY_BUDGET_RPS},
            handlers={"StatusFunction": seen.handler},
            in_process_aws=True,
        ) as stack,
    ):
        reset_application()
        wanflow_logger.setLevel(logging.WARNING)
        api_url = stack.api_url
        assert api_url is not None
        # One request first, so that the burst does not also measure the API function's cold start (every submit
        # thread building the same boto3 clients at once).
        httpx.get(f"{api_url}/v1/jobs", timeout=60).raise_for_status()
        setup_seconds = time.perf_counter() - bench_started

        submit_started = time.time()
        with Progress(stack, jobs, submit_started) as progress:
            submitted = submit_all(api_url, jobs)
            progress.submitted = True
            submitted_at = time.time()
            accepted = [job_id for _, status, job_id, _ in submitted if status == 202 and job_id]
            ideal = jobs * (PENDING_SECONDS + RUNNING_SECONDS) / SLOTS
            with contextlib.suppress(TimeoutError):  # the jobs that never end are counted as lost below
                stack.wait_for_notifications(len(accepted), timeout=max(120.0, 3 * ideal))
            time.sleep(3 * POLL_INTERVAL_SECONDS)  # a duplicate notification would have arrived by now
        notifications = [n for n in stack.notifications() if isinstance(n["message"], dict) and "job" in n["message"]]
        final = final_jobs(api_url, accepted, notifications)
        tasks = emulator.get("/_emulator/tasks")["tasks"]
        requests = emulator.get("/_emulator/requests?times=1")["requests"]
        stack_cpu = time.process_time() - cpu_started
    reset_application()
    return summarize(
        jobs=jobs,
        submitted=submitted,
        submit_started=submit_started,
        submitted_at=submitted_at,
        final=final,
        notifications=notifications,
        tasks=tasks,
        requests=requests,
        seen=seen.times,
        turn_delays=turn_delays.delays,
        cpu_seconds={
            "stack_process": round(stack_cpu, 1),
            "emulator_process": round(_children_cpu_seconds(), 1),
        },
        setup_seconds=setup_seconds,
        bench_seconds=time.perf_counter() - bench_started,
    )


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the emulator, once it has exited
    return usage.ru_utime + usage.ru_stime


def summarize(
    *,
    jobs: int,
    submitted: list[Submitted],
    submit_started: float,
    submitted_at: float,
    final: dict[str, dict[str, Any]],
    notifications: list[dict[str, Any]],
    tasks: list[dict[str, Any]],
    requests: dict[str, Any],
    seen: dict[str, float],
    turn_delays: list[float],
    cpu_seconds: dict[str, float],
    setup_seconds: float,
    bench_seconds: float,
) -> dict[str, Any]:
    notified = Counter(n["message"]["job"]["job_id"] for n in notifications)
    lost = [job_id for job_id, job in final.items() if job_id not in notified or job.get("finished_at") is None]
    failures = Counter(
        (job.get("error") or {}).get("code", "?") for job in final.values() if job.get("status") == "FAILED"
    )

    tasks_by_job: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        match = _JOB_ID_IN_URL.search(task.get("img_url") or "")
        tasks_by_job.setdefault(match.group(1) if match else "?", []).append(task)
    task_by_id = {task["task_id"]: task for task in tasks}

    detection, seen_part, finalize_part, task_times, finished_times = [], [], [], [], []
    # The same, for the tasks that ended while jobs were still being submitted and for those that ended after.
    detection_by_phase: dict[str, list[float]] = {"while_submitting": [], "after_submitting": []}
    seen_by_phase: dict[str, list[float]] = {"while_submitting": [], "after_submitting": []}
    for job_id, job in final.items():
        finished = _epoch(job.get("finished_at"))
        if finished is not None:
            finished_times.append(finished)
        found = task_by_id.get((job.get("provider") or {}).get("task_id") or "")
        if found is None or finished is None or found.get("end_time") is None:
            continue
        task = found
        phase = "while_submitting" if task["end_time"] < submitted_at else "after_submitting"
        task_times.append(task["end_time"] - task["submit_time"])
        detection.append(finished - task["end_time"])
        detection_by_phase[phase].append(finished - task["end_time"])
        if job_id in seen:
            seen_part.append(seen[job_id] - task["end_time"])
            seen_by_phase[phase].append(seen[job_id] - task["end_time"])
            finalize_part.append(finished - seen[job_id])

    wall = max(finished_times) - submit_started if finished_times else None
    mean_task = statistics.fmean(task_times) if task_times else PENDING_SECONDS + RUNNING_SECONDS
    ideal = jobs * mean_task / SLOTS
    ideal_with_detection = jobs * (mean_task + (statistics.fmean(seen_part) if seen_part else 0.0)) / SLOTS

    query, create = requests.get("query") or {}, requests.get("create") or {}
    throttled = sum(kind.get("throttled", 0) for kind in requests.values())
    detection_stats = _percentiles(detection)
    detection_goal = POLL_INTERVAL_SECONDS + 5
    p95_detection = detection_stats["p95"]
    return {
        "scenario": {
            "jobs": jobs,
            "model": MODEL,
            "video": "720P, 2 s, silent, from a 320x256 PNG data URI",
            "slots": SLOTS,
            "poll_interval_seconds": POLL_INTERVAL_SECONDS,
            "query_budget_rps": QUERY_BUDGET_RPS,
            "emulator_pending_seconds": PENDING_SECONDS,
            "emulator_running_seconds": RUNNING_SECONDS,
            "submit_threads": SUBMIT_THREADS,
            "cpus": os.cpu_count(),
        },
        "outcomes": dict(sorted(Counter(job.get("status", "MISSING") for job in final.values()).items())),
        "failures_by_code": dict(failures),
        "accepted_202": sum(1 for _, status, _, _ in submitted if status == 202),
        "refused": dict(Counter(str(status) for _, status, _, _ in submitted if status != 202)),
        "lost": len(lost),
        "notifications": sum(notified.values()),
        # Stored and run although the POST was not answered 202 (the API function outlived its 29 s timeout, as API
        # Gateway's integration timeout would answer 504 while the Lambda finishes): a retry without an
        # Idempotency-Key would have made a second job.
        "notified_without_202": len(set(notified) - set(final)),
        "duplicate_notifications": sum(count - 1 for count in notified.values() if count > 1),
        "accept_latency_seconds": _percentiles([seconds for _, status, _, seconds in submitted if status == 202]),
        "submit_all_seconds": round(submitted_at - submit_started, 1),
        "emulator_tasks": len(tasks),
        "tasks_per_job": round(len(tasks) / jobs, 4),
        "jobs_with_more_than_one_task": sum(1 for found in tasks_by_job.values() if len(found) > 1),
        "tasks_not_matched_to_a_job": len(tasks_by_job.get("?", [])),
        "queries_per_second": {
            "requests": query.get("requests", 0),
            "peak": query.get("peak_per_second", 0),
            "mean": _mean_rate(query),
            "budget": QUERY_BUDGET_RPS,
            "paced_at": QUERY_BUDGET_RPS * 0.9,
            "dashscope_limit": DASHSCOPE_QUERY_LIMIT,
        },
        "creates_per_second": {
            "requests": create.get("requests", 0),
            "peak": create.get("peak_per_second", 0),
            "mean": _mean_rate(create),
            "paced_at": SUBMIT_RPS * 0.9,
            "dashscope_limit": SUBMIT_RPS,
        },
        "throttled_429": throttled,
        "throttled_429_by_kind": {name: kind.get("throttled", 0) for name, kind in requests.items()},
        "throttled_429_at_seconds": sorted(
            round(moment - submit_started, 1)
            for kind in requests.values()
            for moment in kind.get("throttled_times", [])
        ),
        "create_sent_after_turn_seconds": _percentiles(turn_delays),
        "task_seconds": _percentiles(task_times),
        "end_detection_seconds": {
            **detection_stats,
            "goal_p95": detection_goal,
            "seen": _percentiles(seen_part),
            "finalize": _percentiles(finalize_part),
            **{
                phase: {
                    "tasks": len(values),
                    **_percentiles(values),
                    "seen": _percentiles(seen_by_phase[phase]),
                }
                for phase, values in detection_by_phase.items()
            },
        },
        "wall_seconds": round(wall, 1) if wall is not None else None,
        "ideal_seconds": round(ideal, 1),
        "wall_to_ideal": round(wall / ideal, 3) if wall is not None else None,
        "ideal_with_detection_seconds": round(ideal_with_detection, 1),
        "wall_to_ideal_with_detection": round(wall / ideal_with_detection, 3) if wall is not None else None,
        "goals": {
            "zero_lost": not lost,
            "zero_duplicates": len(tasks) == jobs and all(count == 1 for count in notified.values()),
            "zero_throttled": throttled == 0,
            "peak_queries_under_budget": query.get("peak_per_second", 0) <= QUERY_BUDGET_RPS,
            "p95_end_detection_within_poll_plus_5s": p95_detection is not None and p95_detection <= detection_goal,
            "wall_within_10pct_of_ideal": wall is not None and wall <= 1.1 * ideal,
        },
        "cpu_seconds": cpu_seconds,
        "setup_seconds": round(setup_seconds, 1),
        "bench_seconds": round(bench_seconds, 1),
    }


def _mean_rate(kind: dict[str, Any]) -> float | None:
    """Requests per second between the first and the last."""
    span = kind["last"] - kind["first"] if kind.get("requests", 0) > 1 else 0
    return round(kind["requests"] / span, 2) if span else None


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--emulator":
        serve_emulator(json.loads(sys.argv[2]))
        return
    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
