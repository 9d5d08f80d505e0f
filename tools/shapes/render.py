"""Draws a Shapes-world scene with PIL (the training renderer).

Every variation comes from the Generator passed in: same scene, same seed, same size -> same
pixels. The variations are there so the model learns the shapes and not this program's pixels:
supersampled anti-aliasing or hard aliased edges, colours jittered within the contract's +-25,
faint shading or a darker rim on some objects, background noise or texture, slight blur, sensor
noise and JPEG at a random quality (decoded again, so the artefacts are in the returned pixels).
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

try:
    from . import world as W
except ImportError:  # run as a plain script from this folder
    import world as W

# Largest supersampled canvas side: bounds memory and time for big pictures.
MAX_SUPERSAMPLED = 2048
# Minimum distance (RGB, Euclidean) between an object's colour and the background under it;
# jitter that would make an object fade into the background is drawn again.
MIN_CONTRAST = 45.0


def _texture(size: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth blotches with features about scale x side, zero mean, unit std, clipped to +-2."""
    cells = max(2, int(round(1 / max(scale, 1e-3))))
    g = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    im = Image.fromarray(g, mode="F").resize((size, size), Image.BICUBIC)
    t = np.asarray(im, dtype=np.float32)
    t = (t - t.mean()) / (t.std() + 1e-6)
    return np.clip(t, -2, 2)


def background(bg: W.Background, size: int, rng: np.random.Generator) -> np.ndarray:
    """H x W x 3 float32 background as the spec describes."""
    c1 = np.array(bg.colour, np.float32)
    img = np.empty((size, size, 3), np.float32)
    img[:] = c1
    if bg.kind == "gradient":
        a = math.radians(bg.angle)
        u = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        proj = np.cos(a) * u[None, :] + np.sin(a) * u[:, None]
        t = (proj - proj.min()) / (np.ptp(proj) + 1e-9)
        img = c1 + (np.array(bg.colour2, np.float32) - c1) * t[..., None]
    elif bg.kind == "noise":
        # Mostly grey grain with a little colour grain, kept within 2 x amplitude.
        mono = rng.standard_normal((size, size, 1)).astype(np.float32)
        chroma = rng.standard_normal((size, size, 3)).astype(np.float32) * 0.3
        img = img + np.clip((mono + chroma) * bg.amplitude, -2 * bg.amplitude, 2 * bg.amplitude)
    elif bg.kind == "texture":
        t = _texture(size, bg.scale, rng)
        img = img + (t * bg.amplitude)[..., None]
    return img


def _region(o: W.Obj, size: int):
    """Pixel box around the object, padded for rims and anti-aliasing."""
    x0 = max(0, int(math.floor((o.cx - o.w / 2) * size)) - 3)
    y0 = max(0, int(math.floor((o.cy - o.h / 2) * size)) - 3)
    x1 = min(size, int(math.ceil((o.cx + o.w / 2) * size)) + 3)
    y1 = min(size, int(math.ceil((o.cy + o.h / 2) * size)) + 3)
    return x0, y0, x1, y1


def _mask(o: W.Obj, size: int, ss: int, box, star_inner: float, rim: float = 0.0):
    """Coverage of the object (and of its rim band, if rim > 0) in the region, 0..1 at the final
    resolution. ss > 1 draws at ss x and box-averages down (anti-aliased); ss == 1 is aliased."""
    x0, y0, x1, y1 = box
    W_, H_ = (x1 - x0) * ss, (y1 - y0) * ss
    m = Image.new("L", (W_, H_), 0)
    d = ImageDraw.Draw(m)
    f = size * ss

    def px(p):
        return [(float(x * f - x0 * ss), float(y * f - y0 * ss)) for x, y in p]

    if o.shape == "circle":
        l, t = (o.cx - o.w / 2) * f - x0 * ss, (o.cy - o.h / 2) * f - y0 * ss
        r, b = (o.cx + o.w / 2) * f - x0 * ss, (o.cy + o.h / 2) * f - y0 * ss
        d.ellipse([l, t, r - 1, b - 1], fill=255)
    else:
        d.polygon(px(W.outline(o, star_inner=star_inner)), fill=255)
    rim_m = None
    if rim > 0:
        width = max(1, int(round(rim * ss)))
        rm = Image.new("L", (W_, H_), 0)
        pts = px(W.outline(o, star_inner=star_inner, circle_points=96))
        ImageDraw.Draw(rm).line(pts + pts[:1], fill=255, width=width, joint="curve")
        rm = Image.fromarray(np.minimum(np.asarray(rm), np.asarray(m)))
        rim_m = rm
    out = []
    for im in (m, rim_m):
        if im is None:
            out.append(None)
            continue
        if ss > 1:
            im = im.resize((x1 - x0, y1 - y0), Image.BOX)
        out.append(np.asarray(im, np.float32) / 255.0)
    return out


def _object_colour(o: W.Obj, under: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    nominal = np.array(W.COLOURS[o.colour], np.float32)
    for _ in range(10):
        c = np.clip(nominal + rng.integers(-25, 26, 3), 0, 255).astype(np.float32)
        if np.linalg.norm(c - under) >= MIN_CONTRAST:
            return c
    return nominal


def render(scene: W.Scene, rng: np.random.Generator, size: int = 256) -> Image.Image:
    """RGB picture of the scene, size x size pixels."""
    ss = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.2, 0.3, 0.25]))
    while ss > 1 and size * ss > MAX_SUPERSAMPLED:
        ss -= 1
    img = background(scene.background, size, rng)
    for o in scene.objects:
        box = _region(o, size)
        x0, y0, x1, y1 = box
        star_inner = float(rng.uniform(0.36, 0.46))
        rim = float(rng.uniform(0.6, 2.0)) * max(1.0, size / 256) if rng.random() < 0.15 else 0.0
        cov, rim_cov = _mask(o, size, ss, box, star_inner, rim)
        patch = img[y0:y1, x0:x1]
        under = patch[cov > 0.5].mean(0) if (cov > 0.5).any() else patch.reshape(-1, 3).mean(0)
        c = _object_colour(o, under, rng)
        fill = np.broadcast_to(c, patch.shape).copy()
        if rng.random() < 0.2:
            # Faint shading across the object, as from uneven light.
            a = rng.uniform(0, 2 * np.pi)
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            t = ((xx + 0.5) / size - o.cx) * np.cos(a) + ((yy + 0.5) / size - o.cy) * np.sin(a)
            t /= max(o.w, o.h)
            fill = fill + (t * rng.uniform(10, 25))[..., None]
        if rim_cov is not None:
            fill = fill * (1 - 0.4 * rim_cov[..., None])
        img[y0:y1, x0:x1] = patch * (1 - cov[..., None]) + fill * cov[..., None]
    out = Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0)) * max(1.0, size / 256)))
    if rng.random() < 0.3:
        a = np.asarray(out, np.float32)
        a = a + rng.standard_normal(a.shape).astype(np.float32) * float(rng.uniform(1, 5))
        out = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.4:
        # Small pictures get milder JPEG: at quality 30 and 4:2:0 a 10-pixel star at 96 px is
        # an unrecognisable blob, and its label would only teach noise.
        q_lo = 60 if size < 128 else 45 if size < 256 else 30
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=int(rng.integers(q_lo, 96)),
                 subsampling=int(rng.choice([0, 2])) if size >= 160 else 0)
        buf.seek(0)
        out = Image.open(buf).convert("RGB")
    return out
