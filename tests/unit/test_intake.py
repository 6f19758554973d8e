"""S3 intake: which objects of an S3 event notification start jobs."""

from __future__ import annotations

import json

from wanflow.usecases.intake import objects_in_message


def s3_message(*records: dict) -> str:
    return json.dumps({"Records": list(records)})


def created(key: str, event: str = "ObjectCreated:Put", version: str | None = "v1") -> dict:
    return {"eventName": event, "s3": {"bucket": {"name": "intake"}, "object": {"key": key, "versionId": version}}}


def test_only_created_objects_under_incoming_count_and_keys_are_decoded():
    message = s3_message(
        created("incoming/my+cat%281%29.png"),
        created("incoming/folder/"),
        created("uploads/x.png"),
        created("incoming/removed.png", event="ObjectRemoved:Delete"),
    )
    objects = objects_in_message(message)
    assert [(o.bucket, o.key, o.version_id) for o in objects] == [("intake", "incoming/my cat(1).png", "v1")]


def test_s3_test_events_carry_no_objects():
    assert objects_in_message(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []
