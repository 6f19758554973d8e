"""`GET /v1/models`: the models of the stack's DashScope region and their rules, from the capability table.

A read-only view for forms (the console's new-job form): it offers only what a model supports and shows the price
before submitting. Every value comes from `wanflow.capabilities` (model rules), `wanflow.request` (the request's
own limits and defaults) or the settings; nothing here decides a rule.
"""

from __future__ import annotations

from typing import Any

from wanflow.capabilities import (
    AUDIO_MAX_BYTES,
    AUDIO_MAX_SECONDS,
    AUDIO_MIN_SECONDS,
    REGIONS,
    SEED_MAX,
    SEED_MIN,
    specs_in_region,
)
from wanflow.request import (
    METADATA_KEY_MAX_CHARS,
    METADATA_MAX_ENTRIES,
    METADATA_VALUE_MAX_CHARS,
    PRIORITIES,
    SHOT_TYPES,
    URL_MAX_CHARS,
    default_parameters,
)
from wanflow.settings import Settings
from wanflow.usecases.queries import UPLOAD_CONTENT_TYPES

# The catalog changes only with a deployment: clients may reuse it for a few minutes.
CACHE_SECONDS = 300


def model_catalog(settings: Settings) -> dict[str, Any]:
    """Every model a job may name in this deployment, with its rules and prices (docs/product.md section 2)."""
    region = REGIONS[settings.dashscope_region]
    specs = specs_in_region(region.region_id)
    models = [
        {
            **spec.public_view(region.region_id),
            "default_parameters": default_parameters(spec),
            "running_slots": settings.slots_for(spec.name),
        }
        for spec in specs
    ]
    offered = {spec.name for spec in specs}
    return {
        "region": {"id": region.region_id, "name": region.display_name},
        "default_model": settings.default_model if settings.default_model in offered else None,
        "models": models,
        "seed": {"min": SEED_MIN, "max": SEED_MAX},
        "shot_types": list(SHOT_TYPES),
        "priorities": list(PRIORITIES),
        "metadata": {
            "max_entries": METADATA_MAX_ENTRIES,
            "key_max_chars": METADATA_KEY_MAX_CHARS,
            "value_max_chars": METADATA_VALUE_MAX_CHARS,
        },
        "url_max_chars": URL_MAX_CHARS,
        "upload_max_bytes": settings.upload_max_bytes,
        "audio_file": {
            "min_seconds": AUDIO_MIN_SECONDS,
            "max_seconds": AUDIO_MAX_SECONDS,
            "max_bytes": AUDIO_MAX_BYTES,
            "mime_types": [content_type for content_type in UPLOAD_CONTENT_TYPES if content_type.startswith("audio/")],
        },
    }
