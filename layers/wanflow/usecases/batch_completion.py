"""The one `batch.completed` event of a batch (docs/product.md section 9), published when its last job ended.

`wanflow.usecases.ending` calls `job_ended` once a batch job's own notification is published (so the batch event
always follows the job events it counts). Recording an ending is one conditional write per job (a repeat changes
nothing), and the event is claimed with a conditional write before it is published, like a job's notification:
of several jobs ending at once, only the one whose write completed the set publishes, once.

A process that dies between a job's notification and its batch bookkeeping, or between the claim and the publish,
leaves work for the sweeper (`repair`), which finds such batches through their recently finished jobs.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from wanflow.batches import BATCH_COMPLETED, Completion
from wanflow.jobs import Job, Notification
from wanflow.usecases.context import Dependencies

logger = logging.getLogger(__name__)

# A claimed batch.completed still unconfirmed this long after the claim lost its publisher (as for jobs' events).
UNCONFIRMED_COMPLETION = timedelta(minutes=10)
_ANNOUNCED = (Notification.PUBLISHED, Notification.UNDELIVERABLE)


def job_ended(deps: Dependencies, job: Job) -> None:
    """Record that a batch job ended (its own notification is out); publish `batch.completed` if it was the last.

    Never raises: the job's ending is done whatever happens here, and the sweeper repairs what is left undone.
    """
    if job.batch_id is None or not job.status.is_final:
        return
    try:
        batch = deps.batches.record_ending(job.batch_id, job.job_id, job.status.value)
        if batch is None:
            logger.error("a batch job's batch does not exist", extra={"job_id": job.job_id, "batch_id": job.batch_id})
            return
        if batch.all_ended and batch.completion is Completion.NONE:
            publish_completion(deps, batch.batch_id)
    except Exception:
        logger.exception(
            "could not record the job's ending on its batch; the sweeper will",
            extra={"job_id": job.job_id, "batch_id": job.batch_id},
        )


def publish_completion(deps: Dependencies, batch_id: str, *, reclaim: bool = False) -> bool:
    """Claim and publish the batch's `batch.completed`; False if another process claimed (or published) it."""
    batch = deps.batches.claim_completion(batch_id, reclaim=reclaim)
    if batch is None:
        return False
    # Every status is in its endings; the event shows only the origin of the webhook URL (it reaches subscribers).
    deps.notifier.publish_batch_event(BATCH_COMPLETED, batch.public_view({}, reveal_webhook_url=False))
    deps.batches.confirm_completion(batch_id)
    logger.info("batch completed", extra={"batch_id": batch_id, "total": batch.total})
    return True


def repair(deps: Dependencies, finished: list[Job], now: datetime) -> dict[str, int]:
    """The sweeper's part, given the jobs that ended recently: record endings a dead process did not record, and
    publish `batch.completed` for batches whose last ending was recorded but whose event was not confirmed.

    A job counts once its own notification is out (published, or given up on as undeliverable).
    """
    counts: Counter[str] = Counter()
    by_batch: dict[str, list[Job]] = {}
    for job in finished:
        if job.batch_id is not None and job.notification in _ANNOUNCED:
            by_batch.setdefault(job.batch_id, []).append(job)
    for batch_id, jobs in by_batch.items():
        try:
            batch = deps.batches.get(batch_id)
            if batch is None or batch.completion is Completion.PUBLISHED:
                continue
            for job in jobs:
                if job.job_id not in batch.endings:
                    batch = deps.batches.record_ending(batch_id, job.job_id, job.status.value) or batch
                    counts["batch_ending_recorded"] += 1
            if not batch.all_ended:
                continue
            if batch.completion is Completion.NONE:
                published = publish_completion(deps, batch_id)
            else:  # claimed: published only if its claim is old enough for its publisher to have died
                claimed_at = batch.completed_at or now
                published = now - claimed_at > UNCONFIRMED_COMPLETION and publish_completion(
                    deps, batch_id, reclaim=True
                )
            if published:
                counts["batch_completed_published"] += 1
        except Exception:
            logger.exception("sweeper could not repair a batch", extra={"batch_id": batch_id})
            counts["error"] += 1
    return dict(counts)
