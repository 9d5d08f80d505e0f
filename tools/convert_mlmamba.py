#!/usr/bin/env python3
"""Converts the released ML-Mamba checkpoint and its two timm vision encoders into a model package
(docs/model-format.md): config.json, model.safetensors (or shards + index) and tokenizer.json.

  python3 tools/convert_mlmamba.py --checkpoint latest-checkpoint.pt \
      --dino DINO_WEIGHTS [--dino-timm vit_large_patch14_reg4_dinov2.lvd142m] \
      --siglip SIGLIP_WEIGHTS [--siglip-timm vit_so400m_patch14_siglip_384] \
      --tokenizer tokenizer.json --out DIR [--dtype bf16|f16|f32] [--shard-size 4GB] [--keep-unused]
      [--any-size] [--overwrite]

The checkpoint is opened with torch.load(weights_only=True) only: a file that holds anything other
than tensors and containers is refused rather than executed. The vision weights are timm state dicts
(.safetensors, or .bin/.pth/.pt read the same way as the checkpoint). With --dino-timm/--siglip-timm
(needs timm) the named timm model is built without downloading anything and the weights are checked
by loading them into it; without, the files are read directly.

Every size is read from the tensors' shapes (the few that shapes cannot tell, such as attention heads
and ngroups, are the release's values and can be overridden), and by default must equal the released
3.6B architecture (--any-size lifts that for other sizes). A key that is missing, has another shape
or is not known stops the conversion with its name.
"""
import argparse
import json
import math
import os
import pickle
import re
import shutil
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_random_package as pkg  # noqa: E402  (the package layout and the streaming writer)

SECTIONS = ("llm_backbone", "mlp", "bidirectional_mamba", "projector")
# Facts of the release that tensor shapes do not carry (mamba2-2.7b config, timm model definitions,
# prismatic's resize-naive at 384 px).
RELEASE = pkg.PRESETS["full"]()
RELEASE_MIXER = {k: RELEASE["llm_backbone"][k] for k in ("chunk_size", "norm_eps")}
ROLES = {  # role -> (config name, release encoder entry)
    "dino": ("dino_featurizer", RELEASE["vision_backbone"]["encoders"][0]),
    "siglip": ("siglip_featurizer", RELEASE["vision_backbone"]["encoders"][1]),
}
# Parts of a timm ViT the package's model never runs: the final norm and the pooling/classifier heads.
UNUSED_VIT_PREFIXES = ("norm.", "fc_norm.", "attn_pool.", "head.")


class ConversionError(Exception):
    pass


def _torch():
    import torch
    return torch


# ----------------------------------------------------------------------------------------------
# Reading

