"""Typed events of the state machine: what it passes between its steps (the S3 intake's are in s3_events).

The state (`ExecutionInput`) is `{"job_id": ..., "poll": {...}}` (statemachine/job.asl.json): CreateTask and
CheckStatus return a new `PollState` into `$.poll`, whose `next` the Choice state reads; RecordFailure gets the
whole state and, after a Catch, the caught error in `$.error`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# "submit": (again) create the task; "wait": wait, then query the task; "finalize": store the video; "fail": end.
NextStep = Literal["submit", "wait", "finalize", "fail"]


class StepError(BaseModel):
    """Why the status step sends a job down the failure path."""

    code: str
    message: str
    outcome: Literal["failed", "canceled"] | None = None
    provider_request_id: str | None = None


class PollState(BaseModel):
    """The poll loop's own state: what to do next, how long to wait first, how many polls so far."""

    next: NextStep
    wait_seconds: int = Field(default=0, ge=0)
    polls: int = Field(default=0, ge=0)
    # Queries in a row that DashScope throttled or did not answer: the next wait grows with them.
    throttled: int = Field(default=0, ge=0)
    error: StepError | None = None
    # The video URL the poll saw, sealed for the finalizer (wanflow.sealing): never in plain text in the history.
    video: str | None = None

    def as_state(self) -> dict[str, object]:
        """The JSON the state machine keeps in `$.poll` (no `error`, `video` or `throttled` unless there is one)."""
        state = self.model_dump(exclude_none=True)
        if not self.throttled:
            del state["throttled"]
        return state


class CaughtError(BaseModel):
    """A Step Functions Catch result: the Lambda error type and its JSON cause."""

    model_config = ConfigDict(populate_by_name=True)

    error: str = Field(default="", alias="Error")
    cause: str = Field(default="", alias="Cause")


class ExecutionInput(BaseModel):
    """The state every step receives; steps ignore what other steps added (`finalize`, `failure`)."""

    job_id: str
    poll: PollState = Field(default_factory=lambda: PollState(next="submit"))


class FailureInput(ExecutionInput):
    """RecordFailure's input: the state, plus the caught error when a step failed for good."""

    error: CaughtError | None = None
