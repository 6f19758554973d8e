"""How a job is shown (with short-lived URLs of its video and first frame) and where its documents live in the output
bucket."""

from __future__ import annotations

from typing import Any

from wanflow.adapters.objects import parse_s3_uri
from wanflow.jobs import Job
from wanflow.usecases import admission
from wanflow.usecases.context import Dependencies


def job_view(deps: Dependencies, job: Job, *, with_url: bool = True) -> dict[str, Any]:
    """The job as users see it: with a short-lived video URL once stored, a short-lived URL of its first frame
    (`first_frame_url`), and its place in the queue while queued.

    `with_url=False` is the job in an event or the document beside the video, seen by more than its owner: no
    presigned URL (no `first_frame_url` key at all), and only the origin of its webhook URL."""
    return job_views(deps, [job], with_url=with_url)[0]


def job_views(deps: Dependencies, jobs: list[Job], *, with_url: bool = True) -> list[dict[str, Any]]:
    """Several jobs as users see them (a page of a list): the queue is read once per model, not once per job."""
    queues = admission.queue_positions(deps, jobs)
    views = []
    for job in jobs:
        url = None
        if with_url and job.output is not None:
            bucket, key = parse_s3_uri(job.output.s3_uri)
            url = deps.objects.presigned_get(
                bucket, key, deps.settings.output_url_ttl_seconds, download_name=f"{job.job_id}.mp4"
            )
        view = job.public_view(output_url=url, queue=queues.get(job.job_id), reveal_webhook_url=with_url)
        if with_url:
            view["first_frame_url"] = first_frame_url(deps, job)
        views.append(view)
    return views


def first_frame_url(deps: Dependencies, job: Job) -> str | None:
    """A short-lived GET URL of the job's input image when it is in the intake bucket (an upload, a stashed
    data-URI image, an intake object), which a browser could not load from its s3:// URI; None for an https://
    image (the client loads `img_url` itself) and for a job without an image."""
    image = job.request.get("input", {}).get("img_url")
    if not isinstance(image, str) or not image.startswith("s3://"):
        return None
    try:
        bucket, key = parse_s3_uri(image)
    except ValueError:
        return None
    if bucket != deps.settings.intake_bucket:
        return None
    # Valid as long as the video's URL: the two are shown together.
    return deps.objects.presigned_get(bucket, key, deps.settings.output_url_ttl_seconds)


def output_key(job: Job, extension: str) -> str:
    """`videos/yyyy/mm/dd/<job_id>.mp4` (and `.json` beside it), by the job's creation day."""
    return f"videos/{job.created_at:%Y/%m/%d}/{job.job_id}.{extension}"
