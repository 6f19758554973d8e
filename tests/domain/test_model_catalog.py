"""`GET /v1/models` (wanflow.usecases.models): what it offers is what `POST /v1/jobs` accepts, and the price a form
computes from it is the job's own `cost_estimate_usd`."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from wanflow.capabilities import MODELS, REGIONS, find_model, models_in_region
from wanflow.errors import InvalidRequest
from wanflow.request import SHOT_TYPES, parse_job_request
from wanflow.usecases.models import model_catalog
from wanflow.usecases.submit import submit_api_job
from wanflow_tools.fakes import FakeWorld, caller, fake_settings

IMAGE = "https://example.com/first-frame.png"  # never fetched by wanflow: no image decoding needed here


def catalog(**settings: Any) -> dict[str, Any]:
    return model_catalog(fake_settings(**settings))


def combinations(view: dict[str, Any]) -> list[tuple[str, int, bool]]:
    """Every (resolution, duration, audio) a form can offer for the model in `view`."""
    sounds = {"optional": (True, False), "always": (True,), "never": (False,)}[view["audio"]]
    return list(itertools.product(view["resolutions"], view["durations"], sounds))


def job_body(view: dict[str, Any], resolution: str, duration: int, audio: bool) -> dict[str, Any]:
    parameters: dict[str, Any] = {"resolution": resolution, "duration": duration}
    if view["audio"] == "optional":
        parameters["audio"] = audio
    return {"model": view["name"], "input": {"prompt": "a lighthouse", "img_url": IMAGE}, "parameters": parameters}


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_the_catalog_lists_exactly_the_models_of_the_stacks_region(region: str) -> None:
    view = catalog(dashscope_region=region)
    assert view["region"] == {"id": region, "name": REGIONS[region].display_name}
    assert sorted(model["name"] for model in view["models"]) == models_in_region(region)
    for model in view["models"]:
        assert model["regional_name"] == MODELS[model["name"]].name_in(region)
        for name in (model["name"], model["regional_name"], *model["aliases"]):
            assert find_model(name) is MODELS[model["name"]]


def test_the_regional_name_and_aliases_are_shown_where_they_differ() -> None:
    turbo = {model["name"]: model for model in catalog()["models"]}["wanx2.1-i2v-turbo"]
    assert turbo["regional_name"] == "wan2.1-i2v-turbo"  # Singapore's name for it, which its jobs show
    assert turbo["aliases"] == ["wan2.1-i2v-turbo"]


def test_the_price_a_form_computes_is_the_jobs_cost_estimate_for_every_choice_it_offers() -> None:
    world = FakeWorld()
    checked = 0
    for view in catalog()["models"]:
        for resolution, duration, audio in combinations(view):
            per_second = view["price_usd_per_second"][resolution]["audio" if audio else "silent"]
            job, _ = submit_api_job(
                world.deps, job_body(view, resolution, duration, audio), idempotency_key=None, caller=caller()
            )
            expected = None if per_second is None else round(per_second * duration, 4)
            assert job.cost_estimate_usd == expected, (view["name"], resolution, duration, audio)
            checked += 1
    assert checked > 100  # every model, resolution, duration and sound option of the Singapore stack


def test_a_price_is_null_only_for_a_sound_the_model_cannot_make_or_a_price_the_list_lacks() -> None:
    models = {model["name"]: model for model in catalog()["models"]}
    assert models["wan2.6-i2v-flash"]["price_usd_per_second"]["720P"] == {"audio": 0.05, "silent": 0.025}
    assert models["wan2.6-i2v"]["price_usd_per_second"]["1080P"] == {"audio": 0.15, "silent": None}
    assert models["wan2.2-i2v-flash"]["price_usd_per_second"]["480P"] == {"audio": None, "silent": 0.015}
    assert models["wan2.2-i2v-flash"]["price_usd_per_second"]["1080P"] == {"audio": None, "silent": None}
    for model in models.values():
        assert set(model["price_usd_per_second"]) == set(model["resolutions"])


def test_every_choice_offered_is_accepted_and_its_neighbours_are_refused() -> None:
    for view in catalog()["models"]:
        for resolution, duration, audio in combinations(view):
            parse_job_request(job_body(view, resolution, duration, audio), region="ap-southeast-1", default_model="x")
        refused = [
            {"duration": max(view["durations"]) + 1},
            {"resolution": next(r for r in ("480P", "720P", "1080P", "4K") if r not in view["resolutions"])},
        ]
        if view["audio"] != "optional":
            refused.append({"audio": view["audio"] == "never"})
        if view["shot_type"]:
            for shot in SHOT_TYPES:
                body = job_body(view, view["default_resolution"], view["default_duration"], True)
                body["parameters"]["shot_type"] = shot
                parse_job_request(body, region="ap-southeast-1", default_model="x")
        else:
            refused.append({"shot_type": "single"})
        for change in refused:
            body = job_body(view, view["default_resolution"], view["default_duration"], True)
            body["parameters"].update(change)
            with pytest.raises(InvalidRequest) as refusal:
                parse_job_request(body, region="ap-southeast-1", default_model="x")
            assert [error.field for error in refusal.value.errors] == [f"parameters.{next(iter(change))}"], change
        if not view["accepts_audio_url"]:
            body = job_body(view, view["default_resolution"], view["default_duration"], False)
            body["input"]["audio_url"] = "https://example.com/a.mp3"
            with pytest.raises(InvalidRequest):
                parse_job_request(body, region="ap-southeast-1", default_model="x")


def test_prompt_limits_are_the_ones_enforced() -> None:
    for view in catalog()["models"]:
        body = job_body(view, view["default_resolution"], view["default_duration"], True)
        body["input"]["prompt"] = "x" * view["prompt_max_chars"]
        body["input"]["negative_prompt"] = "y" * view["negative_prompt_max_chars"]
        parse_job_request(body, region="ap-southeast-1", default_model="x")
        body["input"]["prompt"] += "x"
        body["input"]["negative_prompt"] += "y"
        with pytest.raises(InvalidRequest) as refusal:
            parse_job_request(body, region="ap-southeast-1", default_model="x")
        assert {error.field for error in refusal.value.errors} == {"input.prompt", "input.negative_prompt"}


def test_the_default_parameters_are_what_a_job_that_names_none_gets() -> None:
    for view in catalog()["models"]:
        body = {"model": view["name"], "input": {"img_url": IMAGE}}
        request = parse_job_request(body, region="ap-southeast-1", default_model="x")
        assert request.parameters.model_dump(exclude_none=True) == view["default_parameters"]
        assert view["default_parameters"]["resolution"] == view["default_resolution"]
        assert view["default_parameters"]["duration"] == view["default_duration"]


def test_the_seed_range_is_the_one_enforced() -> None:
    view = catalog()
    model = view["models"][0]
    for seed, accepted in ((view["seed"]["min"], True), (view["seed"]["max"], True), (view["seed"]["max"] + 1, False)):
        body = job_body(model, model["default_resolution"], model["default_duration"], True)
        body["parameters"]["seed"] = seed
        if accepted:
            parse_job_request(body, region="ap-southeast-1", default_model="x")
        else:
            with pytest.raises(InvalidRequest):
                parse_job_request(body, region="ap-southeast-1", default_model="x")


def test_running_slots_are_the_deployments_and_the_default_model_only_if_offered() -> None:
    view = catalog(model_slots="wan2.6-i2v=9")
    slots = {model["name"]: model["running_slots"] for model in view["models"]}
    assert slots["wan2.6-i2v"] == 9 and slots["wan2.6-i2v-flash"] == MODELS["wan2.6-i2v-flash"].max_running
    assert view["default_model"] == "wan2.6-i2v-flash"
    # Virginia does not offer the flash model: a form must not preselect it.
    assert catalog(dashscope_region="us-east-1")["default_model"] is None
    assert catalog(dashscope_region="us-east-1", default_model="wan2.6-i2v")["default_model"] == "wan2.6-i2v"
