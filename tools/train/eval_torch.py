#!/usr/bin/env python3
"""Answers a Shapes JSONL with the PyTorch model (tools/train/model.py) loaded from a package, the
way `mlmamba-cli eval` does with the C++ engine, and compares the two.

    /usr/bin/python3 tools/train/eval_torch.py --model resources/models/shapes-demo \
        --data tests/data/shapes_eval/eval.jsonl [--predictions OUT.jsonl] [--compare CPP.jsonl]

--compare takes the `--predictions` file of `mlmamba-cli eval` on the same JSONL and reports how
many answers are identical, per family, and lists the ones that differ. The weights are the
package's own (f16 widened to f32), the picture goes through PIL's bicubic resize (the engine's
preprocessing is bit-identical to it), decoding is greedy in float32 on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))

import model as M                                                          # noqa: E402
import test_model as TM                                                    # noqa: E402
import train_shapes as T                                                   # noqa: E402


class CliTokenizer:
    """Where the `tokenizers` package is missing (this project's CPU machines): ids from the
    engine's own tokenizer (`mlmamba-cli tokenize`, which equals `tokenizers` on the project's
    tests), text from the vocabulary (byte-level BPE decoding is a table lookup)."""

    def __init__(self, cli: str, folder: str, spec: dict):
        self.cli, self.folder = cli, folder
        u2b = {c: b for b, c in T._byte_to_unicode().items()}
        self.pieces = {}
        for t, i in spec["model"]["vocab"].items():
            self.pieces[i] = bytes(u2b[ch] for ch in t)
        for t in spec.get("added_tokens", []):
            self.pieces[t["id"]] = t["content"].encode("utf-8")

    def encode(self, text: str) -> list:
        import subprocess
        out = subprocess.run([self.cli, "tokenize", "--model", self.folder, "--text", text, "--json"],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)["ids"]

    def decode(self, ids) -> str:
        return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")


def load_model(folder: str, cli: str):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    _, sd, _ = TM.load_package(folder)
    model = M.MLMamba(cfg)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
        text = f.read()
    try:
        import tokenizers  # noqa: F401
        tok = T.Tok(text)
    except ImportError:
        tok = CliTokenizer(cli, folder, json.loads(text))
    return model.float().eval(), tok, cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--predictions", default=None)
    ap.add_argument("--compare", default=None, help="predictions JSONL of mlmamba-cli eval on the same data")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "app", "mlmamba-cli"),
                    help="mlmamba-cli for tokenising where the tokenizers package is missing")
    a = ap.parse_args(argv)

    from PIL import Image
    W, _ = T.shapes_modules(os.path.join(ROOT, "tools", "shapes"))
    model, tok, cfg = load_model(a.model, a.cli)
    size = cfg["image"]["size"]
    base = os.path.dirname(os.path.abspath(a.data))
    with open(a.data, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    images = sorted({r["image"] for r in rows})
    pix = {}
    for p in images:
        path = p if os.path.isabs(p) else os.path.join(base, p)
        with Image.open(path) as img:
            pix[p] = T.to_square(img, size)
    with torch.no_grad():
        order = {p: k for k, p in enumerate(images)}
        px = torch.from_numpy(np.stack([pix[p] for p in images])).permute(0, 3, 1, 2).float() / 255.0
        visual = torch.cat([model.encode_images(px[s:s + 64]) for s in range(0, len(images), 64)])
        cache = {}
        prompts = [cache.setdefault(r["question"], tok.encode(T.zephyr_turn(r["question"], True))) for r in rows]
        vis = visual[torch.tensor([order[r["image"]] for r in rows])]
        max_new = cfg["generation"]["max_new_tokens"]
        # Long answers (descriptions) together, so short-answer batches finish in a few steps.
        by_len = sorted(range(len(rows)), key=lambda n: rows[n]["family"] == "describe")
        replies = [None] * len(rows)
        for s in range(0, len(by_len), a.batch):
            idx = by_len[s:s + a.batch]
            outs = T.greedy(model, vis[idx], [prompts[n] for n in idx], max_new, torch.device("cpu"), batch=a.batch)
            for n, o in zip(idx, outs):
                replies[n] = tok.decode(o)

    fam = {}
    for r, pred in zip(rows, replies):
        c = fam.setdefault(r["family"], [0, 0])
        c[0] += bool(W.is_correct(pred, r["answer"]))
        c[1] += 1
    total = [sum(v[0] for v in fam.values()), sum(v[1] for v in fam.values())]
    print(f"{'family':12s} {'correct':>8s} {'total':>6s} {'accuracy':>9s}")
    for k in sorted(fam):
        print(f"{k:12s} {fam[k][0]:8d} {fam[k][1]:6d} {100 * fam[k][0] / fam[k][1]:8.1f}%")
    print(f"{'overall':12s} {total[0]:8d} {total[1]:6d} {100 * total[0] / total[1]:8.1f}%")

    if a.predictions:
        with open(a.predictions, "w", encoding="utf-8") as f:
            for r, pred in zip(rows, replies):
                f.write(json.dumps(dict(r, prediction=pred), ensure_ascii=False) + "\n")

    if a.compare:
        with open(a.compare, encoding="utf-8") as f:
            other = [json.loads(line) for line in f if line.strip()]
        if len(other) != len(rows):
            print(f"--compare has {len(other)} lines, the data {len(rows)}")
            return 1
        same, diff = {}, []
        for r, pred, o in zip(rows, replies, other):
            c = same.setdefault(r["family"], [0, 0])
            eq = pred == o.get("prediction")
            c[0] += eq
            c[1] += 1
            if not eq:
                diff.append((r["question"], pred, o.get("prediction")))
        n_same = sum(v[0] for v in same.values())
        print(f"identical answers, PyTorch vs --compare: {n_same}/{len(rows)} "
              f"({100 * n_same / len(rows):.1f}%); " +
              ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(same.items())))
        for q, p, o in diff:
            print(f"  differs: {q!r}: PyTorch {p!r}, other {o!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