def torch_load_tensors(path):
    """torch.load restricted to tensors and plain containers: never runs code from the file."""
    torch = _torch()
    kwargs = dict(map_location="cpu", weights_only=True)
    try:
        import inspect
        # Memory-map where the installed torch can, so a 12 GB checkpoint is not read into memory.
        if "mmap" in inspect.signature(torch.load).parameters:
            kwargs["mmap"] = True
    except (TypeError, ValueError):
        pass
    try:
        try:
            return torch.load(path, **kwargs)
        except RuntimeError as e:
            if kwargs.pop("mmap", None) and "mmap" in str(e):  # an old non-zip file cannot be mapped
                return torch.load(path, **kwargs)
            raise
    except pickle.UnpicklingError as e:
        # torch's message suggests loading without weights_only; only the reason is worth showing.
        why = str(e)
        why = why.split("WeightsUnpickler error:")[-1].strip() if "WeightsUnpickler error:" in why else why
        raise ConversionError(f"{path}: refused: it holds objects other than tensors and containers, which a "
                              f"weights-only load does not run ({why.splitlines()[0] if why else 'no detail'})")
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file")
    except RuntimeError as e:
        # Some torch versions report a weights-only refusal as RuntimeError; a damaged file lands here too.
        raise ConversionError(f"{path}: cannot be loaded (tensors and containers only): {str(e).splitlines()[0]}")


ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
             "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """{name: float32 torch tensor} from one .safetensors file, with numpy only (no safetensors package)."""
    torch = _torch()
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ConversionError(f"{path}: not a safetensors file")
        n = struct.unpack("<Q", raw)[0]
        if n > 100 * 2 ** 20:
            raise ConversionError(f"{path}: not a safetensors file (header of {n} bytes)")
        header = json.loads(f.read(n))
    base = 8 + n
    out = {}
    data = np.memmap(path, dtype=np.uint8, mode="r")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in ST_DTYPES:
            raise ConversionError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[base + a: base + b], dtype=ST_DTYPES[info["dtype"]])
        if info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = torch.from_numpy(np.array(arr, dtype=np.float32).reshape(info["shape"]))
    return out


def read_state_dict(path):
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    obj = torch_load_tensors(path)
    # Training scripts often wrap the state dict once.
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and set(obj) == {wrapper} and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return dict(obj)


def timm_facts(name, state, path):
    """Builds timm model `name` (no download), checks `state` loads into it, returns the state as the
    model holds it plus what only the model knows (heads, eps, which prefix tokens have positions)."""
    try:
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn
    except ImportError:
        raise ConversionError(f"--*-timm {name}: timm is not installed (give the weights without a model name)")
    model = timm.create_model(name, pretrained=False)
    if "mask_token" in state or "register_tokens" in state:
        state = checkpoint_filter_fn(state, model)  # DINOv2's own key names -> timm's
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ConversionError(f"{path}: does not load into timm {name}: {e}")
    attn = model.blocks[0].attn
    return dict(model.state_dict()), {
        "heads": attn.num_heads,
        "norm_eps": float(model.blocks[0].norm1.eps),
        "pos_prefix": 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1),
    }


# ----------------------------------------------------------------------------------------------
# Shapes -> sizes

def need(section, store, key):
    if key not in store:
        raise ConversionError(f"{section}: missing key '{key}'")
    return store[key]


def count_indexed(store, prefix, section, probe):
    """Number of `prefix{i}.` entries; the indices must run 0..n-1 without gaps."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in store for m in [pat.match(k)] if m}
    if not idx:
        raise ConversionError(f"{section}: missing key '{prefix}0.{probe}'")
    for i in range(max(idx) + 1):
        if i not in idx:
            raise ConversionError(f"{section}: missing key '{prefix}{i}.{probe}'")
    return max(idx) + 1


def exact_div(a, b, what):
    if b <= 0 or a % b:
        raise ConversionError(f"{what}: {a} is not a multiple of {b}")
    return a // b


def mixer_from_shapes(section, store, prefix, d_model, ngroups):
    h = need(section, store, prefix + "A_log").shape
    d_inner = need(section, store, prefix + "norm.weight").shape[0]
    conv = need(section, store, prefix + "conv1d.weight").shape
    if len(h) != 1 or len(conv) != 3:
        raise ConversionError(f"{section}: '{prefix}A_log' or '{prefix}conv1d.weight' has an unexpected rank")
    nheads, conv_dim, d_conv = h[0], conv[0], conv[2]
    return {
        "d_state": exact_div(conv_dim - d_inner, 2 * ngroups, f"{section}: B and C width"),
        "headdim": exact_div(d_inner, nheads, f"{section}: inner width over heads"),
        "ngroups": ngroups,
        "expand": exact_div(d_inner, d_model, f"{section}: inner width over model width"),
        "d_conv": d_conv,
    }


def is_square(n):
    r = int(math.isqrt(n)) if n > 0 else 0
    return r if r * r == n and r > 0 else 0


def resample_pos_embed(pos, grid):
    """pos [1, g0*g0, C] -> [1, grid*grid, C] as timm resizes position embeddings when a model is
    built at another image size (resample_abs_pos_embed): bicubic, antialias, align_corners False,
    computed in float32 on the [1, C, g0, g0] image."""
    torch = _torch()
    g0 = is_square(pos.shape[1])
    if g0 == grid:
        return pos
    c = pos.shape[2]
    img = pos.float().reshape(1, g0, g0, c).permute(0, 3, 1, 2).contiguous()
    img = torch.nn.functional.interpolate(img, size=(grid, grid), mode="bicubic", antialias=True,
                                          align_corners=False)
    return img.permute(0, 2, 3, 1).reshape(1, grid * grid, c).contiguous()


