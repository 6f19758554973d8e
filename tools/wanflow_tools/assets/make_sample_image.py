"""Draw the demo's sample first frame: a sailboat on a mountain lake at sunset (750x1000, RGB, no alpha)."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 750, 1000
HORIZON = 560


def lerp(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def draw_scene() -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT))
    draw = ImageDraw.Draw(image)
    # Sky: deep blue at the top to warm orange at the horizon.
    for y in range(HORIZON):
        t = y / HORIZON
        color = lerp((38, 52, 120), (250, 160, 90), t**1.3)
        draw.line([(0, y), (WIDTH, y)], fill=color)
    # Sun, low and partly behind the far range.
    draw.ellipse([540, 250, 660, 370], fill=(255, 214, 120))
    # Clouds.
    rng = random.Random(7)
    for cx, cy in ((140, 150), (560, 110), (430, 240)):
        for _ in range(9):
            dx, dy, r = rng.randint(-70, 70), rng.randint(-14, 14), rng.randint(22, 40)
            draw.ellipse([cx + dx - r, cy + dy - r // 2, cx + dx + r, cy + dy + r // 2], fill=(255, 205, 190))
    # Mountains: far range pale violet, near range dark.
    draw.polygon(
        [
            (0, 470),
            (120, 360),
            (230, 430),
            (360, 300),
            (520, 420),
            (640, 350),
            (750, 420),
            (750, HORIZON),
            (0, HORIZON),
        ],
        fill=(120, 90, 140),
    )
    draw.polygon(
        [(0, 520), (90, 450), (200, 510), (310, 470), (420, 530), (560, 460), (750, 520), (750, HORIZON), (0, HORIZON)],
        fill=(60, 50, 85),
    )
    # Lake: mirror the sky, darker, then ripple lines.
    sky = image.crop((0, 0, WIDTH, HORIZON)).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    water = Image.blend(sky, Image.new("RGB", sky.size, (20, 40, 80)), 0.45)
    image.paste(water.crop((0, 0, WIDTH, HEIGHT - HORIZON)), (0, HORIZON))
    draw = ImageDraw.Draw(image)
    for _ in range(160):
        x, y = rng.randint(0, WIDTH), rng.randint(HORIZON + 5, HEIGHT)
        length = rng.randint(10, 60)
        draw.line([(x, y), (x + length, y)], fill=(255, 200, 140) if abs(x - 600) < 80 else (90, 110, 160))
    # Sailboat.
    draw.polygon([(250, 760), (430, 760), (400, 800), (280, 800)], fill=(110, 60, 40))
    draw.line([(340, 560), (340, 760)], fill=(60, 40, 30), width=5)
    draw.polygon([(345, 570), (345, 750), (450, 750)], fill=(245, 240, 225))
    draw.polygon([(335, 600), (335, 750), (260, 750)], fill=(230, 120, 90))
    # Shore with a pine tree on the left.
    draw.polygon([(0, 900), (180, 930), (260, HEIGHT), (0, HEIGHT)], fill=(30, 45, 35))
    draw.rectangle([70, 760, 84, 920], fill=(50, 35, 25))
    for i in range(5):
        top = 620 + i * 45
        draw.polygon([(77, top), (77 - 40 - i * 10, top + 90), (77 + 40 + i * 10, top + 90)], fill=(25, 70, 45))
    return image.filter(ImageFilter.SMOOTH)


if __name__ == "__main__":
    target = Path(__file__).with_name("sample.jpg")
    draw_scene().save(target, "JPEG", quality=88, optimize=True)
    print(target, target.stat().st_size, "bytes")
