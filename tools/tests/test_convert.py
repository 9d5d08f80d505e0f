#!/usr/bin/env python3
"""Tests of tools/convert_mlmamba.py and tools/make_random_package.py.

A synthetic checkpoint with the release's key layout (docs/MODEL.md section 6) at toy sizes, plus timm-style
vision state dicts, go through the converter; the package is read back with a reader written here and
checked against the tensor names and shapes docs/model-format.md gives, value by value. Then the random
package writer at toy size, and the full preset's layout and parameter count without writing it.

  /usr/bin/python3 tools/tests/test_convert.py        (numpy + torch; timm is not needed)
"""
import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.dirname(HERE)
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import convert_mlmamba as conv  # noqa: E402
import make_random_model  # noqa: E402
import make_random_package as mrp  # noqa: E402

TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "tokenizer.json")

# Toy sizes, every width distinct so a transposed or mixed-up size cannot pass.
D, L, V = 32, 3, 976                    # language model (V >= the fixture tokenizer's 963 ids)
MIX = dict(d_state=8, headdim=8, ngroups=1, expand=2, d_conv=4)
IMG, PATCH, GRID, STORED = 24, 4, 6, 12  # package grid 6x6; DINOv2 stored at twice that, like 37 vs 27
DINO = dict(dim=16, heads=2, mlp=40, depth=4, regs=4)
SIG = dict(dim=24, heads=3, mlp=56, depth=4)
W, MSC_L, HID = 48, 2, 80               # mlp out / MSC width, MSC layers, projector hidden

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


# ----------------------------------------------------------------------------------------------
# Independent readers and expectations (written from the docs, not from the tools).

def read_st(path):
    """{name: (dtype, shape, float32 array)} of one safetensors file, plus the header length."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    assert (8 + n) % 8 == 0, "data must start 8-byte aligned"
    out, end = {}, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = blob[8 + n + a: 8 + n + b]
        end = max(end, b)
        if info["dtype"] == "BF16":
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F16":
            arr = np.frombuffer(raw, np.float16).astype(np.float32)
        else:
            assert info["dtype"] == "F32", info["dtype"]
            arr = np.frombuffer(raw, np.float32)
        assert arr.size == int(np.prod(info["shape"])), name
        out[name] = (info["dtype"], tuple(info["shape"]), arr.reshape(info["shape"]))
    assert 8 + n + end == len(blob), f"{path}: trailing or missing bytes"
    return out


def read_package(folder):
    idx = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.exists(idx):
        return read_st(os.path.join(folder, "model.safetensors")), None
    with open(idx) as f:
        index = json.load(f)
    tensors, total = {}, 0
    for fname in sorted(set(index["weight_map"].values())):
        part = read_st(os.path.join(folder, fname))
        for name, t in part.items():
            assert name not in tensors, f"{name} in two shards"
            assert index["weight_map"].get(name) == fname, f"{name} is in {fname}, index says otherwise"
            tensors[name] = t
            total += t[2].size * (2 if t[0] in ("BF16", "F16") else 4)
    assert set(index["weight_map"]) == set(tensors), "index and shards list different tensors"
    assert index["metadata"]["total_size"] == total, "index total_size is not the tensors' byte count"
    return tensors, index


def bf16(t):
    return torch.as_tensor(t).float().to(torch.bfloat16).float().numpy()


def expected_shapes(cfg, blocks=None):
    """name -> shape from docs/model-format.md's formulas, for a package config."""
    out = {}
    l = cfg["llm_backbone"]

    def mixer(p, d, m, bi):
        di = m["expand"] * d
        h = di // m["headdim"]
        cd = di + 2 * m["ngroups"] * m["d_state"]
        out[p + "in_proj.weight"] = (2 * di + 2 * m["ngroups"] * m["d_state"] + h, d)
        out[p + "out_proj.weight"] = (d, di)
        out[p + "norm.weight"] = (di,)
        for s in ["", "_b"] if bi else [""]:
            out[p + f"conv1d{s}.weight"] = (cd, 1, m["d_conv"])
            out[p + f"conv1d{s}.bias"] = (cd,)
            for k in ("dt_bias", "A_log", "D"):
                out[p + k + s] = (h,)
    out["llm_backbone.backbone.embedding.weight"] = (l["vocab_size"], l["d_model"])
    out["llm_backbone.backbone.norm_f.weight"] = (l["d_model"],)
    for i in range(l["n_layer"]):
        out[f"llm_backbone.backbone.layers.{i}.norm.weight"] = (l["d_model"],)
        mixer(f"llm_backbone.backbone.layers.{i}.mixer.", l["d_model"], l, False)
    if "vision_backbone" not in cfg:
        return out
    grid = cfg["image"]["size"] // cfg["vision_backbone"]["encoders"][0]["patch_size"]
    for e in cfg["vision_backbone"]["encoders"]:
        p, d, pz = f"vision_backbone.{e['name']}.", e["dim"], e["patch_size"]
        out[p + "patch_embed.proj.weight"] = (d, 3, pz, pz)
        out[p + "patch_embed.proj.bias"] = (d,)
        out[p + "pos_embed"] = (1, grid * grid, d)
        if e["class_token"]:
            out[p + "cls_token"] = (1, 1, d)
        if e["register_tokens"]:
            out[p + "reg_token"] = (1, e["register_tokens"], d)
        nb = e["feature_layer"] + 1 if blocks is None else blocks[e["name"]]
        for j in range(nb):
            b = p + f"blocks.{j}."
            for k in ("norm1", "norm2"):
                out[b + k + ".weight"] = out[b + k + ".bias"] = (d,)
            out[b + "attn.qkv.weight"], out[b + "attn.qkv.bias"] = (3 * d, d), (3 * d,)
            out[b + "attn.proj.weight"], out[b + "attn.proj.bias"] = (d, d), (d,)
            out[b + "mlp.fc1.weight"], out[b + "mlp.fc1.bias"] = (e["mlp_hidden"], d), (e["mlp_hidden"],)
            out[b + "mlp.fc2.weight"], out[b + "mlp.fc2.bias"] = (d, e["mlp_hidden"]), (d,)
            if e["layer_scale"]:
                out[b + "ls1.gamma"] = out[b + "ls2.gamma"] = (d,)
    w = cfg["mlp"]["out_dim"]
    out["mlp.0.weight"] = (w, sum(e["dim"] for e in cfg["vision_backbone"]["encoders"]))
    out["mlp.0.bias"] = (w,)
    m = cfg["bidirectional_mamba"]
    for i in range(m["n_layer"]):
        p = f"bidirectional_mamba.layers.{i}."
        mixer(p + "mixer.", w, m, True)
        out[p + "norm.weight"] = out[p + "norm.bias"] = (w,)
        for k in ("w1", "w2", "w3"):
            out[p + f"mlp.{k}.weight"], out[p + f"mlp.{k}.bias"] = (w, w), (w,)
    out["bidirectional_mamba.norm_f.weight"] = out["bidirectional_mamba.norm_f.bias"] = (w,)
    h, dl = cfg["projector"]["hidden_dim"], l["d_model"]
    for k, shape in (("0", (h, w)), ("2", (dl, h)), ("4", (dl, dl))):
        out[f"projector.projector.{k}.weight"], out[f"projector.projector.{k}.bias"] = shape, (shape[0],)
    return out


