"""Callers see, list, cancel and use as inputs only what is theirs; admins see everything; cursors are signed."""

from __future__ import annotations

import pytest

from wanflow.callers import Caller, caller_from_api_event, is_admin, normalize_principal, uploads_prefix
from wanflow.errors import InvalidRequest, NotFound
from wanflow.jobs import JobStatus
from wanflow.usecases.cancel import cancel_job
from wanflow.usecases.intake import CreatedObject, submit_uploaded_object
from wanflow.usecases.queries import create_upload, get_job, list_jobs
from wanflow.usecases.submit import submit_api_job
from wanflow_tools.fakes import FakeWorld, caller, fake_settings, sample_job_body
from wanflow_tools.testing import image_bytes

ALICE, BOB, ADMIN = caller("alice"), caller("bob"), caller("root", admin=True)


@pytest.fixture
def world() -> FakeWorld:
    """Slots enough that every job here is submitted at once (the queue is test_admission's subject)."""
    return FakeWorld(settings=fake_settings(model_slots="wan2.2-i2v-flash=20"))


def submit_as(world: FakeWorld, who: Caller, **overrides: object) -> str:
    job, _ = submit_api_job(world.deps, sample_job_body(**overrides), idempotency_key=None, caller=who)
    world.run_started_create_steps()
    return job.job_id


def test_a_job_is_visible_to_its_owner_and_admins_only(world: FakeWorld) -> None:
    job_id = submit_as(world, ALICE)
    assert get_job(world.deps, job_id, ALICE)["job_id"] == job_id
    assert get_job(world.deps, job_id, ADMIN)["job_id"] == job_id
    with pytest.raises(NotFound):  # the same answer as for a job that does not exist
        get_job(world.deps, job_id, BOB)
    with pytest.raises(NotFound):
        cancel_job(world.deps, job_id, BOB)
    assert world.dashscope.canceled == []
    assert cancel_job(world.deps, job_id, ALICE).status is JobStatus.CANCELED


def test_lists_hold_the_callers_own_jobs_and_everything_for_admins(world: FakeWorld) -> None:
    alices = {submit_as(world, ALICE) for _ in range(3)}
    bobs = {submit_as(world, BOB)}
    listed = {job["job_id"] for job in list_jobs(world.deps, ALICE, status=None, limit=100, cursor=None)["jobs"]}
    assert listed == alices
    everyone = list_jobs(world.deps, ADMIN, status=None, limit=100, cursor=None)["jobs"]
    assert {job["job_id"] for job in everyone} == alices | bobs
    pending = list_jobs(world.deps, BOB, status=JobStatus.PENDING, limit=100, cursor=None)["jobs"]
    assert {job["job_id"] for job in pending} == bobs


def test_cursors_page_through_and_cannot_be_replayed_forged_or_reused_elsewhere(world: FakeWorld) -> None:
    mine = {submit_as(world, ALICE) for _ in range(3)}
    submit_as(world, BOB)
    first = list_jobs(world.deps, ALICE, status=None, limit=2, cursor=None)
    cursor = first["next_cursor"]
    rest = list_jobs(world.deps, ALICE, status=None, limit=2, cursor=cursor)
    assert {job["job_id"] for job in first["jobs"] + rest["jobs"]} == mine and rest["next_cursor"] is None
    payload, _, signature = cursor.partition(".")
    for bad, who, status in [
        (cursor, BOB, None),  # another caller replays it
        (cursor, ADMIN, None),  # the admin listing is another listing
        (cursor, ALICE, JobStatus.PENDING),  # another filter
        (payload + "." + signature[::-1], ALICE, None),  # forged
        (payload[:-2] + "." + signature, ALICE, None),  # tampered
        ("e30=", ALICE, None),  # decodes, but was never handed out
        ("x" * 5000, ALICE, None),
        (".\u00d6\U000f3082\u00a70", ALICE, None),  # not ASCII at all
    ]:
        with pytest.raises(InvalidRequest) as refused:
            list_jobs(world.deps, who, status=status, limit=2, cursor=bad)
        assert [error.field for error in refused.value.errors] == ["cursor"]


def test_uploads_are_granted_under_the_callers_own_prefix(world: FakeWorld) -> None:
    grant = create_upload(world.deps, ALICE, "image/png")
    assert grant["s3_uri"].startswith(f"s3://intake/{uploads_prefix('alice')}")
    assert grant["fields"]["key"].startswith(uploads_prefix("alice"))
    assert uploads_prefix("alice") != uploads_prefix("bob")


