"""Every rule of the request model, checked before any call to DashScope."""

from __future__ import annotations

import base64
import copy
import dataclasses
import io

import pytest
from PIL import Image

from wanflow import capabilities
from wanflow.capabilities import MODELS
from wanflow.errors import InvalidRequest
from wanflow.request import check_image_bytes, parse_job_request, redact_data_uri

SINGAPORE = "ap-southeast-1"
RAP_PROMPT = (
    "A scene of urban fantasy art. A dynamic graffiti art character. A boy made of spray paint comes to life from a "
    "concrete wall. He raps an English song at high speed while striking a classic, energetic rapper pose. The scene "
    "is set under an urban railway bridge at night. The lighting comes from a single street lamp, creating a "
    "cinematic atmosphere full of high energy and amazing detail. The audio of the video consists entirely of his "
    "rap, with no other dialogue or noise."
)
# The seed reference's sample request (docs/dashscope.md "Sources", ref-id), as an HTTP body.
SEED_SAMPLE = {
    "model": "wan2.6-i2v-flash",
    "input": {
        "prompt": RAP_PROMPT,
        "negative_prompt": "",
        "img_url": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20250925/wpimhv/rap.png",
        "audio_url": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20250925/ozwpvi/rap.mp3",
    },
    "parameters": {"resolution": "720P", "duration": 10, "prompt_extend": True, "watermark": False, "seed": 12345},
}


def image_data_uri(width=400, height=300, mode="RGB", image_format="PNG", mime="image/png") -> str:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), "teal" if mode == "RGB" else (0, 128, 128, 128)).save(buffer, image_format)
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def parse(body, region=SINGAPORE, **kwargs):
    return parse_job_request(body, region=region, default_model="wan2.6-i2v-flash", **kwargs)


def field_errors(body, **kwargs) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        parse(body, **kwargs)
    return {error.field: error.message for error in caught.value.errors}


def body_with(model="wan2.6-i2v-flash", parameters=None, **task_input):
    return {
        "model": model,
        "input": {"prompt": "a cat", "img_url": "https://example.com/cat.png", **task_input},
        "parameters": parameters or {},
    }


def test_the_seed_sample_request_is_accepted_as_is():
    request = parse(copy.deepcopy(SEED_SAMPLE))
    body = request.dashscope_body(img_url=SEED_SAMPLE["input"]["img_url"], audio_url=SEED_SAMPLE["input"]["audio_url"])
    assert body["model"] == "wan2.6-i2v-flash"
    assert body["input"]["prompt"] == RAP_PROMPT
    assert body["parameters"] == {
        "resolution": "720P",
        "duration": 10,
        "prompt_extend": True,
        "watermark": False,
        "seed": 12345,
        "shot_type": "single",
        "audio": True,
    }


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("wan2.6-i2v-flash", {"resolution": "1080P", "duration": 5, "audio": True, "shot_type": "single"}),
        ("wan2.6-i2v", {"resolution": "1080P", "duration": 5, "shot_type": "single"}),
        ("wan2.5-i2v-preview", {"resolution": "1080P", "duration": 5}),
        ("wan2.2-i2v-flash", {"resolution": "720P", "duration": 5}),
        ("wan2.2-i2v-plus", {"resolution": "1080P", "duration": 5}),
        ("wanx2.1-i2v-turbo", {"resolution": "720P", "duration": 5}),
        ("wanx2.1-i2v-plus", {"resolution": "720P", "duration": 5}),
    ],
)
def test_defaults_are_filled_so_the_stored_request_says_what_was_asked(model, expected):
    request = parse(body_with(model))
    assert request.parameters.model_dump(exclude_none=True) == {"prompt_extend": True, "watermark": False, **expected}


def test_model_defaults_to_the_stacks_model():
    body = body_with()
    del body["model"]
    assert parse(body).model == "wan2.6-i2v-flash"