# ----------------------------------------------------------------------------------------------
# The synthetic release.

def mixer_state(g, prefix, d, bi):
    di = MIX["expand"] * d
    h = di // MIX["headdim"]
    cd = di + 2 * MIX["d_state"]
    s = {prefix + "in_proj.weight": torch.randn(2 * di + 2 * MIX["d_state"] + h, d, generator=g),
         prefix + "out_proj.weight": torch.randn(d, di, generator=g),
         prefix + "norm.weight": torch.randn(di, generator=g)}
    for suf in ["", "_b"] if bi else [""]:
        s[prefix + f"conv1d{suf}.weight"] = torch.randn(cd, 1, MIX["d_conv"], generator=g)
        s[prefix + f"conv1d{suf}.bias"] = torch.randn(cd, generator=g)
        for k in ("dt_bias", "A_log", "D"):
            s[prefix + k + suf] = torch.randn(h, generator=g)
    return s


def synthetic_release(seed=0, tied=True):
    g = torch.Generator().manual_seed(seed)
    llm = {"backbone.embedding.weight": torch.randn(V, D, generator=g)}
    for i in range(L):
        llm[f"backbone.layers.{i}.norm.weight"] = torch.randn(D, generator=g)
        llm.update(mixer_state(g, f"backbone.layers.{i}.mixer.", D, False))
    llm["backbone.norm_f.weight"] = torch.randn(D, generator=g)
    # A tied head appears in a state dict as a second name for the same tensor.
    llm["lm_head.weight"] = llm["backbone.embedding.weight"] if tied else torch.randn(V, D, generator=g)
    mlp = {"0.weight": torch.randn(W, DINO["dim"] + SIG["dim"], generator=g), "0.bias": torch.randn(W, generator=g)}
    msc = {}
    for i in range(MSC_L):
        msc.update(mixer_state(g, f"layers.{i}.mixer.", W, True))
        msc[f"layers.{i}.norm.weight"] = torch.randn(W, generator=g)
        msc[f"layers.{i}.norm.bias"] = torch.randn(W, generator=g)
        for k in ("w1", "w2", "w3"):
            msc[f"layers.{i}.mlp.{k}.weight"] = torch.randn(W, W, generator=g)
            msc[f"layers.{i}.mlp.{k}.bias"] = torch.randn(W, generator=g)
    msc["norm_f.weight"] = torch.randn(W, generator=g)
    msc["norm_f.bias"] = torch.randn(W, generator=g)
    proj = {}
    for k, (o, i) in (("0", (HID, W)), ("2", (D, HID)), ("4", (D, D))):
        proj[f"projector.{k}.weight"] = torch.randn(o, i, generator=g)
        proj[f"projector.{k}.bias"] = torch.randn(o, generator=g)
    return {"model": {"llm_backbone": llm, "mlp": mlp, "bidirectional_mamba": msc, "projector": proj}}


