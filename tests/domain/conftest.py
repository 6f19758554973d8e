"""Domain tests: the use cases against in-memory fakes (wanflow_tools.fakes), no moto, no network."""

from __future__ import annotations

import pytest

from wanflow.jobs import Job
from wanflow_tools.fakes import FakeWorld, caller, sample_job_body


@pytest.fixture
def world() -> FakeWorld:
    return FakeWorld()


@pytest.fixture
def submitted(world: FakeWorld) -> Job:
    """A job from the API, granted a slot at once, whose execution's create step DashScope accepted (PENDING)."""
    from wanflow.usecases.submit import submit_api_job

    job, created = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    assert created
    return world.run_create_step(job.job_id)
