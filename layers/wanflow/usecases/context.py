"""The adapters and settings a use case runs with; `wanflow.wiring` builds the real ones, tests build fakes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from wanflow.errors import NotFound
from wanflow.jobs import Job
from wanflow.ports import DashScopeApi, JobRepository, Notifier, ObjectStorage, WorkflowEngine
from wanflow.settings import Settings


@dataclass(frozen=True)
class Dependencies:
    settings: Settings
    jobs: JobRepository
    objects: ObjectStorage
    workflow: WorkflowEngine
    notifier: Notifier
    # A factory, called on each use: the real client reads its key from Secrets Manager (cached, rotation-aware).
    dashscope_client: Callable[[], DashScopeApi]
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    @property
    def dashscope(self) -> DashScopeApi:
        return self.dashscope_client()


def require_job(deps: Dependencies, job_id: str) -> Job:
    job = deps.jobs.get(job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job
