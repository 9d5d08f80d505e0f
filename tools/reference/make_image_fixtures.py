#!/usr/bin/python3
"""Writes tests/fixtures/image/: small source pictures and what PIL makes of them.

The engine must turn a picture into exactly the pixels the Python pipeline it replaces would:
`Image.open(p).convert("RGB")`, then PIL's `resize(..., BICUBIC)` (directly for "resize-naive";
through torchvision's Resize(int) + CenterCrop for "resize-crop"; after Prismatic's LetterboxPad for
"letterbox"). torchvision is not needed here: its size and crop arithmetic is restated below with
plain PIL calls.

Needs Pillow and numpy (Debian: apt-get install python3-pil python3-numpy; run with /usr/bin/python3).
Every expected picture is stored as an 8-bit RGB PNG (lossless and small); manifest.json lists the
cases. Run from anywhere: python3 tools/reference/make_image_fixtures.py [--out DIR]
"""

import argparse
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

# Prismatic's letterbox fill is int(255 * mean) of the encoder; this is DINOv2's mean.
LETTERBOX_FILL = tuple(int(x * 255) for x in (0.485, 0.456, 0.406))


def picture(w, h, seed):
    """Gradients, hard-edged blocks, a fine checkerboard and a noise patch: every kind of content
    that exercises a resampling filter (flat areas, ringing at edges, aliasing, high frequencies),
    while staying compressible so the fixtures stay small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [
            255.0 * x / max(w - 1, 1),
            255.0 * y / max(h - 1, 1),
            128.0 + 100.0 * np.sin(x / 7.0 + y / 11.0),
        ],
        axis=-1,
    )
    for _ in range(6):
        x0, x1 = sorted(rng.integers(0, w + 1, 2))
        y0, y1 = sorted(rng.integers(0, h + 1, 2))
        img[y0:y1, x0:x1] = rng.integers(0, 256, 3)
    cy, cx, rad = h * 0.6, w * 0.35, min(w, h) * 0.25
    img[(y - cy) ** 2 + (x - cx) ** 2 < rad**2] = (250, 20, 200)
    # 1-pixel checkerboard (pure aliasing bait) in the lower right corner.
    cw, ch = max(w // 5, 1), max(h // 5, 1)
    checker = ((x[:ch, :cw] + y[:ch, :cw]) % 2)[..., None] * 255.0
    img[h - ch :, w - cw :] = checker
    # Noise in the upper left corner: a small patch, since noise does not compress.
    nw, nh = max(w // 8, 1), max(h // 8, 1)
    img[:nh, :nw] = rng.integers(0, 256, (nh, nw, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write_png16(path, arr16):
    """PIL cannot write 16-bit RGB, so 16-bit PNGs are written by hand (filter 0 on every row)."""
    h, w = arr16.shape[:2]
    channels = 1 if arr16.ndim == 2 else arr16.shape[2]
    color_type = {1: 0, 3: 2}[channels]
    rows = arr16.reshape(h, w * channels).astype(">u2").tobytes()
    stride = w * channels * 2
    raw = b"".join(b"\x00" + rows[i * stride : (i + 1) * stride] for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(png_chunk(b"IHDR", ihdr))
        f.write(png_chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(png_chunk(b"IEND", b""))


def pil_resize(img, w, h):
    # Image.resize returns a copy for an unchanged size; so does the engine.
    return img.resize((w, h), Image.BICUBIC)


def resize_crop(img, size):
    """torchvision Resize(size) (shorter side to size, longer side truncated) + CenterCrop(size)."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BICUBIC)
    # Python's round() rounds halves to even; the engine must do the same.
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def letterbox(img, size, fill):
    """Prismatic's LetterboxPad (int((max - side) / 2) on BOTH sides, so an odd difference leaves the
    picture one pixel short of square) followed by the encoder's default Resize + CenterCrop."""
    w, h = img.size
    m = max(w, h)
    hp, vp = int((m - w) / 2), int((m - h) / 2)
    canvas = Image.new("RGB", (w + 2 * hp, h + 2 * vp), fill)
    canvas.paste(img, (hp, vp))
    return resize_crop(canvas, size)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "..", "tests", "fixtures", "image"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=default_out)
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    for old in os.listdir(out):
        if old.endswith((".png", ".jpg", ".json")):
            os.remove(os.path.join(out, old))
    manifest = {"pillow": Image.__version__, "letterbox_fill": list(LETTERBOX_FILL), "decode": [],
                "resize": []}

    def save_expected(img, name):
        assert img.mode == "RGB"
        img.save(os.path.join(out, name), optimize=True)
        return name

    def add_resize_cases(src_name, rgb, sizes, squares):
        stem = os.path.splitext(src_name)[0]
        for w, h in sizes:
            name = save_expected(pil_resize(rgb, w, h), f"{stem}__resize_{w}x{h}.png")
            manifest["resize"].append(
                {"source": src_name, "mode": "resize", "width": w, "height": h, "expected": name})
        for mode, size in squares:
            if mode == "letterbox":
                img = letterbox(rgb, size, LETTERBOX_FILL)
            else:
                img = resize_crop(rgb, size)
            assert img.size == (size, size)
            name = save_expected(img, f"{stem}__{mode}_{size}.png")
            manifest["resize"].append(
                {"source": src_name, "mode": mode, "size": size, "expected": name})

    # Plain RGB sources: the resampling cases.
    plain = [
        # (w, h, seed, resize targets, square cases)
        (100, 37, 1, [(27, 27), (61, 45), (150, 111), (7, 5)],
         [("letterbox", 27), ("resize-crop", 27), ("letterbox", 61)]),
        (37, 100, 2, [(27, 27), (45, 61)], [("letterbox", 27), ("resize-crop", 27)]),
        (640, 480, 3, [(27, 27), (61, 45), (384, 384), (7, 5)],
         [("letterbox", 61), ("resize-crop", 61), ("resize-crop", 27), ("letterbox", 27)]),
        (511, 512, 4, [(27, 27), (61, 45)], [("letterbox", 27), ("resize-crop", 45)]),
        (384, 384, 5, [(27, 27), (61, 45), (384, 100)], [("resize-crop", 61)]),
        (20, 20, 6, [(61, 45), (384, 384), (27, 27), (20, 7)],
         [("letterbox", 27), ("resize-crop", 33)]),
        (301, 150, 7, [(27, 27), (300, 151)], [("letterbox", 33), ("resize-crop", 33)]),
    ]
    for w, h, seed, sizes, squares in plain:
        src_name = f"src_{w}x{h}.png"
        rgb = Image.fromarray(picture(w, h, seed), "RGB")
        rgb.save(os.path.join(out, src_name), optimize=True)
        add_resize_cases(src_name, rgb, sizes, squares)

    def add_decode_case(src_name, exact, note):
        """What PIL's convert("RGB") gives for the source, stored as plain 8-bit RGB PNG."""
        with Image.open(os.path.join(out, src_name)) as im:
            rgb = im.convert("RGB")
        stem = os.path.splitext(src_name)[0]
        name = save_expected(rgb, f"{stem}__rgb.png")
        manifest["decode"].append(
            {"source": src_name, "expected": name, "exact": exact, "note": note})
        return rgb

    # Greyscale: PIL replicates L into R, G and B.
    grey = Image.fromarray(picture(97, 50, 8)[..., 1], "L")
    grey.save(os.path.join(out, "grey_97x50.png"), optimize=True)
    rgb = add_decode_case("grey_97x50.png", True, "8-bit greyscale")
    add_resize_cases("grey_97x50.png", rgb, [(27, 27), (61, 45)], [])

    # RGBA with varying alpha: convert("RGB") drops alpha without compositing.
    base = picture(120, 80, 9)
    alpha = (np.mgrid[0:80, 0:120][1] * 2).clip(0, 255).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([base, alpha]), "RGBA")
    rgba.save(os.path.join(out, "rgba_120x80.png"), optimize=True)
    rgb = add_decode_case("rgba_120x80.png", True, "alpha dropped, colour kept as stored")
    add_resize_cases("rgba_120x80.png", rgb, [(61, 45)], [("letterbox", 27)])

    # Grey + alpha.
    la = Image.fromarray(np.dstack([base[..., 0], alpha]), "LA")
    la.save(os.path.join(out, "la_120x80.png"), optimize=True)
    add_decode_case("la_120x80.png", True, "grey + alpha")

    # Palette picture.
    pal = Image.fromarray(picture(50, 30, 10), "RGB").quantize(colors=16)
    pal.save(os.path.join(out, "palette_50x30.png"), optimize=True)
    add_decode_case("palette_50x30.png", True, "palette expanded")

    # 16-bit RGB: PIL keeps the high byte of each sample (raw mode RGB;16B).
    # The low bytes carry a pattern of their own, so a decoder that mixes them in is caught.
    yy, xx = np.mgrid[0:48, 0:64]
    low = ((xx * 37 + yy * 11) % 256).astype(np.uint16)[..., None]
    deep = picture(64, 48, 11).astype(np.uint16) * 256 + low
    write_png16(os.path.join(out, "rgb16_64x48.png"), deep)
    rgb = add_decode_case("rgb16_64x48.png", True, "16-bit RGB: high byte")
    assert np.array_equal(np.asarray(rgb), (deep >> 8).astype(np.uint8))
    add_resize_cases("rgb16_64x48.png", rgb, [(27, 27)], [])

    # 16-bit greyscale: PIL opens it as a 32-bit integer image and convert("RGB") CLIPS values
    # above 255 instead of scaling, which whitens almost any real 16-bit picture. The engine scales
    # (high byte, as for 16-bit RGB); the expected picture is that, and the manifest records PIL's.
    grey16 = deep[..., 1].copy()
    write_png16(os.path.join(out, "grey16_64x48.png"), grey16)
    with Image.open(os.path.join(out, "grey16_64x48.png")) as im:
        pil_mode = im.mode
        pil_rgb = np.asarray(im.convert("RGB"))
    hi = (grey16 >> 8).astype(np.uint8)
    name = save_expected(Image.fromarray(np.dstack([hi, hi, hi]), "RGB"), "grey16_64x48__rgb.png")
    manifest["decode"].append({
        "source": "grey16_64x48.png", "expected": name, "exact": True,
        "note": f"16-bit grey: high byte. PIL ({pil_mode}) would give "
                f"{float((pil_rgb == 255).mean()) * 100:.0f}% white pixels instead"})

    # JPEG whose stored pixels are 60x40 and whose EXIF orientation 6 says "rotate 90 degrees
    # clockwise to display": the decoded picture must be 40x60 and upright.
    upright = Image.fromarray(picture(40, 60, 13), "RGB")
    stored = upright.transpose(Image.ROTATE_90)  # what a camera held sideways stores
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(os.path.join(out, "exif6_60x40.jpg"), "JPEG", quality=95, subsampling=0,
                exif=exif.tobytes())
    with Image.open(os.path.join(out, "exif6_60x40.jpg")) as im:
        shown = ImageOps.exif_transpose(im).convert("RGB")
    assert shown.size == (40, 60)
    name = save_expected(shown, "exif6_60x40__rgb.png")
    manifest["decode"].append({
        "source": "exif6_60x40.jpg", "expected": name, "exact": False,
        "note": "EXIF orientation 6 applied (PIL: exif_transpose); JPEG decoders may differ slightly"})
    add_resize_cases("exif6_60x40.jpg", shown, [(27, 27)], [])

    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    print(f"{len(manifest['resize'])} resize cases, {len(manifest['decode'])} decode cases, "
          f"{len(os.listdir(out))} files, {total / 1024:.0f} KiB in {out}")


if __name__ == "__main__":
    main()