def convert_vit(role, path, state, facts, image_size, feature_layer, heads, keep_unused, log):
    """The encoder's config entry and its tensors under their timm names, pos_embed at the package grid."""
    name, release = ROLES[role]
    where = f"{role} weights {path}"
    state = dict(state)
    # DINOv2's own release names (timm's conversion does the same renaming).
    if "register_tokens" in state and "reg_token" not in state:
        state["reg_token"] = state.pop("register_tokens")
    state.pop("mask_token", None)  # used only by DINOv2's masked training

    w = need(where, state, "patch_embed.proj.weight")
    if w.dim() != 4 or w.shape[1] != 3 or w.shape[2] != w.shape[3]:
        raise ConversionError(f"{where}: patch_embed.proj.weight has shape {list(w.shape)}, expected [dim, 3, p, p]")
    dim, patch = w.shape[0], w.shape[2]
    depth = count_indexed(state, "blocks.", where, "norm1.weight")
    has_cls = "cls_token" in state
    regs = state["reg_token"].shape[1] if "reg_token" in state else 0
    layer_scale = "blocks.0.ls1.gamma" in state
    mlp_hidden = need(where, state, "blocks.0.mlp.fc1.weight").shape[0]
    if facts.get("heads"):
        heads = facts["heads"]
    if feature_layer is None:
        feature_layer = depth - 2  # the release reads the second-to-last block (prismatic's rule)
    if not 0 <= feature_layer < depth:
        raise ConversionError(f"{where}: feature layer {feature_layer} is not one of its {depth} blocks")
    grid = image_size // patch

    # Position embedding: timm stores one row per patch, optionally preceded by rows for the prefix
    # tokens. The package has patch rows only; a prefix token's row is constant, so adding it to the
    # token itself is exact (it is what timm does when it converts DINOv2 with registers).
    pos = need(where, state, "pos_embed")
    if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[2] != dim:
        raise ConversionError(f"{where}: pos_embed has shape {list(pos.shape)}, expected [1, N, {dim}]")
    n = pos.shape[1]
    if facts.get("pos_prefix") is not None:
        candidates = [facts["pos_prefix"]]
    else:
        candidates = [0] + ([1] if has_cls else []) + ([int(has_cls) + regs] if regs else [])
    prefix = next((k for k in candidates if k < n and is_square(n - k)), None)
    if prefix is None:
        raise ConversionError(f"{where}: pos_embed has {n} rows, which is no square grid after "
                              f"{candidates} prefix rows")
    if prefix > int(has_cls) + regs:
        raise ConversionError(f"{where}: pos_embed has {prefix} prefix rows but only {int(has_cls) + regs} prefix tokens")
    if prefix:
        rows = pos[:, :prefix].float()
        r = 0
        if has_cls:
            state["cls_token"] = state["cls_token"].float() + rows[:, r:r + 1]
            r += 1
        if r < prefix:
            state["reg_token"] = state["reg_token"].float().clone()
            state["reg_token"][:, : prefix - r] += rows[:, r:prefix]
        log(f"  {role}: {prefix} prefix position row(s) folded into the prefix token(s)")
    stored_grid = is_square(n - prefix)
    state["pos_embed"] = resample_pos_embed(pos[:, prefix:], grid)
    if stored_grid != grid:
        log(f"  {role}: pos_embed resampled {stored_grid}x{stored_grid} -> {grid}x{grid} (bicubic, antialias)")

    entry = {"name": name, "patch_size": patch, "dim": dim, "heads": heads, "mlp_hidden": mlp_hidden,
             "class_token": has_cls, "register_tokens": regs, "layer_scale": layer_scale,
             "feature_layer": feature_layer, "norm_eps": facts.get("norm_eps", release["norm_eps"]),
             "mean": list(release["mean"]), "std": list(release["std"]), "depth": depth}
    if dim % heads:
        raise ConversionError(f"{where}: width {dim} is not a multiple of {heads} heads")
    # Tensors past the feature layer, the final norm and heads: never run, kept only on request.
    extra = []
    needed = {k[len("vision_backbone." + name + "."):] for k, _, _ in
              pkg.vit_layout({"image": {"size": image_size}}, entry, feature_layer + 1, False)}
    for k in state:
        if k in needed:
            continue
        m = re.match(r"blocks\.(\d+)\.", k)
        if (m and int(m.group(1)) > feature_layer) or k.startswith(UNUSED_VIT_PREFIXES):
            if keep_unused:
                extra.append(k)
            continue
        raise ConversionError(f"{where}: unexpected key '{k}' (not part of a timm ViT block layout this "
                              f"package format describes)")
    return entry, state, extra


