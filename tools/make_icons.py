#!/usr/bin/env python3
"""Draws the application icon (resources/icons/mlmamba-desktop.svg) as PNGs at the hicolor sizes.

The SVG is the source of truth; this repeats its few shapes with PIL (supersampled) because the
build machines have no SVG rasteriser. Run with a Python that has PIL (Debian: python3-pil).
"""
import os

from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "resources", "icons", "hicolor")


def draw(size):
    s = 8 * size / 256.0  # supersample, then scale down for smooth edges
    big = Image.new("RGBA", (8 * size, 8 * size), (0, 0, 0, 0))
    d = ImageDraw.Draw(big)
    k = lambda v: v * s
    d.rounded_rectangle([k(16), k(16), k(240), k(240)], radius=k(44), fill="#2e3440")
    d.rounded_rectangle([k(36), k(40), k(220), k(172)], radius=k(22), fill="#e5e9f0")
    d.polygon([(k(84), k(170)), (k(84), k(214)), (k(128), k(170))], fill="#e5e9f0")
    d.ellipse([k(54), k(76), k(114), k(136)], fill="#dc2828")
    sq = Image.new("RGBA", big.size, (0, 0, 0, 0))
    ImageDraw.Draw(sq).rounded_rectangle([k(128), k(66), k(186), k(124)], radius=k(4), fill="#2850dc")
    sq = sq.rotate(-10, center=(k(157), k(95)), resample=Image.BICUBIC)
    big.alpha_composite(sq)
    d = ImageDraw.Draw(big)
    d.polygon([(k(150), k(160)), (k(178), k(112)), (k(206), k(160))], fill="#28aa3c")
    return big.resize((size, size), Image.LANCZOS)


def main():
    for size in (16, 32, 48, 64, 128, 256):
        folder = os.path.join(OUT, f"{size}x{size}", "apps")
        os.makedirs(folder, exist_ok=True)
        draw(size).save(os.path.join(folder, "mlmamba-desktop.png"), optimize=True)
    print("icons written under", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
