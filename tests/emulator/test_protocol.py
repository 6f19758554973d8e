"""The wire protocol: paths, headers, status codes and error bodies, as DashScope answers them."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable

import httpx
import pytest
from emulator_support import (
    API_KEY,
    ASYNC,
    AUTH,
    CREATE,
    SMALL_IMAGE,
    body,
    create_task,
    query,
    wait_for_status,
)

from wanflow_tools.emulator import Emulator

DASHSCOPE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")


def assert_error(reply: httpx.Response, status: int, code: str) -> dict:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    payload = reply.json()
    assert set(payload) == {"code", "message", "request_id"}
    assert payload["code"] == code
    assert payload["message"]
    uuid.UUID(payload["request_id"])
    return payload


def test_create_answers_pending_task(client: httpx.Client, emulator: Emulator):
    reply = client.post(CREATE, json=body(), headers=ASYNC)
    assert reply.status_code == 200
    payload = reply.json()
    assert set(payload) == {"request_id", "output"}
    assert payload["output"]["task_status"] == "PENDING"
    uuid.UUID(payload["output"]["task_id"])
    assert emulator.store.count() == 1


def test_missing_api_key_is_401(client: httpx.Client):
    payload = assert_error(
        client.post(CREATE, json=body(), headers={"X-DashScope-Async": "enable"}), 401, "InvalidApiKey"
    )
    assert payload["message"] == "No API-key provided."
    assert_error(client.get(f"/tasks/{uuid.uuid4()}"), 401, "InvalidApiKey")
    assert_error(client.get("/tasks"), 401, "InvalidApiKey")
    assert_error(client.post(f"/tasks/{uuid.uuid4()}/cancel"), 401, "InvalidApiKey")


def test_only_the_configured_key_is_accepted(start_emulator: Callable[..., Emulator]):
    emulator = start_emulator(api_key=API_KEY)
    with httpx.Client(base_url=emulator.base_url) as http:
        wrong = {"Authorization": "Bearer sk-not-the-key", "X-DashScope-Async": "enable"}
        payload = assert_error(http.post(CREATE, json=body(), headers=wrong), 401, "InvalidApiKey")
        assert payload["message"] == "Invalid API-key provided."
        assert http.post(CREATE, json=body(), headers=ASYNC).status_code == 200
    assert emulator.store.count() == 1


def test_any_bearer_key_is_accepted_without_configured_key(client: httpx.Client):
    headers = {"Authorization": "Bearer anything-at-all", "X-DashScope-Async": "enable"}
    assert client.post(CREATE, json=body(), headers=headers).status_code == 200


def test_create_without_async_header_is_403(client: httpx.Client, emulator: Emulator):
    payload = assert_error(client.post(CREATE, json=body(), headers=AUTH), 403, "AccessDenied")
    assert payload["message"] == "current user api does not support synchronous calls"
    assert emulator.store.count() == 0


def test_unknown_model_is_404_model_not_found(client: httpx.Client, emulator: Emulator):
    payload = assert_error(
        client.post(CREATE, json=body(model="wan9.9-i2v-imaginary"), headers=ASYNC), 404, "ModelNotFound"
    )
    assert payload["message"] == "Model not exist."
    assert emulator.store.count() == 0


def test_model_of_another_region_is_404_when_a_region_is_set(start_emulator: Callable[..., Emulator]):
    emulator = start_emulator(region="us-east-1")
    with httpx.Client(base_url=emulator.base_url) as http:
        assert_error(http.post(CREATE, json=body(), headers=ASYNC), 404, "ModelNotFound")  # flash: not in Virginia


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (body(duration=1), "parameters.duration"),
        (body(model="wan2.2-i2v-flash", duration=10), "parameters.duration"),
        (body(resolution="480P"), "parameters.resolution"),
        (body(seed=-1), "parameters.seed"),
        (body(model="wan2.2-i2v-flash", audio=True), "parameters.audio"),
        (body(model="wan2.5-i2v-preview", shot_type="multi"), "parameters.shot_type"),
        (body(duration="5"), "parameters.duration"),
        ({"model": "wan2.6-i2v-flash", "input": {"prompt": "no image"}}, "input.img_url"),
        ({"model": "wan2.6-i2v-flash", "input": {"img_url": "ftp://example.com/a.png"}}, "input.img_url"),
        ({"model": "wan2.6-i2v-flash", "input": {"img_url": "s3://bucket/key.png"}}, "input.img_url"),
        ({"model": "wan2.6-i2v-flash", "input": {"img_url": "data:image/png;base64,AAAA"}}, "input.img_url"),
        ({"model": "wan2.6-i2v-flash", "input": {"img_url": SMALL_IMAGE, "prompt": "x" * 1501}}, "input.prompt"),
    ],
)
def test_invalid_parameters_are_400_naming_the_field(
    client: httpx.Client, emulator: Emulator, payload: dict, field: str
):
    answer = assert_error(client.post(CREATE, json=payload, headers=ASYNC), 400, "InvalidParameter")
    assert field in answer["message"]
    assert emulator.store.count() == 0


def test_every_bad_field_is_named_in_one_message(client: httpx.Client):
    answer = assert_error(client.post(CREATE, json=body(duration=99, seed=-5), headers=ASYNC), 400, "InvalidParameter")
    assert "parameters.duration" in answer["message"]
    assert "parameters.seed" in answer["message"]


def test_malformed_bodies_are_400(client: httpx.Client):
    assert_error(client.post(CREATE, content=b"{not json", headers=ASYNC), 400, "InvalidParameter")
    assert_error(client.post(CREATE, json=["a", "list"], headers=ASYNC), 400, "InvalidParameter")
    assert_error(client.post(CREATE, json={"input": {"img_url": SMALL_IMAGE}}, headers=ASYNC), 400, "InvalidParameter")


def test_extra_fields_real_clients_send_are_ignored(client: httpx.Client):
    payload = body()
    payload["input"].update(extend_prompt=True, some_future_field="x")
    payload["parameters"].update(size="1280*720", unknown_knob=3)
    assert client.post(CREATE, json=payload, headers=ASYNC).status_code == 200


def test_plain_http_loopback_sources_are_accepted(client: httpx.Client):
    payload = body()
    payload["input"]["img_url"] = "http://127.0.0.1:9/presigned/image.png?X-Amz-Signature=abc"
    assert client.post(CREATE, json=payload, headers=ASYNC).status_code == 200


def test_unknown_task_is_unknown_with_http_200(client: httpx.Client):
    task_id = str(uuid.uuid4())
    payload = query(client, task_id)
    assert payload["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}
    uuid.UUID(payload["request_id"])


def test_wrong_paths_answer_url_error(client: httpx.Client, emulator: Emulator):
    wrong_service = client.post("/services/aigc/image-generation/nothing", headers=ASYNC)
    payload = assert_error(wrong_service, 400, "InvalidParameter")
    assert payload["message"] == "url error, please check url!"
    assert_error(client.get(CREATE, headers=AUTH), 400, "InvalidParameter")  # known path, wrong method
    assert httpx.get(f"{emulator.root_url}/elsewhere").status_code == 404


@pytest.mark.slow
def test_succeeded_task_answer_has_dashscope_fields(client: httpx.Client):
    task_id = create_task(client, body(prompt_extend=True))
    payload = wait_for_status(client, task_id, "SUCCEEDED")
    output = payload["output"]
    for name in ("submit_time", "scheduled_time", "end_time"):
        assert DASHSCOPE_TIME.match(output[name]), output[name]
    assert output["submit_time"] <= output["scheduled_time"] <= output["end_time"]
    assert output["orig_prompt"] == "a lighthouse at dusk"
    assert "actual_prompt" not in output  # wan2.6 does not report a rewritten prompt
    assert output["video_url"].startswith(
        f"http://{client.base_url.host}:{client.base_url.port}/results/{task_id}.mp4?"
    )
    assert "Expires=" in output["video_url"]
    assert payload["usage"] == {
        "duration": 2,
        "input_video_duration": 0,
        "output_video_duration": 2,
        "SR": 720,
        "video_count": 1,
        "audio": False,
    }


@pytest.mark.slow
def test_older_model_families_report_actual_prompt_and_legacy_usage(client: httpx.Client):
    task_id = create_task(client, body(model="wanx2.1-i2v-turbo"))
    output_and_usage = wait_for_status(client, task_id, "SUCCEEDED")
    output = output_and_usage["output"]
    assert output["actual_prompt"].startswith("a lighthouse at dusk")
    assert output_and_usage["usage"]["video_count"] == 1
    assert output_and_usage["usage"]["video_duration"] == 3
    assert re.match(r"^\d+\*\d+$", output_and_usage["usage"]["video_ratio"])


def test_pending_and_running_answers_have_no_usage_or_url(start_emulator: Callable[..., Emulator]):
    emulator = start_emulator(pending_seconds=30)
    with httpx.Client(base_url=emulator.base_url) as http:
        task_id = create_task(http)
        payload = query(http, task_id)
    assert payload["output"]["task_status"] == "PENDING"
    assert "usage" not in payload
    assert set(payload["output"]) == {"task_id", "task_status", "submit_time"}


def test_the_api_key_never_reaches_the_log(start_emulator: Callable[..., Emulator], caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    secret = "sk-do-not-log-4f1e9a"
    emulator = start_emulator(api_key=secret)
    headers = {"Authorization": f"Bearer {secret}", "X-DashScope-Async": "enable"}
    with httpx.Client(base_url=emulator.base_url) as http:
        task_id = http.post(CREATE, json=body(), headers=headers).json()["output"]["task_id"]
        http.get(f"/tasks/{task_id}", headers=headers)
        http.get("/tasks", headers=headers)
        wrong = {"Authorization": "Bearer sk-wrong-7c7c7c", "X-DashScope-Async": "enable"}
        assert http.post(CREATE, json=body(), headers=wrong).status_code == 401
    assert caplog.records  # the emulator did log the requests...
    assert secret not in caplog.text  # ...but never the key
    assert "sk-wrong-7c7c7c" not in caplog.text
