"""The README's price table, generated from `wanflow.capabilities` so that the two cannot drift apart.

`python -m wanflow_tools.price_table` prints the Markdown; a unit test checks that README.md contains it.
"""

from __future__ import annotations

from wanflow.capabilities import MODELS, estimate_cost_usd

_RESOLUTION_ORDER = {"480P": 0, "720P": 1, "1080P": 2}


def price_table_markdown() -> str:
    """One row per model, resolution and sound option: list price per output second and for a 5 s video."""
    lines = [
        "| model | resolution | sound | USD per second | 5 s video |",
        "|---|---|---|---:|---:|",
    ]
    for spec in MODELS.values():
        # Only the sound options the model can produce: a silent-only model has no "with audio" price.
        for resolution in sorted(spec.resolutions, key=_RESOLUTION_ORDER.__getitem__):
            for has_audio in spec.audio_options():
                per_second = spec.price_per_second.get((resolution, has_audio))
                five_seconds = estimate_cost_usd(spec, resolution, 5, has_audio) if 5 in spec.durations else None
                lines.append(
                    f"| {spec.name} | {resolution} | {'audio' if has_audio else 'silent'} "
                    f"| {_usd(per_second)} | {_usd(five_seconds)} |"
                )
    return "\n".join(lines)


def _usd(value: float | None) -> str:
    if value is None:
        return "not listed"
    # Cents always shown ($0.10), finer fractions only where the price has them ($0.0375).
    whole, _, fraction = f"{value:.4f}".rstrip("0").partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


if __name__ == "__main__":
    print(price_table_markdown())