def timm_vit(seed, dim, mlp, depth, pos_rows, cls, regs, ls, extra=()):
    g = torch.Generator().manual_seed(seed)
    s = {"patch_embed.proj.weight": torch.randn(dim, 3, PATCH, PATCH, generator=g),
         "patch_embed.proj.bias": torch.randn(dim, generator=g),
         "pos_embed": torch.randn(1, pos_rows, dim, generator=g)}
    if cls:
        s["cls_token"] = torch.randn(1, 1, dim, generator=g)
    if regs:
        s["reg_token"] = torch.randn(1, regs, dim, generator=g)
    for j in range(depth):
        b = f"blocks.{j}."
        for k, shape in (("norm1.weight", (dim,)), ("norm1.bias", (dim,)), ("attn.qkv.weight", (3 * dim, dim)),
                         ("attn.qkv.bias", (3 * dim,)), ("attn.proj.weight", (dim, dim)), ("attn.proj.bias", (dim,)),
                         ("norm2.weight", (dim,)), ("norm2.bias", (dim,)), ("mlp.fc1.weight", (mlp, dim)),
                         ("mlp.fc1.bias", (mlp,)), ("mlp.fc2.weight", (dim, mlp)), ("mlp.fc2.bias", (dim,))):
            s[b + k] = torch.randn(*shape, generator=g)
        if ls:
            s[b + "ls1.gamma"] = torch.randn(dim, generator=g)
            s[b + "ls2.gamma"] = torch.randn(dim, generator=g)
    for k, shape in extra:
        s[k] = torch.randn(*shape, generator=g)
    return s


def dino_state():
    # timm's DINOv2-with-registers layout: no position rows for cls/registers, final norm kept.
    return timm_vit(1, DINO["dim"], DINO["mlp"], DINO["depth"], STORED * STORED, True, DINO["regs"], True,
                    extra=[("norm.weight", (DINO["dim"],)), ("norm.bias", (DINO["dim"],))])


def siglip_state():
    d = SIG["dim"]
    # SigLIP: no prefix tokens, stored at the package grid, attention-pool head and final norm.
    return timm_vit(2, d, SIG["mlp"], SIG["depth"], GRID * GRID, False, 0, False,
                    extra=[("norm.weight", (d,)), ("norm.bias", (d,)), ("attn_pool.latent", (1, 1, d)),
                           ("attn_pool.q.weight", (d, d)), ("attn_pool.kv.weight", (2 * d, d)),
                           ("attn_pool.proj.weight", (d, d)), ("attn_pool.mlp.fc1.weight", (SIG["mlp"], d))])


def independent_resample(pos, grid_in, grid_out):
    """[1, gi*gi, C] -> [1, go*go, C] with one F.interpolate call (timm's dynamic-size rule)."""
    c = pos.shape[-1]
    img = np.ascontiguousarray(pos.numpy().reshape(grid_in, grid_in, c).transpose(2, 0, 1))[None]
    out = F.interpolate(torch.from_numpy(img), size=(grid_out, grid_out), mode="bicubic", antialias=True,
                        align_corners=False)
    return out[0].numpy().transpose(1, 2, 0).reshape(1, grid_out * grid_out, c)


def run_convert(args):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = conv.main(args)
    return rc, err.getvalue(), out.getvalue()


# ----------------------------------------------------------------------------------------------

