"""Typed events: the state machine's state and the intake's SQS records, as the handlers parse them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from wanflow.events import ExecutionInput, FailureInput, PollState
from wanflow.s3_events import IntakeRecord
from wanflow.usecases.intake import objects_in_notification

EVENTS = Path(__file__).resolve().parents[2] / "events"


def test_the_next_step_is_one_the_state_machine_knows() -> None:
    assert PollState(next="finalize").as_state() == {"next": "finalize", "wait_seconds": 0, "polls": 0}
    with pytest.raises(ValidationError):
        PollState.model_validate({"next": "wiat"})


def test_the_poll_state_keeps_no_error_key_unless_there_is_an_error() -> None:
    state = PollState.model_validate({"next": "fail", "error": {"code": "TaskFailed", "message": "m"}})
    assert state.as_state()["error"] == {"code": "TaskFailed", "message": "m"}
    assert "error" not in PollState(next="wait", wait_seconds=15).as_state()


def test_steps_read_the_state_and_ignore_what_other_steps_added() -> None:
    state = ExecutionInput.model_validate(
        {"job_id": "j", "poll": {"next": "finalize", "polls": 3}, "finalize": {"status": "SUCCEEDED"}}
    )
    assert (state.job_id, state.poll.next, state.poll.polls) == ("j", "finalize", 3)


def test_the_failure_step_reads_a_catch_result() -> None:
    state = FailureInput.model_validate(
        {
            "job_id": "j",
            "poll": {"next": "finalize"},
            "error": {"Error": "TransientError", "Cause": '{"errorMessage": "truncated"}'},
        }
    )
    assert state.error is not None and state.error.error == "TransientError" and "truncated" in state.error.cause


def test_the_sample_intake_record_parses_to_the_uploaded_object() -> None:
    event = json.loads((EVENTS / "sqs-intake-s3-put.json").read_text())
    record = IntakeRecord.model_validate(event["Records"][0])
    (created,) = objects_in_notification(record.body)
    assert created.key == "incoming/cat.png" and created.version_id == "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"


def sample_record(body: str) -> dict[str, object]:
    event = json.loads((EVENTS / "sqs-intake-s3-put.json").read_text())
    return {**event["Records"][0], "body": body}


def test_s3s_test_event_starts_nothing() -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}
    assert objects_in_notification(IntakeRecord.model_validate(sample_record(json.dumps(test_event))).body) == []


def test_objects_outside_incoming_and_folders_start_nothing() -> None:
    event = json.loads((EVENTS / "sqs-intake-s3-put.json").read_text())
    notification = json.loads(event["Records"][0]["body"])
    template = notification["Records"][0]
    records = []
    for key, name in (
        ("uploads/x.png", "ObjectCreated:Put"),
        ("incoming/dir/", "ObjectCreated:Put"),
        ("incoming/a+b.png", "ObjectRemoved:Delete"),
        ("incoming/my+cat.png", "ObjectCreated:Post"),
    ):
        record = json.loads(json.dumps(template))
        record["eventName"], record["s3"]["object"]["key"] = name, key
        records.append(record)
    parsed = IntakeRecord.model_validate(sample_record(json.dumps({"Records": records})))
    assert [created.key for created in objects_in_notification(parsed.body)] == ["incoming/my cat.png"]


def test_an_intake_record_whose_body_is_not_json_is_refused() -> None:
    with pytest.raises(ValidationError):
        IntakeRecord.model_validate(sample_record("{oops"))