# ----------------------------------------------------------------------------------------------

def tokenizer_facts(path, eos_override):
    with open(path, encoding="utf-8") as f:
        tok = json.load(f)
    ids = set(tok.get("model", {}).get("vocab", {}).values()) | {t["id"] for t in tok.get("added_tokens", [])}
    eos = eos_override
    if eos is None:
        eos = next((t["id"] for t in tok.get("added_tokens", []) if t["content"] == "<|endoftext|>"), None)
    if eos is None:
        eos = tok.get("model", {}).get("vocab", {}).get("<|endoftext|>")
    if eos is None:
        raise ConversionError(f"{path}: no <|endoftext|> token (give --eos-token-id)")
    return eos, (max(ids) + 1 if ids else 0)


def release_differences(cfg):
    diffs = []

    def cmp(where, got, want, keys):
        for k in keys:
            if got.get(k) != want.get(k):
                diffs.append(f"{where}.{k} = {got.get(k)} (release: {want.get(k)})")
    mix = ("d_state", "headdim", "ngroups", "expand", "d_conv")
    cmp("llm_backbone", cfg["llm_backbone"], RELEASE["llm_backbone"], ("d_model", "n_layer", "vocab_size") + mix)
    for i, e in enumerate(cfg["vision_backbone"]["encoders"]):
        cmp(e["name"], e, RELEASE["vision_backbone"]["encoders"][i],
            ("patch_size", "dim", "heads", "mlp_hidden", "class_token", "register_tokens", "layer_scale",
             "feature_layer", "depth"))
    cmp("image", cfg["image"], RELEASE["image"], ("size",))
    cmp("mlp", cfg["mlp"], RELEASE["mlp"], ("out_dim",))
    cmp("bidirectional_mamba", cfg["bidirectional_mamba"], RELEASE["bidirectional_mamba"], ("n_layer",) + mix)
    cmp("projector", cfg["projector"], RELEASE["projector"], ("hidden_dim",))
    return diffs


