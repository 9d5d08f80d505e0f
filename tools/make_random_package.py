#!/usr/bin/env python3
"""Writes an ML-Mamba model package (docs/model-format.md) of any size with random weights.

For load tests, memory and speed measurements of the whole image + text pipeline before (or without)
the real weights. Only numpy is needed, so it runs on the build machines. Tensors are generated and
written one slice at a time, so even the full 3.6B package never has to fit in memory.

  python3 tools/make_random_package.py --out DIR [--preset tiny|full] [--set SECTION.FIELD=VALUE ...]
      [--dtype bf16|f16|f32] [--shard-size 4GB] [--all-blocks] [--text-only] [--untied-head]
      [--seed 0] [--tokenizer tests/fixtures/tokenizer/tokenizer.json] [--overwrite] [--dry-run]

`--set` edits the preset before anything is written, with the config.json field path, e.g.
`--set llm_backbone.n_layer=4`, `--set vision_backbone.encoders.1.dim=96`, `--set image.size=224`.
Each encoder also carries `depth` (its block count in the original network), which is not a
config.json field: only blocks 0..feature_layer are written unless `--all-blocks` is given.
"""
import argparse
import copy
import json
import math
import os
import shutil
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_random_model import to_storage  # noqa: E402  (one bf16/f16 rounding rule for every writer)

DEFAULT_TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "tokenizer.json")
DEFAULT_SHARD_BYTES = 4 * 10 ** 9
BYTES_PER = {"f32": 4, "f16": 2, "bf16": 2}
# A slice of at most this many elements is generated and converted at a time (64 MB in f32).
CHUNK_ELEMS = 1 << 24

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIGLIP_MEAN, SIGLIP_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def _encoder(name, patch, dim, heads, mlp_hidden, cls, regs, ls, depth, feature_layer, mean, std):
    return {"name": name, "patch_size": patch, "dim": dim, "heads": heads, "mlp_hidden": mlp_hidden,
            "class_token": cls, "register_tokens": regs, "layer_scale": ls, "feature_layer": feature_layer,
            "norm_eps": 1e-6, "mean": list(mean), "std": list(std), "depth": depth}


def _package(name, llm, image_size, encoders, mlp_out, msc, projector_hidden):
    return {
        "format": "mlmamba-package",
        "format_version": 1,
        "name": name,
        "llm_backbone": dict(llm, norm_eps=1e-5),
        "tokenizer": {"file": "tokenizer.json", "eos_token_id": 0},
        "prompt": {"template": "zephyr"},
        "generation": {"max_new_tokens": 512},
        "image": {"size": image_size, "resize": "resize-naive"},
        "vision_backbone": {"encoders": encoders},
        "mlp": {"out_dim": mlp_out},
        "bidirectional_mamba": dict(msc, norm_eps=1e-5, layer_norm_eps=1e-5),
        "projector": {"hidden_dim": projector_hidden},
    }


MIXER_2_7B = dict(d_state=128, headdim=64, ngroups=1, expand=2, d_conv=4, chunk_size=256)

PRESETS = {
    # The released ML-Mamba ("mlmamba+3b"): timm vit_large_patch14_reg4_dinov2 and
    # vit_so400m_patch14_siglip_384, both read at their second-to-last block; Mamba-2 2.7B.
    "full": lambda: _package(
        "ML-Mamba 3B (random weights)",
        dict(d_model=2560, n_layer=64, vocab_size=50288, max_sequence_length=8192, **MIXER_2_7B),
        384,
        [_encoder("dino_featurizer", 14, 1024, 16, 4096, True, 4, True, 24, 22, IMAGENET_MEAN, IMAGENET_STD),
         _encoder("siglip_featurizer", 14, 1152, 16, 4304, False, 0, False, 27, 25, SIGLIP_MEAN, SIGLIP_STD)],
        2560, dict(n_layer=2, **MIXER_2_7B), 10240),
    # Same structure at toy widths, each width different so a mixed-up dimension cannot pass
    # unnoticed; vocabulary = the fixture tokenizer's 963 ids padded to 16.
    "tiny": lambda: _package(
        "ML-Mamba tiny (random weights)",
        dict(d_model=64, n_layer=2, vocab_size=976, d_state=16, headdim=16, ngroups=1, expand=2, d_conv=4,
             chunk_size=16, max_sequence_length=2048),
        56,
        [_encoder("dino_featurizer", 14, 32, 2, 80, True, 4, True, 4, 2, IMAGENET_MEAN, IMAGENET_STD),
         _encoder("siglip_featurizer", 14, 48, 3, 72, False, 0, False, 4, 2, SIGLIP_MEAN, SIGLIP_STD)],
        40, dict(n_layer=2, d_state=8, headdim=8, ngroups=1, expand=2, d_conv=4, chunk_size=16), 96),
}


