"""A second, independent renderer of Shapes-world scenes, drawn with OpenCV.

Used for the evaluation set only, never for training: a model that scores well on these pictures
has learnt the shapes, not the training renderer's pixels. It shares nothing with render.py but
the scene: its own outlines (fatter stars, a triangle of its own proportions fitted to the
object's box), OpenCV's rasteriser (LINE_AA or the aliased LINE_8, sub-pixel vertices), its own
colour jitter, background synthesis and noise models, and OpenCV's own encoders.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

try:
    from . import world as W
except ImportError:  # run as a plain script from this folder
    import world as W

SHIFT = 4  # fixed-point bits for OpenCV's sub-pixel vertices
ONE = 1 << SHIFT


def _unit_outline(shape: str, star_inner: float, tri_ratio: float) -> np.ndarray:
    """Unit outline, y up. tri_ratio = triangle height / base."""
    if shape == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    if shape == "triangle":
        return np.array([[-0.5, -tri_ratio / 2], [0.5, -tri_ratio / 2], [0.0, tri_ratio / 2]])
    if shape == "star":
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else star_inner
            a = math.pi / 2 + k * math.pi / 5
            pts.append((r * math.cos(a), r * math.sin(a)))
        return np.array(pts)
    raise ValueError(shape)


def _fitted(o, star_inner: float, tri_ratio: float) -> np.ndarray:
    """Rotate this renderer's outline by the object's angle, then stretch it onto the object's
    box (w x h, centred) so positions and sizes are the scene's, whatever the proportions."""
    p = _unit_outline(o.shape, star_inner, tri_ratio)
    a = math.radians(o.angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    p = p @ rot.T
    p[:, 1] = -p[:, 1]  # screen y points down
    lo, hi = p.min(0), p.max(0)
    p = (p - (lo + hi) / 2) / (hi - lo) * np.array([o.w, o.h])
    return p + np.array([o.cx, o.cy])


def _to_fixed(p: np.ndarray, size: int) -> np.ndarray:
    # OpenCV puts integer coordinates at pixel centres.
    return np.round((p * size - 0.5) * ONE).astype(np.int32)


def _background(bg, size: int, rng: np.random.Generator) -> np.ndarray:
    """float32 RGB, size x size."""
    c1 = np.array(bg.colour, np.float32)
    if bg.kind == "gradient":
        c2 = np.array(bg.colour2, np.float32)
        dx, dy = math.cos(math.radians(bg.angle)), math.sin(math.radians(bg.angle))
        xs = np.linspace(-1, 1, size, dtype=np.float32)
        s = dx * xs[None, :] + dy * xs[:, None]
        s = (s - s.min()) / max(float(s.max() - s.min()), 1e-6)
        return c1 * (1 - s[..., None]) + c2 * s[..., None]
    img = np.tile(c1, (size, size, 1)).astype(np.float32)
    amp = bg.amplitude
    if bg.kind == "noise":
        # Uniform per-channel grain, unlike the training renderer's Gaussian grey grain.
        n = rng.uniform(-1.7, 1.7, (size, size, 3)).astype(np.float32) * amp
        img += np.clip(n, -2 * amp, 2 * amp)
    elif bg.kind == "texture":
        # Blurred coarse random field plus a faint stripe pattern, like paper or cloth.
        cells = max(2, int(round(1 / max(bg.scale, 1e-3))))
        g = rng.standard_normal((cells, cells)).astype(np.float32)
        t = cv2.resize(g, (size, size), interpolation=cv2.INTER_LINEAR)
        k = max(3, (size // cells) | 1)
        t = cv2.GaussianBlur(t, (k, k), 0)
        period = rng.uniform(3, 9)
        yy = np.arange(size, dtype=np.float32)[:, None]
        t = (t - t.mean()) / (t.std() + 1e-6) + 0.3 * np.sin(2 * np.pi * yy / period)
        img += (np.clip(t, -2, 2) * amp)[..., None]
    return img


def render(scene, rng: np.random.Generator, size: int = 256) -> Image.Image:
    """RGB picture of the scene (PIL), size x size pixels."""
    line = cv2.LINE_AA if rng.random() < 0.6 else cv2.LINE_8
    img = _background(scene.background, size, rng)
    for o in scene.objects:
        nominal = np.array(W.COLOURS[o.colour], np.float32)
        c = np.clip(nominal + np.clip(rng.normal(0, 12, 3), -25, 25), 0, 255)
        layer = np.zeros((size, size), np.uint8)
        if o.shape == "circle":
            centre = tuple(int(v) for v in _to_fixed(np.array([o.cx, o.cy]), size))
            radius = int(round(o.w / 2 * size * ONE))
            cv2.circle(layer, centre, radius, 255, -1, line, SHIFT)
        else:
            p = _fitted(o, float(rng.uniform(0.44, 0.52)), float(rng.uniform(0.8, 0.95)))
            cv2.fillPoly(layer, [_to_fixed(p, size)], 255, line, SHIFT)
        a = (layer.astype(np.float32) / 255.0)[..., None]
        img = img * (1 - a) + c * a
    out = np.clip(img, 0, 255)
    r = rng.random()
    if r < 0.2:
        out = cv2.blur(out, (3, 3))
    elif r < 0.35:
        sigma = float(rng.uniform(0.4, 1.0)) * max(1.0, size / 256)
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    r = rng.random()
    if r < 0.25:
        # Shot-like noise: stronger where the picture is brighter.
        out = out + rng.standard_normal(out.shape).astype(np.float32) * np.sqrt(out + 1) * 0.25
    elif r < 0.4:
        out = out + rng.uniform(-6, 6, out.shape).astype(np.float32)
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def encode(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    """The picture as PNG or JPEG bytes from OpenCV's encoders."""
    bgr = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    assert ok
    return buf.tobytes()
