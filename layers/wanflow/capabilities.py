"""The Wan image-to-video model capability table: the one place that knows each model's rules.

Everything that needs a model rule (request validation, the emulator, cost estimates, rate limits) reads it from
here. Sources, abbreviated in ``ModelSpec.sources``:

- ``ref-zh``: help.aliyun.com/zh/model-studio/image-to-video-api-reference (newest official API reference)
- ``ref-zh-2025-12``: the December 2025 copy of the same page
- ``ref-en-legacy``: alibabacloud.com/help/en/model-studio/legacy-image-to-video-api-reference
- ``ref-id``: the Indonesian API reference this product was specified from (see docs/dashscope.md "Sources")
- ``pricing`` / ``limits``: the international pricing and rate-limit pages

Where versions of the documentation disagree, the table accepts the wider documented range (so that a request
DashScope would accept is never refused here) and says so in ``notes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final


@dataclass(frozen=True)
class Region:
    """A DashScope deployment region; a model, its endpoint and the API key must all be in the same one."""

    region_id: str
    display_name: str
    base_url: str  # "{workspace_id}" is filled in for Frankfurt


REGIONS: Final[dict[str, Region]] = {
    region.region_id: region
    for region in (
        Region("ap-southeast-1", "Singapore", "https://dashscope-intl.aliyuncs.com/api/v1"),
        Region("us-east-1", "Virginia", "https://dashscope-us.aliyuncs.com/api/v1"),
        Region("cn-beijing", "Beijing", "https://dashscope.aliyuncs.com/api/v1"),
        Region("eu-central-1", "Frankfurt", "https://{workspace_id}.eu-central-1.maas.aliyuncs.com/api/v1"),
    )
}


class Audio(StrEnum):
    """What a model does with sound."""

    OPTIONAL = "optional"  # auto-dubbed by default, `audio_url` accepted, `audio=false` makes it silent
    ALWAYS = "always"  # always has a soundtrack (auto-dubbed, or `audio_url`)
    NEVER = "never"  # silent video only


# Pixel budget of each resolution tier. The output keeps the input's aspect ratio, and each side is the largest
# multiple of 16 that keeps the area within this budget (FAQ: 750x1000 at 720P gives 816x1104).
TIER_PIXELS: Final[dict[str, int]] = {
    "480P": 854 * 480,  # wide enough that a 16:9 input still yields 480 rows
    "720P": 1280 * 720,
    "1080P": 1920 * 1080,
}

SEED_MIN: Final = 0
SEED_MAX: Final = 2_147_483_647
FRAMES_PER_SECOND: Final = 30
IMAGE_MIME_TYPES: Final = ("image/jpeg", "image/png", "image/bmp", "image/webp")
AUDIO_MIN_SECONDS: Final = 3
AUDIO_MAX_SECONDS: Final = 30
AUDIO_MAX_BYTES: Final = 15 * 1024 * 1024

_MB = 1024 * 1024


@dataclass(frozen=True)
class ModelSpec:
    name: str
    resolutions: tuple[str, ...]
    default_resolution: str
    durations: tuple[int, ...]
    default_duration: int
    audio: Audio
    accepts_audio_url: bool
    shot_type: bool
    prompt_max_chars: int
    image_max_bytes: int
    regions: dict[str, str]  # region id -> the model's name in that region
    price_per_second: dict[tuple[str, bool], float]  # (resolution, has audio) -> USD per output second
    submit_rps: int
    max_running: int
    sources: str
    negative_prompt_max_chars: int = 500
    image_min_side: int = 240
    image_max_side: int = 8000
    notes: str = ""
    extra_names: tuple[str, ...] = field(default=())

    def produces_audio(self, audio_parameter: bool | None) -> bool:
        """Whether the output video has a soundtrack for the given `parameters.audio` value."""
        if self.audio is Audio.ALWAYS:
            return True
        if self.audio is Audio.OPTIONAL:
            return audio_parameter is not False
        return False

    def name_in(self, region_id: str) -> str | None:
        return self.regions.get(region_id)

    def audio_options(self) -> tuple[bool, ...]:
        """The soundtrack choices a job of this model can have: True (with audio) and/or False (silent)."""
        return {Audio.ALWAYS: (True,), Audio.NEVER: (False,), Audio.OPTIONAL: (True, False)}[self.audio]

    def public_view(self, region_id: str) -> dict[str, Any]:
        """The model's rules as `GET /v1/models` shows them (docs/product.md section 2): what a form needs to offer
        only valid choices and to show the price before submitting.

        `price_usd_per_second[resolution]` has the `audio` and `silent` prices; null where the model cannot make
        that kind of video or the price list has no entry. A job's `cost_estimate_usd` is exactly that price times
        its duration, rounded to 4 decimals (`estimate_cost_usd`).
        """
        return {
            "name": self.name,
            "regional_name": self.name_in(region_id) or self.name,
            "aliases": sorted({*self.regions.values(), *self.extra_names} - {self.name}),
            "resolutions": list(self.resolutions),
            "default_resolution": self.default_resolution,
            "durations": list(self.durations),
            "default_duration": self.default_duration,
            "audio": self.audio.value,
            "accepts_audio_url": self.accepts_audio_url,
            "shot_type": self.shot_type,
            "prompt_max_chars": self.prompt_max_chars,
            "negative_prompt_max_chars": self.negative_prompt_max_chars,
            "image": {
                "max_bytes": self.image_max_bytes,
                "min_side": self.image_min_side,
                "max_side": self.image_max_side,
                "mime_types": list(IMAGE_MIME_TYPES),
            },
            "price_usd_per_second": {
                resolution: {
                    kind: self.price_per_second.get((resolution, has_audio))
                    if has_audio in self.audio_options()
                    else None
                    for kind, has_audio in (("audio", True), ("silent", False))
                }
                for resolution in self.resolutions
            },
        }


def _prices(table: dict[str, float], *, silent: dict[str, float] | None = None) -> dict[tuple[str, bool], float]:
    prices = {(resolution, True): usd for resolution, usd in table.items()}
    prices.update({(resolution, False): usd for resolution, usd in (silent or table).items()})
    return prices


_WAN26_REGIONS_FLASH = {"ap-southeast-1": "wan2.6-i2v-flash", "cn-beijing": "wan2.6-i2v-flash"}
_EVERYWHERE_WAN26 = {
    "ap-southeast-1": "wan2.6-i2v",
    "us-east-1": "wan2.6-i2v",
    "cn-beijing": "wan2.6-i2v",
    "eu-central-1": "wan2.6-i2v",
}

# What each generation shares (limits page: submit RPS and concurrent tasks; reference: prompt and image limits).
_WAN26_25: Final[dict[str, Any]] = {
    "accepts_audio_url": True,
    "prompt_max_chars": 1500,
    "image_max_bytes": 20 * _MB,
    "submit_rps": 5,
    "max_running": 5,
}
_WAN22_21: Final[dict[str, Any]] = {
    "audio": Audio.NEVER,
    "accepts_audio_url": False,
    "shot_type": False,
    "durations": (5,),
    "default_duration": 5,
    "prompt_max_chars": 800,
    "image_max_bytes": 10 * _MB,
    "submit_rps": 2,
    "max_running": 2,
}

MODELS: Final[dict[str, ModelSpec]] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            **_WAN26_25,
            name="wan2.6-i2v-flash",
            resolutions=("720P", "1080P"),
            default_resolution="1080P",
            durations=tuple(range(2, 16)),
            default_duration=5,
            audio=Audio.OPTIONAL,
            shot_type=True,
            regions=_WAN26_REGIONS_FLASH,
            price_per_second=_prices({"720P": 0.05, "1080P": 0.075}, silent={"720P": 0.025, "1080P": 0.0375}),
            sources="ref-zh, ref-id, pricing, limits",
            notes="Defaults to 1080P with audio, the most expensive combination: wanflow fills them in explicitly.",
        ),
        ModelSpec(
            **_WAN26_25,
            name="wan2.6-i2v",
            resolutions=("720P", "1080P"),
            default_resolution="1080P",
            durations=tuple(range(2, 16)),
            default_duration=5,
            audio=Audio.ALWAYS,
            shot_type=True,
            regions=_EVERYWHERE_WAN26,
            price_per_second=_prices({"720P": 0.10, "1080P": 0.15}),
            sources="ref-zh, ref-zh-2025-12, pricing, limits",
            notes="ref-zh gives any integer 2-15 s; one version lists only 5/10/15 in Virginia. The wider range "
            "is accepted everywhere.",
        ),
        ModelSpec(
            **_WAN26_25,
            name="wan2.6-i2v-us",
            resolutions=("720P", "1080P"),
            default_resolution="1080P",
            durations=(5, 10, 15),
            default_duration=5,
            audio=Audio.ALWAYS,
            shot_type=True,
            regions={"us-east-1": "wan2.6-i2v-us"},
            price_per_second=_prices({"720P": 0.10, "1080P": 0.15}),
            sources="ref-zh, limits; price assumed equal to wan2.6-i2v (not listed separately)",
        ),
        ModelSpec(
            **_WAN26_25,
            name="wan2.5-i2v-preview",
            resolutions=("480P", "720P", "1080P"),
            default_resolution="1080P",
            durations=(5, 10),
            default_duration=5,
            audio=Audio.ALWAYS,
            shot_type=False,
            regions={"ap-southeast-1": "wan2.5-i2v-preview", "cn-beijing": "wan2.5-i2v-preview"},
            price_per_second=_prices({"480P": 0.05, "720P": 0.10, "1080P": 0.15}),
            sources="ref-zh, ref-en-legacy, pricing, limits",
        ),
        ModelSpec(
            **_WAN22_21,
            name="wan2.2-i2v-flash",
            resolutions=("480P", "720P", "1080P"),
            default_resolution="720P",
            regions={"ap-southeast-1": "wan2.2-i2v-flash", "cn-beijing": "wan2.2-i2v-flash"},
            price_per_second=_prices({"480P": 0.015, "720P": 0.036}),
            sources="ref-zh, ref-en-legacy, pricing, limits",
            notes="The international price list has no 1080P price for this model: its estimate is unknown.",
        ),
        ModelSpec(
            **_WAN22_21,
            name="wan2.2-i2v-plus",
            resolutions=("480P", "1080P"),
            default_resolution="1080P",
            regions={"ap-southeast-1": "wan2.2-i2v-plus", "cn-beijing": "wan2.2-i2v-plus"},
            price_per_second=_prices({"480P": 0.02, "1080P": 0.10}),
            sources="ref-zh, ref-en-legacy, pricing, limits",
        ),
        ModelSpec(
            **{**_WAN22_21, "durations": (3, 4, 5)},
            name="wanx2.1-i2v-turbo",
            resolutions=("480P", "720P"),
            default_resolution="720P",
            regions={"ap-southeast-1": "wan2.1-i2v-turbo", "cn-beijing": "wanx2.1-i2v-turbo"},
            price_per_second=_prices({"480P": 0.036, "720P": 0.036}),
            sources="ref-zh, ref-en-legacy, pricing, limits",
            extra_names=("wan2.1-i2v-turbo",),
        ),
        ModelSpec(
            **_WAN22_21,
            name="wanx2.1-i2v-plus",
            resolutions=("720P",),
            default_resolution="720P",
            regions={"ap-southeast-1": "wan2.1-i2v-plus", "cn-beijing": "wanx2.1-i2v-plus"},
            price_per_second=_prices({"720P": 0.10}),
            sources="ref-zh, ref-en-legacy, pricing, limits",
            extra_names=("wan2.1-i2v-plus",),
        ),
    )
}

# Image limits differ between documentation versions: the older pages say sides in [360, 2000] px and <= 10 MB,
# the newer ones [240, 8000] px and <= 20 MB (wan2.6/2.5) or <= 10 MB (wan2.2/2.1). The table holds the wider,
# newer limits.

_BY_ANY_NAME: Final[dict[str, ModelSpec]] = {
    name: spec for spec in MODELS.values() for name in (spec.name, *spec.regions.values(), *spec.extra_names)
}


def find_model(name: str) -> ModelSpec | None:
    """The model known by `name`, also under a regional alias (Singapore's `wan2.1-i2v-turbo`)."""
    return _BY_ANY_NAME.get(name)


def models_in_region(region_id: str) -> list[str]:
    return sorted(spec.name for spec in specs_in_region(region_id))


def specs_in_region(region_id: str) -> list[ModelSpec]:
    """The models offered in `region_id`, in the table's order (newest generation first)."""
    return [spec for spec in MODELS.values() if region_id in spec.regions]


def output_size(width: int, height: int, resolution: str) -> tuple[int, int]:
    """The size DashScope renders for an input image of `width` x `height` at `resolution`.

    Keeps the image's aspect ratio within the tier's pixel budget, both sides rounded down to a multiple of 16.
    """
    if width <= 0 or height <= 0:
        raise ValueError("image dimensions must be positive")
    budget = TIER_PIXELS[resolution]
    aspect = width / height
    # The epsilon keeps exact fits (1280x720 at 720P) from falling one step short through float rounding.
    out_width = int(math.sqrt(budget * aspect) + 1e-6) // 16 * 16
    out_height = int(math.sqrt(budget / aspect) + 1e-6) // 16 * 16
    return max(out_width, 16), max(out_height, 16)


def estimate_cost_usd(spec: ModelSpec, resolution: str, duration: int, has_audio: bool) -> float | None:
    """List price of one video in USD (international prices); None where the price list has no entry."""
    per_second = spec.price_per_second.get((resolution, has_audio))
    if per_second is None:
        return None
    return round(per_second * duration, 4)