# ----------------------------------------------------------------------------------------------
# Layout: every tensor of a package, from its config (docs/model-format.md, "Tensor names").
# Each entry is (name, shape, init); init says how random weights are drawn and is ignored by the
# converter, which uses the same layout to know which tensors a package must hold.

def mixer_dims(d_model, m):
    d_inner = m["expand"] * d_model
    nheads = d_inner // m["headdim"]
    conv_dim = d_inner + 2 * m["ngroups"] * m["d_state"]
    return d_inner, nheads, conv_dim, 2 * d_inner + 2 * m["ngroups"] * m["d_state"] + nheads


def mixer_layout(prefix, d_model, m, n_layer, bidirectional):
    d_inner, nheads, conv_dim, d_in_proj = mixer_dims(d_model, m)
    k = m["d_conv"]
    out = [(prefix + "in_proj.weight", (d_in_proj, d_model), ("normal", 0.0, d_model ** -0.5)),
           # Scaled down with depth, as mamba_ssm's init does, so the residual stream stays O(1).
           (prefix + "out_proj.weight", (d_model, d_inner), ("normal", 0.0, d_inner ** -0.5 / math.sqrt(n_layer)))]
    for s in ([""] + (["_b"] if bidirectional else [])):
        out += [(prefix + f"conv1d{s}.weight", (conv_dim, 1, k), ("normal", 0.0, k ** -0.5)),
                (prefix + f"conv1d{s}.bias", (conv_dim,), ("normal", 0.0, 0.1))]
    for s in ([""] + (["_b"] if bidirectional else [])):
        out += [(prefix + f"dt_bias{s}", (nheads,), ("dt_bias",)),
                (prefix + f"A_log{s}", (nheads,), ("A_log",)),
                (prefix + f"D{s}", (nheads,), ("normal", 1.0, 0.1))]
    out.append((prefix + "norm.weight", (d_inner,), ("normal", 1.0, 0.05)))
    return out


def linear(prefix, n_out, n_in, bias=True):
    out = [(prefix + "weight", (n_out, n_in), ("normal", 0.0, n_in ** -0.5))]
    if bias:
        out.append((prefix + "bias", (n_out,), ("normal", 0.0, 0.02)))
    return out


def layer_norm(prefix, dim):
    return [(prefix + "weight", (dim,), ("normal", 1.0, 0.05)), (prefix + "bias", (dim,), ("normal", 0.0, 0.02))]


def vit_block_layout(prefix, e):
    d, h = e["dim"], e["mlp_hidden"]
    out = layer_norm(prefix + "norm1.", d)
    out += linear(prefix + "attn.qkv.", 3 * d, d)
    out += linear(prefix + "attn.proj.", d, d)
    if e["layer_scale"]:
        out.append((prefix + "ls1.gamma", (d,), ("normal", 0.1, 0.02)))
    out += layer_norm(prefix + "norm2.", d)
    out += linear(prefix + "mlp.fc1.", h, d)
    out += linear(prefix + "mlp.fc2.", d, h)
    if e["layer_scale"]:
        out.append((prefix + "ls2.gamma", (d,), ("normal", 0.1, 0.02)))
    return out


def vit_layout(cfg, e, n_blocks, final_norm):
    p = "vision_backbone." + e["name"] + "."
    d, ps = e["dim"], e["patch_size"]
    grid = cfg["image"]["size"] // ps
    out = [(p + "patch_embed.proj.weight", (d, 3, ps, ps), ("normal", 0.0, (3 * ps * ps) ** -0.5)),
           (p + "patch_embed.proj.bias", (d,), ("normal", 0.0, 0.02)),
           (p + "pos_embed", (1, grid * grid, d), ("normal", 0.0, 0.05))]
    if e["class_token"]:
        out.append((p + "cls_token", (1, 1, d), ("normal", 0.0, 0.05)))
    if e["register_tokens"]:
        out.append((p + "reg_token", (1, e["register_tokens"], d), ("normal", 0.0, 0.05)))
    for j in range(n_blocks):
        out += vit_block_layout(p + f"blocks.{j}.", e)
    if final_norm:
        out += layer_norm(p + "norm.", d)
    return out