def test_converter(tmp):
    ck = os.path.join(tmp, "latest-checkpoint.pt")
    release = synthetic_release()
    torch.save(release, ck)
    dino_path = os.path.join(tmp, "dino.safetensors")
    dino = dino_state()
    make_random_model.write_safetensors(dino_path, [(k, v.numpy()) for k, v in dino.items()], "f32")
    sig_path = os.path.join(tmp, "siglip.pth")
    sig = siglip_state()
    torch.save(sig, sig_path)

    base = ["--checkpoint", ck, "--dino", dino_path, "--siglip", sig_path, "--tokenizer", TOKENIZER,
            "--image-size", str(IMG), "--chunk-size", "16", "--dino-heads", str(DINO["heads"]),
            "--siglip-heads", str(SIG["heads"]), "--any-size", "--name", "toy"]

    # Every torch.load goes through weights_only=True.
    calls, real_load = [], torch.load

    def spy(*a, **k):
        calls.append(k)
        return real_load(*a, **k)
    torch.load = spy
    try:
        out = os.path.join(tmp, "pkg")
        rc, err, log = run_convert(base + ["--out", out])
    finally:
        torch.load = real_load
    check(rc == 0, f"conversion failed: {err}")
    check(len(calls) == 2 and all(k.get("weights_only") is True and k.get("map_location") == "cpu" for k in calls),
          f"torch.load calls not all weights_only/cpu: {calls}")

    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    want_cfg = {
        "format": "mlmamba-package", "format_version": 1, "name": "toy",
        "llm_backbone": {"d_model": D, "n_layer": L, "vocab_size": V, "d_state": 8, "headdim": 8, "ngroups": 1,
                         "expand": 2, "d_conv": 4, "chunk_size": 16, "norm_eps": 1e-5, "max_sequence_length": 8192},
        "tokenizer": {"file": "tokenizer.json", "eos_token_id": 0},
        "prompt": {"template": "zephyr"},
        "generation": {"max_new_tokens": 512},
        "image": {"size": IMG, "resize": "resize-naive"},
        "vision_backbone": {"encoders": [
            {"name": "dino_featurizer", "patch_size": PATCH, "dim": DINO["dim"], "heads": DINO["heads"],
             "mlp_hidden": DINO["mlp"], "class_token": True, "register_tokens": 4, "layer_scale": True,
             "feature_layer": DINO["depth"] - 2, "norm_eps": 1e-6, "mean": [0.485, 0.456, 0.406],
             "std": [0.229, 0.224, 0.225]},
            {"name": "siglip_featurizer", "patch_size": PATCH, "dim": SIG["dim"], "heads": SIG["heads"],
             "mlp_hidden": SIG["mlp"], "class_token": False, "register_tokens": 0, "layer_scale": False,
             "feature_layer": SIG["depth"] - 2, "norm_eps": 1e-6, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}]},
        "mlp": {"out_dim": W},
        "bidirectional_mamba": {"n_layer": MSC_L, "d_state": 8, "headdim": 8, "ngroups": 1, "expand": 2,
                                "d_conv": 4, "chunk_size": 16, "norm_eps": 1e-5, "layer_norm_eps": 1e-5},
        "projector": {"hidden_dim": HID},
    }
    check(cfg == want_cfg, f"config.json differs:\n{json.dumps(cfg)}\n{json.dumps(want_cfg)}")
    with open(os.path.join(out, "tokenizer.json"), "rb") as a, open(TOKENIZER, "rb") as b:
        check(a.read() == b.read(), "tokenizer.json is not a copy")

    pk, index = read_package(out)
    check(index is None, "a toy package should be one file")
    shapes = expected_shapes(want_cfg)
    check(set(pk) == set(shapes), f"tensor names differ: extra {sorted(set(pk) - set(shapes))[:5]}, "
                                  f"missing {sorted(set(shapes) - set(pk))[:5]}")
    for name, (dt, shape, _) in pk.items():
        check(dt == "BF16", f"{name} stored as {dt}")
        check(shapes.get(name) == shape, f"{name}: shape {shape}, docs say {shapes.get(name)}")
    check("llm_backbone.lm_head.weight" not in pk, "a tied head must not be stored")

    # Values: the source tensor rounded to bf16, except the resampled position embedding.
    m = release["model"]
    sources = {}
    for s in ("llm_backbone", "mlp", "bidirectional_mamba"):
        sources.update({f"{s}.{k}": v for k, v in m[s].items()})
    sources.update({f"projector.{k}": v for k, v in m["projector"].items()})
    sources.update({f"vision_backbone.dino_featurizer.{k}": v for k, v in dino.items()})
    sources.update({f"vision_backbone.siglip_featurizer.{k}": v for k, v in sig.items()})
    resampled = independent_resample(dino["pos_embed"], STORED, GRID)
    n_exact = 0
    for name, (_, _, arr) in pk.items():
        if name == "vision_backbone.dino_featurizer.pos_embed":
            check(np.array_equal(arr, bf16(resampled)), "DINOv2 pos_embed is not the resampled grid")
        else:
            ok = np.array_equal(arr, bf16(sources[name]))
            check(ok, f"{name}: values differ from the source")
            n_exact += ok
    naive = F.interpolate(torch.from_numpy(np.ascontiguousarray(
        dino["pos_embed"].numpy().reshape(STORED, STORED, -1).transpose(2, 0, 1)))[None], size=(GRID, GRID),
        mode="bicubic", align_corners=False)
    check(not np.allclose(resampled, naive[0].numpy().transpose(1, 2, 0).reshape(1, -1, DINO["dim"]), atol=1e-3),
          "antialiasing should change a 2x downsampled grid (test is not sensitive)")
    print(f"converter: {len(pk)} tensors, names/shapes per docs, {n_exact} equal to their source after bf16")

    # f32: resampling exactly equal to one independent interpolate call, SigLIP's grid untouched.
    out32 = os.path.join(tmp, "pkg32")
    rc, err, _ = run_convert(base + ["--out", out32, "--dtype", "f32"])
    check(rc == 0, f"f32 conversion failed: {err}")
    pk32, _ = read_package(out32)
    check(np.array_equal(pk32["vision_backbone.dino_featurizer.pos_embed"][2], resampled),
          "f32 pos_embed differs from F.interpolate(bicubic, antialias)")
    check(np.array_equal(pk32["vision_backbone.siglip_featurizer.pos_embed"][2], sig["pos_embed"].numpy()),
          "SigLIP pos_embed at the package grid must be copied unchanged")
    check(all(v[0] == "F32" for v in pk32.values()), "f32 package has other dtypes")
    out16 = os.path.join(tmp, "pkg16")
    rc, err, _ = run_convert(base + ["--out", out16, "--dtype", "f16"])
    pk16, _ = read_package(out16)
    check(rc == 0 and np.array_equal(pk16["mlp.0.weight"][2], m["mlp"]["0.weight"].half().float().numpy()),
          f"f16 conversion: {err}")

    # Sharding: several files + index, the same tensors.
    outsh = os.path.join(tmp, "pkg_sharded")
    rc, err, _ = run_convert(base + ["--out", outsh, "--shard-size", "20KB"])
    check(rc == 0, f"sharded conversion failed: {err}")
    pks, index = read_package(outsh)
    nfiles = len(set(index["weight_map"].values())) if index else 0
    check(index is not None and nfiles > 2, f"expected several shards, got {nfiles}")
    check(not os.path.exists(os.path.join(outsh, "model.safetensors")), "sharded folder also has model.safetensors")
    for f in set(index["weight_map"].values()):
        size = os.path.getsize(os.path.join(outsh, f))
        big = max(v[2].size * 2 for k, v in pks.items() if index["weight_map"][k] == f)
        check(size <= 20000 + 4096 or big > 20000, f"{f} is {size} bytes, over the 20KB shard limit")
    check(set(pks) == set(pk) and all(np.array_equal(pks[k][2], pk[k][2]) for k in pk),
          "sharded package holds other values than the single file")
    print(f"converter: sharding into {nfiles} files + index round-trips")

    # Kept unused tensors: blocks past the feature layer, final norms, attention-pool head.
    outk = os.path.join(tmp, "pkg_keep")
    rc, err, _ = run_convert(base + ["--out", outk, "--keep-unused"])
    pkk, _ = read_package(outk)
    extra = set(pkk) - set(pk)
    want_extra = {f"vision_backbone.dino_featurizer.{k}" for k in dino if k.startswith(("blocks.3.", "norm."))}
    want_extra |= {f"vision_backbone.siglip_featurizer.{k}" for k in sig
                   if k.startswith(("blocks.3.", "norm.", "attn_pool."))}
    check(rc == 0 and extra == want_extra, f"--keep-unused stored {sorted(extra ^ want_extra)[:4]} differently")
    check(all(np.array_equal(pkk[k][2], bf16(sources[k])) for k in extra), "kept unused tensors differ")

    # Untied head is kept.
    ck2 = os.path.join(tmp, "untied.pt")
    untied = synthetic_release(seed=5, tied=False)
    torch.save(untied, ck2)
    outu = os.path.join(tmp, "pkg_untied")
    rc, err, _ = run_convert([x if x != ck else ck2 for x in base] + ["--out", outu])
    pku, _ = read_package(outu)
    check(rc == 0 and np.array_equal(pku["llm_backbone.lm_head.weight"][2],
                                     bf16(untied["model"]["llm_backbone"]["lm_head.weight"])),
          f"untied lm_head not stored: {err}")

    # DINOv2's own layout: register_tokens, mask_token and a position row for the class token.
    fb = dict(dino)
    fb["register_tokens"] = fb.pop("reg_token")
    fb["mask_token"] = torch.randn(1, DINO["dim"])
    cls_row = torch.randn(1, 1, DINO["dim"])
    fb["pos_embed"] = torch.cat([cls_row, dino["pos_embed"]], dim=1)
    fb_path = os.path.join(tmp, "dinov2_original.pth")
    torch.save({"model": fb}, fb_path)
    outf = os.path.join(tmp, "pkg_fb")
    rc, err, _ = run_convert([x if x != dino_path else fb_path for x in base] + ["--out", outf])
    check(rc == 0, f"DINOv2-layout conversion failed: {err}")
    pkf, _ = read_package(outf)
    pre = "vision_backbone.dino_featurizer."
    check(np.array_equal(pkf[pre + "cls_token"][2], bf16(dino["cls_token"] + cls_row)),
          "the class token's position row must be added to cls_token")
    check(np.array_equal(pkf[pre + "reg_token"][2], bf16(dino["reg_token"])), "register tokens changed")
    check(np.array_equal(pkf[pre + "pos_embed"][2], bf16(resampled)), "pos_embed after dropping the cls row")
    check(set(pkf) == set(pk), "DINOv2-layout package has other tensors")
    print("converter: DINOv2-layout weights (cls position row folded, registers renamed) convert")

    # Refusals, each naming the key.
    def refused(mutate, needle, extra_args=(), what=""):
        bad = synthetic_release()
        mutate(bad["model"])
        p = os.path.join(tmp, "bad.pt")
        torch.save(bad, p)
        o = os.path.join(tmp, "bad_out")
        rc, err, _ = run_convert([x if x != ck else p for x in base] + ["--out", o, "--overwrite"] + list(extra_args))
        check(rc != 0 and needle in err, f"{what}: expected a refusal naming {needle!r}, got rc {rc}: {err.strip()}")
        check(not os.path.exists(os.path.join(o, "config.json")), f"{what}: a refused conversion wrote config.json")
    refused(lambda m: m["bidirectional_mamba"].pop("layers.1.mixer.D_b"), "layers.1.mixer.D_b", what="missing MSC key")
    refused(lambda m: m["llm_backbone"].pop("backbone.layers.1.norm.weight"), "backbone.layers.1.norm.weight",
            what="missing LLM layer norm")
    refused(lambda m: m["llm_backbone"].pop("backbone.layers.0.mixer.A_log"), "backbone.layers.0.mixer.A_log",
            what="missing key used for sizes")
    refused(lambda m: m["projector"].pop("projector.4.bias"), "projector.4.bias", what="missing projector bias")
    refused(lambda m: m.pop("mlp"), "model.mlp", what="missing section")
    refused(lambda m: m["mlp"].__setitem__("1.weight", torch.zeros(2)), "1.weight", what="unexpected key")
    refused(lambda m: m["llm_backbone"].__setitem__("backbone.layers.2.mixer.in_proj.weight", torch.zeros(5, D)),
            "backbone.layers.2.mixer.in_proj.weight", what="wrong shape")
    base_no_any = [x for x in base if x != "--any-size"]
    rc, err, _ = run_convert(base_no_any + ["--out", os.path.join(tmp, "nope")])
    check(rc != 0 and "released architecture" in err and "llm_backbone.d_model = 32 (release: 2560)" in err,
          f"release check message: {err}")

    bad_dino = dict(dino)
    del bad_dino["blocks.1.attn.qkv.bias"]
    bd = os.path.join(tmp, "bad_dino.pth")
    torch.save(bad_dino, bd)
    rc, err, _ = run_convert([x if x != dino_path else bd for x in base] + ["--out", os.path.join(tmp, "bd")])
    check(rc != 0 and "blocks.1.attn.qkv.bias" in err, f"missing vision key not named: {err}")
    odd = dict(sig)
    odd["norm_pre.weight"] = torch.ones(SIG["dim"])  # a pre-norm the package cannot express
    od = os.path.join(tmp, "odd_sig.pth")
    torch.save(odd, od)
    rc, err, _ = run_convert([x if x != sig_path else od for x in base] + ["--out", os.path.join(tmp, "od")])
    check(rc != 0 and "norm_pre.weight" in err, f"unknown vision key not refused: {err}")

    rc, err, _ = run_convert(base + ["--out", out])
    check(rc != 0 and "not empty" in err, "an existing package must not be overwritten silently")
    print("converter: missing, unexpected and misshaped keys refused with their names")

    # A pickle that would run code is refused, and the code does not run.
    marker = os.path.join(tmp, "pickle_ran")
    evil_path = os.path.join(tmp, "evil.pt")
    torch.save({"model": Evil(marker)}, evil_path)
    rc, err, _ = run_convert([x if x != ck else evil_path for x in base] + ["--out", os.path.join(tmp, "evil_out")])
    check(rc != 0 and "refused" in err, f"code-carrying pickle not refused: {err}")
    check(not os.path.exists(marker), "the checkpoint's pickle ran code")
    evil_vit = os.path.join(tmp, "evil_vit.bin")
    torch.save({"pos_embed": Evil(marker)}, evil_vit)
    rc, err, _ = run_convert([x if x != sig_path else evil_vit for x in base] + ["--out", os.path.join(tmp, "ev2")])
    check(rc != 0 and not os.path.exists(marker), f"code-carrying vision .bin not refused: {err}")
    print("converter: pickles are opened weights-only; a code-carrying one is refused without running")

    # The command line itself.
    r = subprocess.run([sys.executable, os.path.join(TOOLS, "convert_mlmamba.py")] + base
                       + ["--out", os.path.join(tmp, "cli")], capture_output=True, text=True)
    check(r.returncode == 0 and os.path.exists(os.path.join(tmp, "cli", "config.json")), f"CLI run: {r.stderr}")

    # --dino-timm/--siglip-timm against a stand-in for timm (the real one is not needed, nor is any of
    # its models small enough): the weights must load strictly, heads come from the model.
    with fake_timm({"toy_dino": (dino, DINO["heads"]), "toy_siglip": (sig, SIG["heads"])}):
        outt = os.path.join(tmp, "pkg_timm")
        rc, err, _ = run_convert([x if x != str(DINO["heads"]) else "7" for x in base]
                                 + ["--out", outt, "--dino-timm", "toy_dino", "--siglip-timm", "toy_siglip"])
        check(rc == 0, f"conversion with timm names failed: {err}")
        if rc == 0:
            pkt, _ = read_package(outt)
            with open(os.path.join(outt, "config.json")) as f:
                enc = json.load(f)["vision_backbone"]["encoders"]
            check(enc[0]["heads"] == DINO["heads"], "heads must come from the timm model, not the option")
            check(set(pkt) == set(pk) and all(np.array_equal(pkt[k][2], pk[k][2]) for k in pk),
                  "timm-checked conversion differs from the direct one")
        rc, err, _ = run_convert([x if x != dino_path else bd for x in base]
                                 + ["--out", os.path.join(tmp, "bt"), "--dino-timm", "toy_dino"])
        check(rc != 0 and "does not load into timm toy_dino" in err and "blocks.1.attn.qkv.bias" in err,
              f"weights that do not fit the timm model: {err}")
    print("converter: timm-named models: strict load, heads from the model")


