"""Finalizing and ending: the video stored once, the job ended once, one notification whoever finishes it."""

from __future__ import annotations

import pytest

from wanflow.dashscope import TaskStatus
from wanflow.errors import JobErrorCode, ThrottledError, TransientError
from wanflow.events import CaughtError, PollState, StepError
from wanflow.jobs import Job, JobStatus, Notification, Output, Stage
from wanflow.usecases import ending
from wanflow.usecases.finalize import finalize_job
from wanflow.usecases.poll import check_status
from wanflow.usecases.submit import submit_api_job
from wanflow.usecases.views import output_key
from wanflow_tools.fakes import FakeWorld, caller, sample_job_body

VIDEO = b"\x00\x00\x00\x18ftypmp42 a small video"


def succeeded(world: FakeWorld, job: Job) -> Job:
    """The task succeeded and the status step saw it: the job is finalizing."""
    world.dashscope.succeed("task-1", "https://video/1")
    world.objects.videos["https://video/1"] = VIDEO
    assert check_status(world.deps, job.job_id, PollState(next="wait")).next == "finalize"
    stored = world.jobs.get(job.job_id)
    assert stored is not None
    return stored


def test_finalize_stores_the_video_ends_the_job_and_notifies_once(world: FakeWorld, submitted: Job) -> None:
    job = finalize_job(world.deps, succeeded(world, submitted).job_id)
    assert (job.status, job.stage, job.notification) == (JobStatus.SUCCEEDED, Stage.DONE, Notification.PUBLISHED)
    assert job.output is not None and job.output.bytes == len(VIDEO)
    video = world.objects.objects[("output", output_key(job, "mp4"))]
    assert video.data == VIDEO and video.metadata["job-id"] == job.job_id
    assert world.objects.json("output", output_key(job, "json"))["status"] == "SUCCEEDED"
    assert [event["type"] for event in world.notifier.for_job(job.job_id)] == ["job.succeeded"]


def test_a_second_finalize_run_copies_nothing_and_notifies_nobody(world: FakeWorld, submitted: Job) -> None:
    job_id = succeeded(world, submitted).job_id
    finalize_job(world.deps, job_id)
    finalize_job(world.deps, job_id)
    assert world.objects.copies == 1 and len(world.notifier.for_job(job_id)) == 1


def test_a_video_stored_by_a_run_that_died_is_recorded_not_downloaded_again(world: FakeWorld, submitted: Job) -> None:
    job = succeeded(world, submitted)
    world.objects.copy_url_to_s3(
        "https://video/1",
        "output",
        output_key(job, "mp4"),
        content_type="video/mp4",
        metadata={"job-id": job.job_id},
    )
    world.dashscope.get_errors = [AssertionError("the finalizer must not ask for the URL again")]
    ended = finalize_job(world.deps, job.job_id)
    assert ended.status is JobStatus.SUCCEEDED and world.objects.copies == 1
    assert ended.output is not None and ended.output.bytes == len(VIDEO)


def poll_to_finalize(world: FakeWorld, job: Job, url: str = "https://video/1") -> PollState:
    world.dashscope.succeed("task-1", url)
    world.objects.videos[url] = VIDEO
    state = check_status(world.deps, job.job_id, PollState(next="wait"))
    assert state.next == "finalize" and state.video is not None
    return state


def test_the_finalizer_downloads_the_url_the_poll_saw_without_asking_dashscope_again(
    world: FakeWorld, submitted: Job
) -> None:
    state = poll_to_finalize(world, submitted)
    queries = world.dashscope.queries
    job = finalize_job(world.deps, submitted.job_id, state.video)
    assert job.status is JobStatus.SUCCEEDED and world.objects.copies == 1
    assert world.dashscope.queries == queries


def test_a_seen_url_that_expired_is_asked_for_again_and_a_fresh_one_is_used(world: FakeWorld, submitted: Job) -> None:
    state = poll_to_finalize(world, submitted, "https://video/old")
    world.objects.expired_urls.add("https://video/old")
    world.dashscope.succeed("task-1", "https://video/fresh")
    world.objects.videos["https://video/fresh"] = VIDEO
    queries = world.dashscope.queries
    job = finalize_job(world.deps, submitted.job_id, state.video)
    assert job.status is JobStatus.SUCCEEDED and world.dashscope.queries == queries + 1


@pytest.mark.parametrize("token", ["v1.not-a-token", "garbage"])
def test_a_token_that_cannot_be_opened_falls_back_to_asking_dashscope(
    world: FakeWorld, submitted: Job, token: str
) -> None:
    poll_to_finalize(world, submitted)
    queries = world.dashscope.queries
    job = finalize_job(world.deps, submitted.job_id, token)
    assert job.status is JobStatus.SUCCEEDED and world.dashscope.queries == queries + 1


def test_a_token_sealed_for_another_job_is_not_used(world: FakeWorld, submitted: Job) -> None:
    state = poll_to_finalize(world, submitted)
    other, _ = submit_api_job(world.deps, sample_job_body(), idempotency_key=None, caller=caller())
    other = world.run_create_step(other.job_id)
    world.dashscope.succeed(other.provider.task_id or "", "https://video/other")
    world.objects.videos["https://video/other"] = b"other video"
    check_status(world.deps, other.job_id, PollState(next="wait"))
    job = finalize_job(world.deps, other.job_id, state.video)  # the first job's token
    assert job.output is not None and job.output.bytes == len(b"other video")