def package_layout(cfg, all_blocks=False, lm_head=False):
    """Every tensor of the package `cfg` describes, in data-flow order.

    all_blocks: write every block up to the encoder's `depth` and its final norm (never run by the
    engine, but present in the original networks); otherwise blocks 0..feature_layer only.
    """
    out = []
    vision = "vision_backbone" in cfg
    if vision:
        for e in cfg["vision_backbone"]["encoders"]:
            n = e["depth"] if all_blocks else e["feature_layer"] + 1
            out += vit_layout(cfg, e, n, all_blocks)
        width = cfg["mlp"]["out_dim"]
        out += linear("mlp.0.", width, sum(e["dim"] for e in cfg["vision_backbone"]["encoders"]))
        msc = cfg["bidirectional_mamba"]
        for l in range(msc["n_layer"]):
            p = f"bidirectional_mamba.layers.{l}."
            out += mixer_layout(p + "mixer.", width, msc, msc["n_layer"], True)
            out += layer_norm(p + "norm.", width)
            out += linear(p + "mlp.w1.", width, width)
            out += linear(p + "mlp.w2.", width, width)
            out += linear(p + "mlp.w3.", width, width)
        out += layer_norm("bidirectional_mamba.norm_f.", width)
        d_llm, hid = cfg["llm_backbone"]["d_model"], cfg["projector"]["hidden_dim"]
        out += linear("projector.projector.0.", hid, width)
        out += linear("projector.projector.2.", d_llm, hid)
        out += linear("projector.projector.4.", d_llm, d_llm)
    llm = cfg["llm_backbone"]
    D, V = llm["d_model"], llm["vocab_size"]
    out.append(("llm_backbone.backbone.embedding.weight", (V, D), ("normal", 0.0, 0.02)))
    for i in range(llm["n_layer"]):
        p = f"llm_backbone.backbone.layers.{i}."
        out.append((p + "norm.weight", (D,), ("normal", 1.0, 0.05)))
        out += mixer_layout(p + "mixer.", D, llm, llm["n_layer"], False)
    out.append(("llm_backbone.backbone.norm_f.weight", (D,), ("normal", 1.0, 0.05)))
    if lm_head:
        out.append(("llm_backbone.lm_head.weight", (V, D), ("normal", 0.0, D ** -0.5)))
    return out


def config_json(cfg):
    """The config.json text: the spec minus the fields only the generator uses."""
    c = copy.deepcopy(cfg)
    for e in c.get("vision_backbone", {}).get("encoders", []):
        e.pop("depth", None)
    return json.dumps(c, indent=2) + "\n"