@contextlib.contextmanager
def fake_timm(models):
    """Stands in for timm: create_model(name) gives an object with the parts the converter reads."""
    import types

    class Stub:
        def __init__(self, state, heads):
            self.want = {k: tuple(v.shape) for k, v in state.items()}
            self.blocks = [types.SimpleNamespace(attn=types.SimpleNamespace(num_heads=heads),
                                                 norm1=types.SimpleNamespace(eps=1e-6))]
            self.no_embed_class, self.num_prefix_tokens, self.state = True, 5, None

        def load_state_dict(self, sd, strict=True):
            assert strict
            missing = sorted(set(self.want) - set(sd))
            if missing or set(sd) - set(self.want):
                raise RuntimeError(f"Error(s) in loading state_dict: Missing key(s): {missing}")
            self.state = dict(sd)

        def state_dict(self):
            return dict(self.state)

    def create_model(name, pretrained=True):
        assert pretrained is False, "the converter must never download"
        return Stub(*models[name])
    saved = {k: sys.modules.get(k) for k in ("timm", "timm.models", "timm.models.vision_transformer")}
    timm = types.ModuleType("timm")
    timm.create_model = create_model
    vt = types.ModuleType("timm.models.vision_transformer")
    vt.checkpoint_filter_fn = lambda sd, model: sd
    sys.modules.update({"timm": timm, "timm.models": types.ModuleType("timm.models"),
                        "timm.models.vision_transformer": vt})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class Evil:
    """Unpickling this creates a directory: visible proof that code from the file ran."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


# ----------------------------------------------------------------------------------------------

def run_maker(args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = mrp.main(args)
    return rc, out.getvalue()


def test_random_package(tmp):
    out = os.path.join(tmp, "tiny")
    rc, log = run_maker(["--out", out, "--preset", "tiny"])
    check(rc == 0, f"tiny package: {log}")
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    top = {"format", "format_version", "name", "llm_backbone", "tokenizer", "prompt", "generation", "image",
           "vision_backbone", "mlp", "bidirectional_mamba", "projector"}
    check(set(cfg) == top, f"config sections {sorted(cfg)}")
    check(set(cfg["llm_backbone"]) == {"d_model", "n_layer", "vocab_size", "d_state", "headdim", "ngroups",
                                       "expand", "d_conv", "chunk_size", "norm_eps", "max_sequence_length"},
          "llm_backbone fields")
    enc_fields = {"name", "patch_size", "dim", "heads", "mlp_hidden", "class_token", "register_tokens",
                  "layer_scale", "feature_layer", "norm_eps", "mean", "std"}
    check(all(set(e) == enc_fields for e in cfg["vision_backbone"]["encoders"]), "encoder fields")
    check(set(cfg["bidirectional_mamba"]) == {"n_layer", "d_state", "headdim", "ngroups", "expand", "d_conv",
                                              "chunk_size", "norm_eps", "layer_norm_eps"}, "MSC fields")
    pk, _ = read_package(out)
    shapes = expected_shapes(cfg)
    check(set(pk) == set(shapes), f"tiny: names differ {sorted(set(pk) ^ set(shapes))[:6]}")
    check(all(shapes.get(k) == v[1] for k, v in pk.items()), "tiny: shapes differ from the docs")
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"random package tiny: {len(pk)} tensors per docs, {size:,} bytes")

    # Weight statistics that keep a random model from computing nothing.
    def vals(suffix):
        return np.concatenate([v[2].ravel() for k, v in pk.items() if k.endswith(suffix)])
    a_log = vals("A_log")
    check(a_log.min() >= -1e-3 and a_log.max() <= np.log(16) + 0.02, "A_log outside log U(1, 16)")
    dt = np.log1p(np.exp(vals("dt_bias").astype(np.float64)))
    check(dt.min() > 0.9e-3 and dt.max() < 0.11 and dt.max() / dt.min() > 20, "softplus(dt_bias) not spread in [1e-3, 1e-1]")
    gam = vals("ls1.gamma")
    check(abs(gam.mean() - 0.1) < 0.02, f"LayerScale gammas mean {gam.mean()}")
    norms = vals("norm1.weight")
    check(abs(norms.mean() - 1) < 0.05, "norm weights should be about 1")
    w = pk["projector.projector.2.weight"][2]
    check(abs(w.std() * np.sqrt(w.shape[1]) - 1) < 0.1, f"linear weights std {w.std()} not 1/sqrt(fan_in)")
    check(all(np.all(np.isfinite(v[2])) for v in pk.values()), "non-finite weights")

    # The streaming writer lays a file out exactly as the in-memory writer of make_random_model.
    tensors = [(k, v[2]) for k, v in pk.items()]
    ref = os.path.join(tmp, "ref.safetensors")
    make_random_model.write_safetensors(ref, tensors, "bf16")
    with open(ref, "rb") as a, open(os.path.join(out, "model.safetensors"), "rb") as b:
        check(a.read() == b.read(), "streamed file differs from make_random_model.write_safetensors")

    # Overrides, sharding, all blocks, text-only, untied head.
    out2 = os.path.join(tmp, "tiny2")
    rc, log = run_maker(["--out", out2, "--set", "llm_backbone.n_layer=4", "--set", "vision_backbone.encoders.1.dim=36",
                         "--set", "bidirectional_mamba.n_layer=1", "--shard-size", "64KB", "--all-blocks",
                         "--untied-head", "--dtype", "f16", "--seed", "3"])
    check(rc == 0, f"overrides: {log}")
    with open(os.path.join(out2, "config.json")) as f:
        cfg2 = json.load(f)
    check(cfg2["llm_backbone"]["n_layer"] == 4 and cfg2["vision_backbone"]["encoders"][1]["dim"] == 36
          and cfg2["bidirectional_mamba"]["n_layer"] == 1, "--set not applied")
    pk2, index = read_package(out2)
    depths = {e["name"]: e["depth"] for e in mrp.PRESETS["tiny"]()["vision_backbone"]["encoders"]}
    shapes2 = expected_shapes(cfg2, blocks=depths)
    shapes2["llm_backbone.lm_head.weight"] = (cfg2["llm_backbone"]["vocab_size"], cfg2["llm_backbone"]["d_model"])
    for e in cfg2["vision_backbone"]["encoders"]:
        shapes2[f"vision_backbone.{e['name']}.norm.weight"] = (e["dim"],)
        shapes2[f"vision_backbone.{e['name']}.norm.bias"] = (e["dim"],)
    check(set(pk2) == set(shapes2) and all(shapes2[k] == v[1] for k, v in pk2.items()),
          f"overridden package names/shapes {sorted(set(pk2) ^ set(shapes2))[:6]}")
    check(index is not None and len(set(index["weight_map"].values())) > 2, "64KB shards expected")
    check(all(v[0] == "F16" for v in pk2.values()), "f16 requested")
    out3 = os.path.join(tmp, "tiny3")
    rc, _ = run_maker(["--out", out3, "--text-only"])
    with open(os.path.join(out3, "config.json")) as f:
        cfg3 = json.load(f)
    pk3, _ = read_package(out3)
    check(rc == 0 and "vision_backbone" not in cfg3 and set(pk3) == set(expected_shapes(cfg3)), "text-only package")
    rc, log = run_maker(["--out", os.path.join(tmp, "bad"), "--set", "llm_backbone.n_layers=4"])
    check(rc != 0 and "n_layers" in log, "a misspelt --set field must be refused")
    rc, log = run_maker(["--out", os.path.join(tmp, "bad"), "--set", "vision_backbone.encoders.0.heads=3"])
    check(rc != 0 and "heads" in log, "dim not divisible by heads must be refused")
    rc, log = run_maker(["--out", out, "--preset", "tiny"])
    check(rc != 0 and "not empty" in log, "an existing folder must not be overwritten silently")
    print("random package: overrides, sharding, all blocks, untied head, text-only, refusals")

    # Full preset: the released architecture, checked by layout only (7 GB is not written here).
    full = mrp.build_spec("full", [])
    layout = mrp.package_layout(full)
    shapes_full = expected_shapes(full)
    check(len(layout) == len(shapes_full) and all(shapes_full.get(n) == tuple(s) for n, s, _ in layout),
          "full preset layout differs from the docs")
    check(shapes_full["vision_backbone.dino_featurizer.pos_embed"] == (1, 729, 1024)
          and "vision_backbone.dino_featurizer.blocks.22.ls2.gamma" in shapes_full
          and "vision_backbone.dino_featurizer.blocks.23.norm1.weight" not in shapes_full
          and "vision_backbone.siglip_featurizer.blocks.25.mlp.fc2.bias" in shapes_full
          and shapes_full["mlp.0.weight"] == (2560, 2176)
          and shapes_full["bidirectional_mamba.layers.1.mixer.in_proj.weight"] == (10576, 2560)
          and shapes_full["projector.projector.0.weight"] == (10240, 2560)
          and shapes_full["llm_backbone.backbone.embedding.weight"] == (50288, 2560)
          and "llm_backbone.backbone.layers.63.mixer.A_log" in shapes_full, "full preset is not the release")
    # Hand count: Mamba-2 2.7B layer 40,216,560; MSC layer 59,914,720; DINOv2 block 12,598,272 (x23);
    # SigLIP block 15,239,504 (x26); see tools/README.md.
    want = (50288 * 2560 + 64 * 40216560 + 2560) + (2 * 59914720 + 2 * 2560) + (2176 * 2560 + 2560) \
        + (2560 * 10240 + 10240 + 10240 * 2560 + 2560 + 2560 * 2560 + 2560) \
        + (23 * 12598272 + 1024 * 3 * 196 + 1024 + 729 * 1024 + 1024 + 4 * 1024) \
        + (26 * 15239504 + 1152 * 3 * 196 + 1152 + 729 * 1152)
    got = sum(int(np.prod(s[1])) for s in layout)
    check(got == want == 3575865568, f"full preset parameters {got:,}, hand count {want:,}")
    rc, log = run_maker(["--out", os.path.join(tmp, "full"), "--preset", "full", "--dry-run"])
    check(rc == 0 and "3,575,865,568 parameters" in log and not os.path.exists(os.path.join(tmp, "full")),
          f"full dry run: {log}")
    print(f"random package full preset: {got:,} parameters, {got * 2:,} bytes in bf16 (layout only)")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "c"))
        os.makedirs(os.path.join(tmp, "r"))
        test_converter(os.path.join(tmp, "c"))
        test_random_package(os.path.join(tmp, "r"))
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all tools tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
