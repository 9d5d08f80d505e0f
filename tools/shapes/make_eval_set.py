#!/usr/bin/env python3
"""Writes the held-out Shapes evaluation set, tests/data/shapes_eval/: eval.jsonl + img/.

Seeds: picture k (k = 0 .. N-1) is drawn entirely from numpy.random.default_rng(10**9 + k) —
scene, size, format, pixels and questions. Training uses seeds below 10**9 only, so no training
scene can repeat here. Even k are drawn by render.py (the training renderer), odd k by
render_cv.py (OpenCV, never used for training), so the two halves measure in-distribution
accuracy and generalisation to pixels the model has not seen.

Questions: 3 per picture from 3 different families, each time the families asked least so far
among those the scene allows, so every family ends up with about N x 3 / 9 questions. Half of
the "other" questions come from world.OTHER_QUESTIONS_HELDOUT, which the generator never asks.

Output is deterministic: running it again rewrites identical files.

  /usr/bin/python3 tools/shapes/make_eval_set.py [--out tests/data/shapes_eval] [--count 300]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render as R  # noqa: E402
import render_cv as C  # noqa: E402
import world as W  # noqa: E402

EVAL_SEED_BASE = 10 ** 9
QUESTIONS_PER_PICTURE = 3
# A PNG larger than this (grainy pictures compress badly) is written as JPEG instead, which keeps
# the committed folder within its 2.5 MB.
MAX_PNG_BYTES = 16000


def picture_plan(rng: np.random.Generator):
    """(size, format, jpeg quality). Mostly small pictures so the committed set stays small;
    every tenth-or-so is larger and then always JPEG."""
    quality = int(rng.integers(55, 93))
    if rng.random() < 0.12:
        return int(rng.integers(224, 513)), "jpeg", quality
    return int(rng.integers(96, 193)), ("png" if rng.random() < 0.5 else "jpeg"), quality


def encode_pil(image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, "PNG", optimize=True)
    else:
        image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "..", "tests", "data", "shapes_eval"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--count", type=int, default=300)
    args = ap.parse_args()

    img_dir = os.path.join(args.out, "img")
    if os.path.isdir(img_dir):
        shutil.rmtree(img_dir)
    os.makedirs(img_dir)

    asked = {f: 0 for f in W.FAMILIES}
    lines = []
    for k in range(args.count):
        rng = np.random.default_rng(EVAL_SEED_BASE + k)
        scene = W.sample_scene(rng)
        size, fmt, quality = picture_plan(rng)
        if k % 2 == 0:
            image, encode, renderer = R.render(scene, rng, size), encode_pil, "render"
        else:
            image, encode, renderer = C.render(scene, rng, size), C.encode, "render_cv"
        data = encode(image, fmt, quality)
        if fmt == "png" and len(data) > MAX_PNG_BYTES:
            fmt = "jpeg"
            data = encode(image, fmt, quality)
        name = f"img/{k + 1:04d}.{'png' if fmt == 'png' else 'jpg'}"
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(data)

        possible = W.possible_families(scene)
        order = sorted(possible, key=lambda f: (asked[f], rng.random()))
        for family in order[:QUESTIONS_PER_PICTURE]:
            fam, q, a = W.sample_qa(scene, rng, family)
            if fam == "other" and asked[fam] % 2 == 1:
                # Every second off-topic question is one the generator never asks.
                q = W.style_question(W.OTHER_QUESTIONS_HELDOUT[int(rng.integers(
                    len(W.OTHER_QUESTIONS_HELDOUT)))], rng)
            asked[fam] += 1
            lines.append({"image": name, "question": q, "answer": a, "family": fam,
                          "renderer": renderer, "seed": EVAL_SEED_BASE + k})

    with open(os.path.join(args.out, "eval.jsonl"), "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")

    total = sum(os.path.getsize(os.path.join(dp, fn))
                for dp, _, fns in os.walk(args.out) for fn in fns)
    print(f"{args.count} pictures, {len(lines)} questions, {total / 1e6:.2f} MB in {args.out}")
    for f in W.FAMILIES:
        print(f"  {f:9s} {asked[f]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