def check_spec(cfg):
    """Rejects a spec whose sizes cannot form a model, before hours of writing are spent on it."""
    def mixer(where, d_model, m):
        for k in ("d_state", "headdim", "ngroups", "expand", "d_conv", "chunk_size"):
            if not (isinstance(m[k], int) and m[k] >= 1):
                raise ValueError(f"{where}.{k} must be a positive integer")
        d_inner = m["expand"] * d_model
        if d_inner % m["headdim"]:
            raise ValueError(f"{where}: expand x d_model ({d_inner}) is not a multiple of headdim")
        if (d_inner // m["headdim"]) % m["ngroups"]:
            raise ValueError(f"{where}: heads ({d_inner // m['headdim']}) are not a multiple of ngroups")
    llm = cfg["llm_backbone"]
    for k in ("d_model", "n_layer", "vocab_size", "max_sequence_length"):
        if not (isinstance(llm[k], int) and llm[k] >= 1):
            raise ValueError(f"llm_backbone.{k} must be a positive integer")
    mixer("llm_backbone", llm["d_model"], llm)
    if "vision_backbone" not in cfg:
        return
    grids = set()
    for i, e in enumerate(cfg["vision_backbone"]["encoders"]):
        w = f"vision_backbone.encoders.{i}"
        if e["dim"] % e["heads"]:
            raise ValueError(f"{w}: dim {e['dim']} is not a multiple of heads {e['heads']}")
        if not 0 <= e["feature_layer"] < e["depth"]:
            raise ValueError(f"{w}: feature_layer {e['feature_layer']} is not a block of depth {e['depth']}")
        if cfg["image"]["size"] // e["patch_size"] < 1:
            raise ValueError(f"{w}: patch_size is larger than image.size")
        grids.add(cfg["image"]["size"] // e["patch_size"])
    if len(grids) != 1:
        raise ValueError(f"encoders give different patch grids {sorted(grids)}; they must agree")
    mixer("bidirectional_mamba", cfg["mlp"]["out_dim"], cfg["bidirectional_mamba"])


def apply_override(cfg, assignment):
    """`a.b.0.c=VALUE`: VALUE is read as JSON when it parses, else taken as a string."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise ValueError(f"--set {assignment!r}: expected PATH=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    keys = path.split(".")
    node = cfg
    for k in keys[:-1]:
        node = _child(node, k, path)
    last = keys[-1]
    if isinstance(node, list):
        idx = _index(node, last, path)
        node[idx] = value
    elif isinstance(node, dict) and last in node:
        node[last] = value
    else:
        # Only known fields: a misspelt name would otherwise be written silently and ignored.
        raise ValueError(f"--set {path}: no field {last!r} there")


def _index(node, k, path):
    if not k.isdigit() or int(k) >= len(node):
        raise ValueError(f"--set {path}: {k!r} is not an index of a list of {len(node)}")
    return int(k)


def _child(node, k, path):
    if isinstance(node, list):
        return node[_index(node, k, path)]
    if isinstance(node, dict) and k in node and isinstance(node[k], (dict, list)):
        return node[k]
    raise ValueError(f"--set {path}: no section {k!r} there")


# ----------------------------------------------------------------------------------------------
# Streaming safetensors writer (the same header layout as make_random_model.write_safetensors,
# which needs every tensor in memory at once; this one needs one slice).

def parse_size(text):
    """'4GB' = 4e9 bytes (the Hugging Face convention), '4GiB' = 4 * 2^30, or a plain byte count."""
    t = str(text).strip().upper()
    units = [("GIB", 1 << 30), ("MIB", 1 << 20), ("KIB", 1 << 10), ("GB", 10 ** 9), ("MB", 10 ** 6),
             ("KB", 10 ** 3), ("B", 1)]
    for suffix, mult in units:
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * mult)
    return int(t)


def row_chunks(array, limit=CHUNK_ELEMS):
    """Slices along the first axis, each at most `limit` elements (one row at least)."""
    a = np.asarray(array)
    if a.ndim == 0 or a.size <= limit:
        yield a
        return
    per_row = a.size // a.shape[0]
    step = max(1, limit // per_row)
    for r in range(0, a.shape[0], step):
        yield a[r:r + step]


def plan_shards(entries, dtype, shard_bytes):
    """Greedy in order: a new shard starts when the next tensor would overflow this one. A tensor
    larger than the limit gets a shard of its own."""
    shards, cur, cur_bytes = [], [], 0
    for e in entries:
        n = int(np.prod(e[1], dtype=np.int64)) * BYTES_PER[dtype]
        if cur and cur_bytes + n > shard_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(e)
        cur_bytes += n
    if cur:
        shards.append(cur)
    return shards


def _write_one(path, entries, dtype):
    tag = to_storage(np.zeros(1, np.float32), dtype)[0]
    header, offset = {}, 0
    for name, shape, _ in entries:
        n = int(np.prod(shape, dtype=np.int64)) * BYTES_PER[dtype]
        header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)  # data 8-byte aligned, as the reference writer keeps it
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape, produce in entries:
            want = int(np.prod(shape, dtype=np.int64))
            got = 0
            for piece in produce():
                raw = to_storage(piece, dtype)[1]
                got += np.asarray(piece).size
                f.write(raw)
            if got != want:
                raise RuntimeError(f"{name}: produced {got} values for shape {list(shape)}")
    os.replace(tmp, path)
    return offset


def package_weight_files(folder):
    """The weight file names a package folder may hold (old ones are removed before writing)."""
    out = []
    for f in os.listdir(folder):
        if f == "model.safetensors" or f == "model.safetensors.index.json" or (
                f.startswith("model-") and (f.endswith(".safetensors") or f.endswith(".safetensors.partial"))):
            out.append(f)
    return out


def write_weights(folder, entries, dtype, shard_bytes=DEFAULT_SHARD_BYTES, log=None):
    """entries: (name, shape, produce) where produce() yields float32 slices whose concatenation
    along the first axis is the tensor. Returns the written file names."""
    names = [e[0] for e in entries]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names")
    for f in package_weight_files(folder):
        os.remove(os.path.join(folder, f))
    shards = plan_shards(entries, dtype, shard_bytes)
    if len(shards) == 1:
        _write_one(os.path.join(folder, "model.safetensors"), shards[0], dtype)
        return ["model.safetensors"]
    files, weight_map, total = [], {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        if log:
            log(f"  writing {fname} ({len(shard)} tensors)")
        total += _write_one(os.path.join(folder, fname), shard, dtype)
        files.append(fname)
        for name, _, _ in shard:
            weight_map[name] = fname
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")
    return files + ["model.safetensors.index.json"]


# ----------------------------------------------------------------------------------------------

def random_producer(shape, init, rng):
    n = int(np.prod(shape, dtype=np.int64))
    rows = shape[0] if len(shape) else 1
    per_row = max(1, n // max(1, rows))

    def produce():
        step = max(1, CHUNK_ELEMS // per_row)
        for r in range(0, rows, step):
            k = min(step, rows - r) * per_row
            if init[0] == "normal":
                a = rng.standard_normal(k, dtype=np.float32)
                a *= np.float32(init[2])
                a += np.float32(init[1])
            elif init[0] == "A_log":
                # A = -exp(A_log) in [-16, -1]: mamba_ssm's initial range, decays neither 0 nor 1.
                a = np.log(rng.uniform(1.0, 16.0, k)).astype(np.float32)
            elif init[0] == "dt_bias":
                # softplus(dt_bias) = dt, log-uniform in [1e-3, 1e-1] (mamba_ssm's initial range).
                dt = np.exp(rng.uniform(math.log(1e-3), math.log(1e-1), k))
                a = (dt + np.log(-np.expm1(-dt))).astype(np.float32)
            else:
                raise ValueError(init)
            yield a
    return produce


def build_spec(preset, overrides):
    cfg = PRESETS[preset]()
    for o in overrides:
        apply_override(cfg, o)
    check_spec(cfg)
    return cfg


def count_params(entries):
    return sum(int(np.prod(e[1], dtype=np.int64)) for e in entries)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="bf16")
    ap.add_argument("--shard-size", default=str(DEFAULT_SHARD_BYTES),
                    help="largest shard: bytes, or 4GB (10^9) / 4GiB (2^30) style; default 4GB")
    ap.add_argument("--all-blocks", action="store_true",
                    help="also write ViT blocks past feature_layer and the final ViT norm (unused by the model)")
    ap.add_argument("--text-only", action="store_true", help="a language model package without the image half")
    ap.add_argument("--untied-head", action="store_true", help="write llm_backbone.lm_head.weight")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true", help="replace the package files in a non-empty --out")
    ap.add_argument("--dry-run", action="store_true", help="print the sizes, write nothing")
    a = ap.parse_args(argv)

    try:
        cfg = build_spec(a.preset, a.overrides)
        shard_bytes = parse_size(a.shard_size)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.text_only:
        for k in ("image", "vision_backbone", "mlp", "bidirectional_mamba", "projector"):
            cfg.pop(k, None)
    entries = package_layout(cfg, all_blocks=a.all_blocks, lm_head=a.untied_head)
    params = count_params(entries)
    nbytes = params * BYTES_PER[a.dtype]
    print(f"{cfg['name']}: {params:,} parameters ({params / 1e9:.3f}B), {len(entries)} tensors, "
          f"{nbytes:,} bytes of weights in {a.dtype}")
    if a.dry_run:
        return 0

    if os.path.isdir(a.out) and os.listdir(a.out) and not a.overwrite:
        print(f"error: {a.out} is not empty (--overwrite replaces the package files in it)", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    if os.path.exists(os.path.join(a.out, "config.json")):
        os.remove(os.path.join(a.out, "config.json"))
    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    plan = [(n, s, random_producer(s, init, rng)) for n, s, init in entries]
    files = write_weights(a.out, plan, a.dtype, shard_bytes, log=print)
    shutil.copy(a.tokenizer, os.path.join(a.out, "tokenizer.json"))
    # config.json last: a folder interrupted mid-write has none and so is never mistaken for a model.
    with open(os.path.join(a.out, "config.json"), "w") as f:
        f.write(config_json(cfg))
    on_disk = sum(os.path.getsize(os.path.join(a.out, f)) for f in files)
    print(f"wrote {a.out}: {', '.join(files)}; {on_disk:,} bytes on disk in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