def test_regional_model_names_are_used_in_the_body():
    assert parse(body_with("wanx2.1-i2v-turbo")).model == "wan2.1-i2v-turbo"
    assert parse(body_with("wan2.1-i2v-turbo"), region="cn-beijing").model == "wanx2.1-i2v-turbo"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (body_with("wan9-i2v"), "model", "unknown model"),
        (body_with("wan2.6-i2v-us"), "model", "not available in region ap-southeast-1"),
        (body_with(parameters={"resolution": "480P"}), "parameters.resolution", "720P, 1080P"),
        (body_with(parameters={"resolution": "4K"}), "parameters.resolution", "not supported"),
        (body_with(parameters={"duration": 1}), "parameters.duration", "from 2 to 15"),
        (body_with(parameters={"duration": 16}), "parameters.duration", "from 2 to 15"),
        (body_with("wan2.5-i2v-preview", parameters={"duration": 7}), "parameters.duration", "5 or 10"),
        (body_with("wanx2.1-i2v-turbo", parameters={"duration": 6}), "parameters.duration", "3 or 4 or 5"),
        (body_with(parameters={"duration": "5"}), "parameters.duration", "valid integer"),
        (body_with(parameters={"duration": 5.5}), "parameters.duration", "valid integer"),
        (body_with(parameters={"seed": -1}), "parameters.seed", "between 0 and 2147483647"),
        (body_with(parameters={"seed": 2147483648}), "parameters.seed", "between 0 and 2147483647"),
        (body_with(parameters={"watermark": "yes"}), "parameters.watermark", "valid boolean"),
        (body_with(parameters={"prompt_extend": 1}), "parameters.prompt_extend", "valid boolean"),
        (body_with("wan2.6-i2v", parameters={"audio": False}), "parameters.audio", "always has audio"),
        (body_with("wan2.2-i2v-flash", parameters={"audio": True}), "parameters.audio", "always silent"),
        (body_with("wan2.5-i2v-preview", parameters={"shot_type": "multi"}), "parameters.shot_type", "wan2.6 only"),
        (body_with(parameters={"shot_type": "triple"}), "parameters.shot_type", "'single' or 'multi'"),
        (
            body_with(parameters={"shot_type": "multi", "prompt_extend": False}),
            "parameters.shot_type",
            "prompt_extend",
        ),
        (body_with(prompt="x" * 1501), "input.prompt", "at most 1500"),
        (body_with("wan2.2-i2v-plus", prompt="x" * 801), "input.prompt", "at most 800"),
        (body_with(negative_prompt="x" * 501), "input.negative_prompt", "at most 500"),
        (body_with(prompt=42), "input.prompt", "valid string"),
        (body_with(img_url="http://example.com/cat.png"), "input.img_url", "https://"),
        (body_with(img_url="ftp://example.com/cat.png"), "input.img_url", "https://"),
        (body_with(img_url="https:///cat.png"), "input.img_url", "no host"),
        (body_with(img_url="s3://other-bucket/cat.png"), "input.img_url", "intake bucket"),
        (body_with(img_url="s3://intake"), "input.img_url", "s3://<bucket>/<key>"),
        (body_with("wan2.2-i2v-flash", audio_url="https://example.com/a.mp3"), "input.audio_url", "no audio"),
        (body_with(audio_url="file:///a.mp3"), "input.audio_url", "https://"),
        (
            body_with(parameters={"audio": False}, audio_url="https://example.com/a.mp3"),
            "input.audio_url",
            "parameters.audio is false",
        ),
        ({"model": "wan2.6-i2v-flash", "input": {"prompt": "a cat"}}, "input.img_url", "required"),
        ({"model": "wan2.6-i2v-flash"}, "input", "required"),
        ({**body_with(), "callback_url": "https://x"}, "callback_url", "not a known field"),
        (body_with(parameters={"fps": 60}), "parameters.fps", "not a known field"),
        ({**body_with(), "metadata": {"k": 1}}, "metadata.k", "valid string"),
        ({**body_with(), "metadata": {f"k{i}": "v" for i in range(21)}}, "metadata", "at most 20"),
    ],
)
def test_invalid_requests_name_the_field(body, field, words):
    errors = field_errors(body, intake_bucket="intake")
    assert field in errors, errors
    assert words in errors[field]


def test_all_problems_are_reported_together():
    errors = field_errors(body_with("wan2.2-i2v-flash", parameters={"duration": 10, "seed": -5}, prompt="x" * 900))
    assert {"parameters.duration", "parameters.seed", "input.prompt"} <= set(errors)


def test_a_body_that_is_not_an_object_is_refused():
    assert field_errors([1, 2]) == {"body": "must be a JSON object"}


def test_s3_sources_in_the_intake_bucket_are_accepted():
    request = parse(
        body_with(img_url="s3://intake/uploads/cat.png", audio_url="s3://intake/a.mp3"), intake_bucket="intake"
    )
    assert request.input.img_url == "s3://intake/uploads/cat.png"


def test_a_valid_data_uri_image_is_accepted_and_never_echoed():
    data_uri = image_data_uri()
    request = parse(body_with(img_url=data_uri))
    public = request.public_dict()
    assert public["input"]["img_url"].startswith("data:image/png;base64,<")
    assert data_uri[40:80] not in str(public)
    assert redact_data_uri("https://x/y.png") == "https://x/y.png"


@pytest.mark.parametrize(
    ("img_url", "words"),
    [
        (image_data_uri(mime="image/gif"), "image/gif is not accepted"),
        ("data:image/png;base64,!!!notbase64", "not valid base64"),
        ("data:image/png,rawdata", "data URIs must look like"),
        ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "does not decode"),
        (image_data_uri(image_format="JPEG", mime="image/png"), "says image/png but the image is JPEG"),
        (image_data_uri(width=200, height=300), "between 240 and 8000"),
        (image_data_uri(mode="RGBA"), "alpha channel"),
    ],
)
def test_bad_data_uri_images_are_refused(img_url, words):
    errors = field_errors(body_with(img_url=img_url))
    assert words in errors["input.img_url"]


def test_images_over_the_models_byte_limit_are_refused(monkeypatch):
    uri = image_data_uri()
    assert parse(body_with("wan2.2-i2v-flash", img_url=uri)).input.img_url == uri
    # The limit comes from the capability table: shrink it below this image's size.
    tiny_limit = dataclasses.replace(MODELS["wan2.2-i2v-flash"], image_max_bytes=100)
    monkeypatch.setitem(capabilities._BY_ANY_NAME, "wan2.2-i2v-flash", tiny_limit)
    errors = field_errors(body_with("wan2.2-i2v-flash", img_url=uri))
    assert "takes at most 100" in errors["input.img_url"]


def test_check_image_bytes_accepts_what_dashscope_takes():
    data = base64.b64decode(image_data_uri(image_format="WEBP", mime="image/webp").split(",", 1)[1])
    assert check_image_bytes(data, MODELS["wan2.6-i2v-flash"]) is None


def test_the_emulator_mode_tolerates_extra_fields_and_http_sources():
    body = body_with(img_url="http://127.0.0.1:5000/intake/cat.png", extend_prompt=True)
    body["parameters"]["size"] = "1280*720"
    request = parse(body, region=None, allow_http=True, ignore_unknown_fields=True)
    assert request.input.img_url.startswith("http://127.0.0.1")
