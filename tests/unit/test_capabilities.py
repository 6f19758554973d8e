"""The capability table and the plain functions over it."""

from __future__ import annotations

import pytest

from wanflow.capabilities import MODELS, REGIONS, TIER_PIXELS, Audio, estimate_cost_usd, find_model, output_size


@pytest.mark.parametrize(
    ("width", "height", "resolution", "expected"),
    [
        (750, 1000, "720P", (816, 1104)),  # the FAQ's example
        (1280, 720, "720P", (1280, 720)),
        (720, 1280, "720P", (720, 1280)),
        (1000, 1000, "720P", (960, 960)),
        (1920, 1080, "1080P", (1920, 1072)),  # 1080 is not a multiple of 16
        (1280, 720, "480P", (848, 480)),
        (4000, 3000, "1080P", (1648, 1232)),
    ],
)
def test_output_size_keeps_aspect_within_the_tier_budget(width, height, resolution, expected):
    out_width, out_height = output_size(width, height, resolution)
    assert (out_width, out_height) == expected
    assert out_width % 16 == 0 and out_height % 16 == 0
    assert out_width * out_height <= TIER_PIXELS[resolution]


def test_output_size_refuses_empty_images():
    with pytest.raises(ValueError):
        output_size(0, 100, "720P")


@pytest.mark.parametrize(
    ("model", "resolution", "duration", "audio", "usd"),
    [
        ("wan2.6-i2v-flash", "720P", 5, True, 0.25),
        ("wan2.6-i2v-flash", "1080P", 10, True, 0.75),
        ("wan2.6-i2v-flash", "720P", 5, False, 0.125),  # silent is half price
        ("wan2.6-i2v", "1080P", 15, True, 2.25),
        ("wan2.5-i2v-preview", "480P", 10, True, 0.5),
        ("wan2.2-i2v-flash", "480P", 5, False, 0.075),
        ("wanx2.1-i2v-turbo", "720P", 3, False, 0.108),
        ("wanx2.1-i2v-plus", "720P", 5, False, 0.5),
    ],
)
def test_cost_estimate_uses_the_price_list(model, resolution, duration, audio, usd):
    assert estimate_cost_usd(MODELS[model], resolution, duration, audio) == pytest.approx(usd)


def test_cost_estimate_is_unknown_where_the_price_list_has_no_entry():
    assert estimate_cost_usd(MODELS["wan2.2-i2v-flash"], "1080P", 5, False) is None


def test_every_model_is_consistent():
    for spec in MODELS.values():
        assert spec.default_resolution in spec.resolutions, spec.name
        assert spec.default_duration in spec.durations, spec.name
        assert set(spec.regions) <= set(REGIONS), spec.name
        assert spec.sources, spec.name
        assert spec.accepts_audio_url == (spec.audio is not Audio.NEVER), spec.name
        for resolution in spec.resolutions:
            has_audio = spec.audio is not Audio.NEVER
            if (resolution, has_audio) not in spec.price_per_second:
                assert "no 1080P price" in spec.notes, spec.name


def test_regional_names_resolve_to_one_model():
    assert find_model("wan2.1-i2v-turbo") is MODELS["wanx2.1-i2v-turbo"]
    assert MODELS["wanx2.1-i2v-turbo"].name_in("ap-southeast-1") == "wan2.1-i2v-turbo"
    assert MODELS["wanx2.1-i2v-turbo"].name_in("cn-beijing") == "wanx2.1-i2v-turbo"
    assert find_model("wan9-i2v") is None


@pytest.mark.parametrize(
    ("model", "audio_parameter", "expected"),
    [
        ("wan2.6-i2v-flash", None, True),
        ("wan2.6-i2v-flash", True, True),
        ("wan2.6-i2v-flash", False, False),
        ("wan2.6-i2v", None, True),
        ("wan2.5-i2v-preview", None, True),
        ("wan2.2-i2v-plus", None, False),
        ("wanx2.1-i2v-turbo", None, False),
    ],
)
def test_which_requests_produce_audio(model, audio_parameter, expected):
    assert MODELS[model].produces_audio(audio_parameter) is expected


def test_virginia_and_frankfurt_only_offer_wan26():
    virginia = sorted(name for name, spec in MODELS.items() if "us-east-1" in spec.regions)
    frankfurt = sorted(name for name, spec in MODELS.items() if "eu-central-1" in spec.regions)
    assert virginia == ["wan2.6-i2v", "wan2.6-i2v-us"]
    assert frankfurt == ["wan2.6-i2v"]