def test_a_task_dashscope_forgot_ends_the_job_with_an_expired_video(world: FakeWorld, submitted: Job) -> None:
    job = succeeded(world, submitted)
    world.dashscope.set_status("task-1", TaskStatus.UNKNOWN)
    ended = finalize_job(world.deps, job.job_id)
    assert ended.status is JobStatus.FAILED and ended.error is not None
    assert ended.error.code == JobErrorCode.VIDEO_URL_EXPIRED
    assert [event["type"] for event in world.notifier.for_job(job.job_id)] == ["job.failed"]


def test_a_throttled_query_in_finalize_is_retried_by_the_state_machine(world: FakeWorld, submitted: Job) -> None:
    job = succeeded(world, submitted)
    world.dashscope.get_errors = [ThrottledError("slow down", code="Throttling.RateQuota")]
    with pytest.raises(TransientError):
        finalize_job(world.deps, job.job_id)
    assert world.jobs.get(job.job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]


def test_record_failure_ends_failed_with_the_status_steps_error(world: FakeWorld, submitted: Job) -> None:
    error = StepError(code="DataInspectionFailed", message="flagged", outcome="failed", provider_request_id="r1")
    job = ending.record_failure(world.deps, submitted.job_id, error)
    assert job.status is JobStatus.FAILED and job.error is not None
    assert (job.error.code, job.error.provider_request_id) == ("DataInspectionFailed", "r1")


def test_record_failure_of_a_canceled_task_ends_canceled(world: FakeWorld, submitted: Job) -> None:
    error = StepError(code="TaskFailed", message="canceled", outcome="canceled")
    assert ending.record_failure(world.deps, submitted.job_id, error).status is JobStatus.CANCELED
    assert [event["type"] for event in world.notifier.for_job(submitted.job_id)] == ["job.canceled"]


@pytest.mark.parametrize(
    ("caught", "finalizing", "code"),
    [
        (CaughtError(Error="JobFailure", Cause='{"errorMessage": "VideoUrlExpired: gone"}'), False, "VideoUrlExpired"),
        (CaughtError(Error="TransientError", Cause='{"errorMessage": "truncated"}'), True, "DownloadFailed"),
        (CaughtError(Error="KeyError", Cause="not json"), False, "InternalError"),
    ],
)
def test_a_caught_step_error_becomes_a_job_error(
    world: FakeWorld, submitted: Job, caught: CaughtError, finalizing: bool, code: str
) -> None:
    if finalizing:
        submitted = succeeded(world, submitted)
    job = ending.record_failure(world.deps, submitted.job_id, None, caught)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == code


def test_a_failure_after_the_video_was_stored_finishes_the_success(world: FakeWorld, submitted: Job) -> None:
    job = succeeded(world, submitted)
    world.notifier.fail = True
    with pytest.raises(RuntimeError):
        finalize_job(world.deps, job.job_id)  # stored and SUCCEEDED, then SNS failed
    world.notifier.fail = False
    caught = CaughtError(Error="RuntimeError", Cause="{}")
    assert ending.record_failure(world.deps, job.job_id, None, caught).status is JobStatus.SUCCEEDED


def test_two_finishers_publish_one_notification(world: FakeWorld, submitted: Job) -> None:
    error = StepError(code="TaskFailed", message="x", outcome="failed")
    first = ending.record_failure(world.deps, submitted.job_id, error)
    second = ending.record_failure(world.deps, submitted.job_id, error)
    assert first.status is second.status is JobStatus.FAILED
    assert len(world.notifier.for_job(submitted.job_id)) == 1


def test_an_ending_that_loses_a_race_keeps_the_other_ending(world: FakeWorld, submitted: Job) -> None:
    # While this process fails the job, another cancels it first: the cancel stands, one notification.
    def concurrent_cancel(_: Job) -> None:
        world.jobs.before_save = None
        other = world.jobs.get(submitted.job_id)
        assert other is not None
        other.advance(JobStatus.CANCELED, Stage.DONE)
        world.jobs.save(other)

    world.jobs.before_save = concurrent_cancel
    job = ending.end_failed(world.deps, submitted.job_id, "TaskFailed", "late")
    assert job.status is JobStatus.CANCELED and job.error is None
    assert [event["type"] for event in world.notifier.for_job(submitted.job_id)] == ["job.canceled"]


def test_a_notification_whose_publisher_died_stays_claimed(world: FakeWorld, submitted: Job) -> None:
    world.notifier.fail = True
    with pytest.raises(RuntimeError):
        ending.end_failed(world.deps, submitted.job_id, "TaskFailed", "x")
    job = world.jobs.get(submitted.job_id)
    assert job is not None and job.status is JobStatus.FAILED and job.notification is Notification.CLAIMED
    world.notifier.fail = False
    # Another finisher must not publish a claimed notification: only the sweeper does (see test_sweep).
    ending.publish_once(world.deps, job)
    assert world.notifier.for_job(submitted.job_id) == []


def test_a_run_that_died_after_recording_the_video_only_ends_the_job(world: FakeWorld, submitted: Job) -> None:
    job = succeeded(world, submitted)
    stored = world.objects.copy_url_to_s3(
        "https://video/1", "output", output_key(job, "mp4"), content_type="video/mp4", metadata={}
    )

    def recorded(current: Job) -> None:
        current.output = Output(s3_uri=stored.s3_uri, bytes=stored.bytes, sha256=stored.sha256)

    world.jobs.update(job.job_id, recorded)
    world.dashscope.get_errors = [AssertionError("the finalizer must not ask for the URL again")]
    ended = finalize_job(world.deps, job.job_id)
    assert ended.status is JobStatus.SUCCEEDED and world.objects.copies == 1
    assert len(world.notifier.for_job(job.job_id)) == 1