def convert(a, log=print):
    torch = _torch()
    t0 = time.time()
    if os.path.isdir(a.out) and os.listdir(a.out) and not a.overwrite:
        raise ConversionError(f"{a.out} is not empty (--overwrite replaces the package files in it)")

    log(f"reading {a.checkpoint}")
    ckpt = torch_load_tensors(a.checkpoint)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ConversionError(f"{a.checkpoint}: missing key 'model' (expected {{'model': {{{', '.join(SECTIONS)}}}}})")
    model = ckpt["model"]
    for s in SECTIONS:
        if not isinstance(model.get(s), dict):
            raise ConversionError(f"{a.checkpoint}: missing key 'model.{s}'")
    unknown = [s for s in model if s not in SECTIONS]
    if unknown:
        raise ConversionError(f"{a.checkpoint}: unexpected key 'model.{unknown[0]}'")
    sec = {s: dict(model[s]) for s in SECTIONS}
    for s in SECTIONS:
        for k, v in sec[s].items():
            if not torch.is_tensor(v):
                raise ConversionError(f"{a.checkpoint}: '{s}.{k}' is not a tensor")

    # Language model.
    llm = sec["llm_backbone"]
    emb = need("llm_backbone", llm, "backbone.embedding.weight")
    vocab, d_model = emb.shape
    n_layer = count_indexed(llm, "backbone.layers.", "llm_backbone", "norm.weight")
    llm_cfg = {"d_model": d_model, "n_layer": n_layer, "vocab_size": vocab}
    llm_cfg.update(mixer_from_shapes("llm_backbone", llm, "backbone.layers.0.mixer.", d_model, a.ngroups))
    llm_cfg.update(chunk_size=a.chunk_size, norm_eps=RELEASE_MIXER["norm_eps"],
                   max_sequence_length=a.max_sequence_length)
    untied = False
    if "lm_head.weight" in llm:
        head = llm.pop("lm_head.weight")
        untied = head.shape != emb.shape or not torch.equal(head, emb)
        if untied:
            llm["lm_head.weight"] = head
        log("  lm_head: " + ("differs from the embedding, kept" if untied else "tied to the embedding, not stored"))

    # Vision encoders.
    encoders, vit_states, vit_extra = [], {}, {}
    for role in ("dino", "siglip"):
        path, timm_name = getattr(a, role), getattr(a, role + "_timm")
        log(f"reading {path}")
        state = read_state_dict(path)
        facts = {}
        if timm_name:
            state, facts = timm_facts(timm_name, state, path)
        entry, state, extra = convert_vit(role, path, state, facts, a.image_size, getattr(a, role + "_feature_layer"),
                                          getattr(a, role + "_heads"), a.keep_unused, log)
        encoders.append(entry)
        vit_states[entry["name"]] = state
        vit_extra[entry["name"]] = extra
    grids = {a.image_size // e["patch_size"] for e in encoders}
    if len(grids) != 1:
        raise ConversionError(f"the encoders give different patch grids {sorted(grids)} at {a.image_size} px")

    # Connector.
    mlp_w = need("mlp", sec["mlp"], "0.weight")
    width, vis_dim = mlp_w.shape
    if vis_dim != sum(e["dim"] for e in encoders):
        raise ConversionError(f"mlp: '0.weight' takes {vis_dim} channels but the encoders give "
                              f"{' + '.join(str(e['dim']) for e in encoders)}")
    msc = sec["bidirectional_mamba"]
    msc_cfg = {"n_layer": count_indexed(msc, "layers.", "bidirectional_mamba", "mixer.in_proj.weight")}
    msc_cfg.update(mixer_from_shapes("bidirectional_mamba", msc, "layers.0.mixer.", width, a.ngroups))
    msc_cfg.update(chunk_size=a.chunk_size, norm_eps=RELEASE_MIXER["norm_eps"],
                   layer_norm_eps=RELEASE["bidirectional_mamba"]["layer_norm_eps"])
    hidden = need("projector", sec["projector"], "projector.0.weight").shape[0]

    eos, n_ids = tokenizer_facts(a.tokenizer, a.eos_token_id)
    if n_ids > vocab:
        raise ConversionError(f"{a.tokenizer}: has ids up to {n_ids - 1} but the embedding has {vocab} rows")

    cfg = {
        "format": "mlmamba-package", "format_version": 1, "name": a.name,
        "llm_backbone": llm_cfg,
        "tokenizer": {"file": "tokenizer.json", "eos_token_id": eos},
        "prompt": {"template": "zephyr"},
        "generation": {"max_new_tokens": a.max_new_tokens},
        "image": {"size": a.image_size, "resize": "resize-naive"},
        "vision_backbone": {"encoders": encoders},
        "mlp": {"out_dim": width},
        "bidirectional_mamba": msc_cfg,
        "projector": {"hidden_dim": hidden},
    }
    try:
        pkg.check_spec(cfg)
    except ValueError as e:
        raise ConversionError(str(e))
    diffs = release_differences(cfg)
    if diffs and not a.any_size:
        raise ConversionError("sizes differ from the released architecture (--any-size converts anyway): "
                              + "; ".join(diffs))

    # Every tensor the package needs, from its source, with its shape checked.
    layout = pkg.package_layout(cfg, lm_head=untied)
    entries, used = [], {s: set() for s in SECTIONS}
    for name, shape, _ in layout:
        section, key = name.split(".", 1)
        if section == "vision_backbone":
            enc, key = key.split(".", 1)
            src, where = vit_states[enc], f"{enc} weights"
        else:
            src, where = sec[section], section
            used[section].add(key)
        t = need(where, src, key)
        if tuple(t.shape) != tuple(shape):
            raise ConversionError(f"{where}: '{key}' has shape {list(t.shape)}, expected {list(shape)}")
        entries.append((name, tuple(shape), _producer(t)))
    for s in SECTIONS:
        left = [k for k in sec[s] if k not in used[s]]
        if left:
            raise ConversionError(f"{s}: unexpected key '{left[0]}' (not part of the released layout)")
    for enc, keys in vit_extra.items():
        for k in keys:
            t = vit_states[enc][k]
            entries.append((f"vision_backbone.{enc}.{k}", tuple(t.shape), _producer(t)))

    os.makedirs(a.out, exist_ok=True)
    if os.path.exists(os.path.join(a.out, "config.json")):
        os.remove(os.path.join(a.out, "config.json"))
    params = pkg.count_params(entries)
    log(f"writing {len(entries)} tensors, {params:,} parameters, {a.dtype} to {a.out}")
    files = pkg.write_weights(a.out, entries, a.dtype, pkg.parse_size(a.shard_size), log=log)
    shutil.copy(a.tokenizer, os.path.join(a.out, "tokenizer.json"))
    with open(os.path.join(a.out, "config.json"), "w") as f:  # last: marks the folder complete
        f.write(pkg.config_json(cfg))
    size = sum(os.path.getsize(os.path.join(a.out, f)) for f in files)
    log(f"wrote {a.out}: {', '.join(files)}; {size:,} bytes in {time.time() - t0:.1f} s")
    return cfg


def _producer(t):
    def produce():
        return pkg.row_chunks(t.detach().float().numpy())
    return produce


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="the release's latest-checkpoint.pt")
    ap.add_argument("--dino", required=True, help="DINOv2 weights (timm state dict: .safetensors/.bin/.pth)")
    ap.add_argument("--siglip", required=True, help="SigLIP weights (timm state dict: .safetensors/.bin/.pth)")
    ap.add_argument("--dino-timm", help="timm model name to check the DINOv2 weights against (needs timm)")
    ap.add_argument("--siglip-timm", help="timm model name to check the SigLIP weights against (needs timm)")
    ap.add_argument("--tokenizer", required=True, help="Hugging Face tokenizer.json to copy into the package")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["bf16", "f16", "f32"], default="bf16")
    ap.add_argument("--shard-size", default=str(pkg.DEFAULT_SHARD_BYTES),
                    help="largest shard: bytes, or 4GB (10^9) / 4GiB (2^30) style; default 4GB")
    ap.add_argument("--keep-unused", action="store_true",
                    help="also store ViT blocks past the feature layer, final norms and heads")
    ap.add_argument("--any-size", action="store_true", help="convert sizes other than the release's")
    ap.add_argument("--name", default="ML-Mamba 3B")
    ap.add_argument("--image-size", type=int, default=RELEASE["image"]["size"])
    ap.add_argument("--max-sequence-length", type=int, default=RELEASE["llm_backbone"]["max_sequence_length"])
    ap.add_argument("--max-new-tokens", type=int, default=RELEASE["generation"]["max_new_tokens"])
    ap.add_argument("--chunk-size", type=int, default=RELEASE_MIXER["chunk_size"])
    ap.add_argument("--ngroups", type=int, default=RELEASE["llm_backbone"]["ngroups"],
                    help="B/C groups of the mixers (shapes show only ngroups x d_state)")
    ap.add_argument("--dino-heads", type=int, default=ROLES["dino"][1]["heads"])
    ap.add_argument("--siglip-heads", type=int, default=ROLES["siglip"][1]["heads"])
    ap.add_argument("--dino-feature-layer", type=int, help="default: the second-to-last block")
    ap.add_argument("--siglip-feature-layer", type=int, help="default: the second-to-last block")
    ap.add_argument("--eos-token-id", type=int, help="default: the tokenizer's <|endoftext|>")
    ap.add_argument("--overwrite", action="store_true", help="replace the package files in a non-empty --out")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    try:
        convert(a)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
