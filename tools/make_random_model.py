#!/usr/bin/env python3
"""Writes a Mamba-2 language model folder with random weights, for benchmarks and load tests.

Only numpy is needed (no torch), so it runs on the build machines too. The weights are drawn so the
model computes something non-degenerate (no zeros, decays in the trained range), not to be useful.

  python3 tools/make_random_model.py --preset 130m --out /tmp/mamba2-130m [--format mamba_ssm|transformers]
      [--dtype f32|f16|bf16] [--tokenizer tests/fixtures/tokenizer/tokenizer.json]
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

PRESETS = {
    # Sizes of the public Mamba-2 checkpoints (state-spaces/mamba2-*), mamba_ssm defaults for the rest.
    "130m": dict(d_model=768, n_layer=24, vocab_size=50277),
    "370m": dict(d_model=1024, n_layer=48, vocab_size=50277),
    "780m": dict(d_model=1536, n_layer=48, vocab_size=50277),
    "1.3b": dict(d_model=2048, n_layer=48, vocab_size=50277),
    "2.7b": dict(d_model=2560, n_layer=64, vocab_size=50277),
}
DEFAULTS = dict(d_state=128, headdim=64, expand=2, ngroups=1, d_conv=4, chunk_size=256, pad_vocab_size_multiple=16)


def to_storage(a, dtype):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "f32":
        return "F32", a.tobytes()
    if dtype == "f16":
        return "F16", a.astype(np.float16).tobytes()
    # bf16: round to nearest even on the upper 16 bits of the f32 pattern.
    bits = a.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return "BF16", rounded.tobytes()


def write_safetensors(path, tensors, dtype):
    header, blobs, offset = {}, [], 0
    for name, arr in tensors:
        tag, raw = to_storage(arr, dtype)
        header[name] = {"dtype": tag, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)  # keep the data 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="130m")
    ap.add_argument("--out", required=True)
    ap.add_argument("--format", choices=["mamba_ssm", "transformers"], default="mamba_ssm")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    ap.add_argument("--tokenizer", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures",
                                                        "tokenizer", "tokenizer.json"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    c = dict(DEFAULTS, **PRESETS[a.preset])
    rng = np.random.default_rng(a.seed)
    D, L = c["d_model"], c["n_layer"]
    pad = c["pad_vocab_size_multiple"]
    V = (c["vocab_size"] + pad - 1) // pad * pad
    d_inner = c["expand"] * D
    H = d_inner // c["headdim"]
    N, G, K = c["d_state"], c["ngroups"], c["d_conv"]
    conv_dim = d_inner + 2 * G * N
    d_in_proj = 2 * d_inner + 2 * G * N + H

    def randn(*shape, std=1.0):
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)

    emb_key = "backbone.embeddings.weight" if a.format == "transformers" else "backbone.embedding.weight"
    tensors = [(emb_key, randn(V, D, std=0.02))]
    for i in range(L):
        p = f"backbone.layers.{i}."
        dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), H)).astype(np.float32)
        tensors += [
            (p + "norm.weight", 1 + randn(D, std=0.05)),
            (p + "mixer.in_proj.weight", randn(d_in_proj, D, std=D ** -0.5)),
            (p + "mixer.conv1d.weight", randn(conv_dim, 1, K, std=0.3)),
            (p + "mixer.conv1d.bias", randn(conv_dim, std=0.1)),
            (p + "mixer.dt_bias", (dt + np.log(-np.expm1(-dt))).astype(np.float32)),
            (p + "mixer.A_log", np.log(rng.uniform(1, 16, H)).astype(np.float32)),
            (p + "mixer.D", 1 + randn(H, std=0.1)),
            (p + "mixer.norm.weight", 1 + randn(d_inner, std=0.05)),
            (p + "mixer.out_proj.weight", randn(D, d_inner, std=d_inner ** -0.5 / np.sqrt(L))),
        ]
    tensors.append(("backbone.norm_f.weight", 1 + randn(D, std=0.05)))

    os.makedirs(a.out, exist_ok=True)
    write_safetensors(os.path.join(a.out, "model.safetensors"), tensors, a.dtype)
    if a.format == "transformers":
        cfg = {"model_type": "mamba2", "hidden_size": D, "num_hidden_layers": L, "num_heads": H,
               "head_dim": c["headdim"], "state_size": N, "n_groups": G, "expand": c["expand"],
               "conv_kernel": K, "chunk_size": c["chunk_size"], "vocab_size": V, "layer_norm_epsilon": 1e-5,
               "use_bias": False, "use_conv_bias": True, "residual_in_fp32": True, "rms_norm": True,
               "tie_word_embeddings": True, "eos_token_id": 0, "time_step_limit": [0.0, None]}
    else:
        cfg = {"d_model": D, "d_intermediate": 0, "n_layer": L, "vocab_size": c["vocab_size"],
               "ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True,
               "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": pad,
               "tie_embeddings": True}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    shutil.copy(a.tokenizer, os.path.join(a.out, "tokenizer.json"))
    params = sum(int(np.prod(t.shape)) for _, t in tensors)
    print(f"wrote {a.out}: {params / 1e6:.1f}M parameters, {a.format}, {a.dtype}")


if __name__ == "__main__":
    main()