def test_s3_inputs_must_be_the_callers_own(world: FakeWorld) -> None:
    alices_upload = f"{uploads_prefix('alice')}cat.png"
    world.objects.put_bytes("intake", alices_upload, image_bytes(320, 256), "image/png")
    stashed = get_job(world.deps, submit_as(world, ALICE), ALICE)["request"]["input"]["img_url"]
    world.objects.put_bytes("intake", "incoming/frame.png", image_bytes(320, 256), "image/png")
    creates = world.dashscope.creates
    for uri in (f"s3://intake/{alices_upload}", stashed, "s3://intake/incoming/frame.png", "s3://intake/uploads/x.png"):
        with pytest.raises(InvalidRequest) as refused:
            submit_as(world, BOB, input={"prompt": "mine now", "img_url": uri})
        assert refused.value.errors[0].field == "input.img_url" and "not yours" in refused.value.errors[0].message
    assert world.dashscope.creates == creates
    submit_as(world, ALICE, input={"prompt": "mine", "img_url": f"s3://intake/{alices_upload}"})
    assert world.dashscope.creates == creates + 1


def test_an_intake_job_belongs_to_its_uploader_and_may_use_incoming_objects(world: FakeWorld) -> None:
    world.objects.put_bytes("intake", "incoming/frame.png", image_bytes(320, 256), "image/png")
    manifest = b'{"model": "wan2.2-i2v-flash", "input": {"prompt": "p", "img_url": "frame.png"}}'
    world.objects.put_bytes("intake", "incoming/job.json", manifest, "application/json")
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/job.json", "v1", None, "bob"))
    assert job is not None and job.owner == "bob" and job.status is JobStatus.QUEUED
    assert get_job(world.deps, job.job_id, BOB)["job_id"] == job.job_id
    with pytest.raises(NotFound):
        get_job(world.deps, job.job_id, ALICE)


def test_an_intake_manifest_cannot_use_someone_elses_upload(world: FakeWorld) -> None:
    world.objects.put_bytes("intake", f"{uploads_prefix('alice')}cat.png", image_bytes(320, 256), "image/png")
    manifest = (
        b'{"model": "wan2.2-i2v-flash", "input": {"prompt": "p", "img_url": "s3://intake/'
        + uploads_prefix("alice").encode()
        + b'cat.png"}}'
    )
    world.objects.put_bytes("intake", "incoming/job.json", manifest, "application/json")
    job = submit_uploaded_object(world.deps, CreatedObject("intake", "incoming/job.json", "v1", None, "bob"))
    assert job is not None and job.status is JobStatus.FAILED and job.error is not None
    assert "not yours" in job.error.message and world.dashscope.creates == 0


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("AWS:AIDACKCEVSQ6C2EXAMPLE", "AIDACKCEVSQ6C2EXAMPLE"),
        ("AIDACKCEVSQ6C2EXAMPLE", "AIDACKCEVSQ6C2EXAMPLE"),
        ("AWS:AROA123456789EXAMPLE:session-1", "AROA123456789EXAMPLE"),
        ("AROA123456789EXAMPLE:session-2", "AROA123456789EXAMPLE"),
        ("", "anonymous"),
        (None, "anonymous"),
    ],
)
def test_s3_and_api_principals_line_up(raw: str | None, normalized: str) -> None:
    assert normalize_principal(raw) == normalized


def test_admins_are_matched_by_id_arn_or_the_role_they_assumed() -> None:
    session = "arn:aws:sts::123456789012:assumed-role/ops-admin/alice"
    assert is_admin("AROA1", session, ["arn:aws:iam::123456789012:role/ops/ops-admin"])
    assert is_admin("AROA1", session, [" AROA1 "])
    assert is_admin("AIDA1", "arn:aws:iam::123456789012:user/bob", ["arn:aws:iam::123456789012:user/bob"])
    assert not is_admin("AROA1", session, ["arn:aws:iam::999999999999:role/ops-admin", "", "AIDA2"])
    assert not is_admin("AROA1", session, ["arn:aws:iam::123456789012:role/ops-admin-2"])


def test_the_api_caller_comes_from_the_iam_authorizer_context() -> None:
    event = {
        "requestContext": {
            "authorizer": {"iam": {"userId": "AROA1:bob", "userArn": "arn:aws:sts::123456789012:assumed-role/dev/bob"}}
        }
    }
    caller_seen = caller_from_api_event(event, admins=[])
    assert (caller_seen.principal, caller_seen.is_admin) == ("AROA1", False)
    assert caller_from_api_event(event, admins=["arn:aws:iam::123456789012:role/dev"]).is_admin
    assert caller_from_api_event({}, admins=[]).principal == "anonymous"
