#!/usr/bin/env python3
"""Checks and times the CUDA backend module's vision half (API 3: vision_create / vision_encode)
through its C ABI (ctypes).

Correctness, on random models of several shapes (two encoders, one with class token + registers +
LayerScale and one without prefix tokens; odd grids such as 7x7 that are not a multiple of the MSC
chunk; pictures whose side is not a multiple of the patch; MSC ngroups 1 and 2; head dims 16 to 72;
f32 / f16 / bf16 host weights), all on the same weights with the matrices rounded to bf16 as the
module keeps them:
  - vision_encode's rows against tools/train/model.py in float32 (the package's own PyTorch
    implementation): the bf16-sized bound;
  - the same against this file's reference, which follows model.py but rounds every product's
    input to bf16 where the module does: a tight bound that catches indexing errors;
  - this file's reference without rounding against model.py (the reference itself is right);
  - two encodes of the same picture give identical rows; a second picture gives other rows;
  - a picture of the wrong size, a missing tensor and an impossible allocation give error codes,
    and the vision object stays usable after the first.
Every output buffer is filled with NaN before each call and the module poisons its scratch with
NaN (desc.poison): a value nothing wrote shows as NaN, and NaN never passes a check.

Timing (CUDA events inside the module): one 384 px picture through DINOv2-L/14 reg4 (to block 22)
+ SigLIP SO400M/14 (to block 25) -> 27x27 grid, mlp 2176 -> 2560, two MSC layers of the 2.7B
mixer's sizes, projector 2560 -> 10240 -> 2560 -> 2560, with random weights.

  python3 tools/cuda/check_vision.py --module build/lib/libmlmamba-cuda.so --out DIR
  python3 tools/cuda/check_vision.py --self-test --out DIR   # no GPU: the harness against a stand-in

Writes DIR/vision_check.json and DIR/vision_check.md; exits 1 if any check failed.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import statistics
import sys
import traceback

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "train"))
import check_lm as lmc  # noqa: E402  (the ABI's shared structures)
import model as M  # noqa: E402

API_VERSION = 3
OK, ERR_INVALID, ERR_OOM = 0, 1, 2
MAX_ENCODERS = 4

# Tolerances on ||gpu - ref|| / ||ref||.
# Against model.py in fp32: the module rounds the input of every product to bf16 (about 2^-9
# relative each) through two ViTs, the connector and the projector.
TOL_BF16 = 3e-2
# Against the reference that rounds the same activations: fp32 arithmetic in another order, and
# the bf16 roundings it flips.
TOL_MATCHED = 5e-3
# This file's reference (no rounding) against model.py, both fp32.
TOL_REF = 1e-4

c_int, c_float, c_size_t = ctypes.c_int, ctypes.c_float, ctypes.c_size_t
c_char_p, c_void_p, POINTER, CFUNCTYPE = ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER, ctypes.CFUNCTYPE
E = lmc.E


class VitDesc(ctypes.Structure):
    _fields_ = [("name", c_char_p), ("patch_size", c_int), ("dim", c_int), ("heads", c_int),
                ("mlp_hidden", c_int), ("class_token", c_int), ("register_tokens", c_int),
                ("layer_scale", c_int), ("feature_layer", c_int), ("norm_eps", c_float),
                ("mean", c_float * 3), ("std", c_float * 3)]


class VisionDesc(ctypes.Structure):
    _fields_ = [("device", c_int), ("image_size", c_int), ("n_encoders", c_int),
                ("encoders", VitDesc * MAX_ENCODERS), ("mlp_out", c_int), ("msc_layers", c_int),
                ("msc_d_inner", c_int), ("msc_d_state", c_int), ("msc_headdim", c_int),
                ("msc_nheads", c_int), ("msc_ngroups", c_int), ("msc_d_conv", c_int),
                ("msc_chunk_size", c_int), ("msc_norm_group_size", c_int),
                ("msc_mixer_norm_eps", c_float), ("msc_conv_bias", c_int),
                ("msc_layer_norm_eps", c_float), ("projector_hidden", c_int), ("llm_d_model", c_int),
                ("poison", c_int), ("tensors", POINTER(lmc.Tensor)), ("n_tensors", c_int)]


class VisionInfo(ctypes.Structure):
    _fields_ = [("weight_bytes", c_size_t), ("scratch_bytes", c_size_t), ("rows", c_int), ("width", c_int)]


class BackendV3(ctypes.Structure):
    _fields_ = lmc.Backend._fields_ + [
        ("vision_create", CFUNCTYPE(c_int, POINTER(VisionDesc), POINTER(c_void_p), *E)),
        ("vision_free", CFUNCTYPE(None, c_void_p)),
        ("vision_info", CFUNCTYPE(c_int, c_void_p, POINTER(VisionInfo))),
        ("vision_encode", CFUNCTYPE(c_int, c_void_p, POINTER(ctypes.c_uint8), c_int, lmc.P_float, c_size_t, *E)),
        ("vision_last_elapsed_ms", CFUNCTYPE(c_int, c_void_p, POINTER(c_float))),
    ]


ModuleError = lmc.ModuleError

# --------------------------------------------------------------------------------------------------
# Configurations (model.py's config dict form)
# --------------------------------------------------------------------------------------------------


def enc(name, patch, dim, heads, mlp, cls, regs, ls, layer, dino=True):
    mean, std = (M.IMAGENET_MEAN, M.IMAGENET_STD) if dino else (M.SIGLIP_MEAN, M.SIGLIP_STD)
    return dict(name=name, patch_size=patch, dim=dim, heads=heads, mlp_hidden=mlp, class_token=cls,
                register_tokens=regs, layer_scale=ls, feature_layer=layer, norm_eps=1e-6,
                mean=list(mean), std=list(std))


def vcfg(name, size, encoders, width, msc, ph, llm, dtype):
    return dict(name=name, size=size, encoders=encoders, width=width, msc=msc, projector_hidden=ph,
                llm_d_model=llm, dtype=dtype)


def msc_cfg(n_layer, expand, headdim, d_state, ngroups, chunk, d_conv=4):
    return dict(n_layer=n_layer, expand=expand, headdim=headdim, d_state=d_state, ngroups=ngroups,
                chunk_size=chunk, d_conv=d_conv, norm_eps=1e-5, layer_norm_eps=1e-5)


def correctness_configs():
    return [
        # 30 px / patch 4: grid 7 (49 rows, chunk 16: a partial last chunk), 2 pixels never seen.
        vcfg("tiny-g7-ng1", 30,
             [enc("dino", 4, 64, 4, 128, True, 4, True, 1), enc("siglip", 4, 96, 3, 160, False, 0, False, 2, False)],
             64, msc_cfg(2, 2, 32, 16, 1, 16), 96, 80, torch.float32),
        # grid 7 again, ngroups 2, chunk 8, head dims 64 and 72 (not a multiple of 32), bf16 weights.
        vcfg("tiny-g7-ng2", 42,
             [enc("dino", 6, 128, 2, 192, True, 4, True, 0), enc("siglip", 6, 144, 2, 200, False, 0, False, 1, False)],
             96, msc_cfg(2, 2, 48, 32, 2, 8), 128, 64, torch.bfloat16),
        # One encoder, grid 16 (256 rows: several key tiles and query tiles), chunk 64, f16 weights.
        vcfg("one-encoder-g16", 64, [enc("siglip", 4, 96, 6, 192, False, 0, False, 1, False)],
             64, msc_cfg(1, 2, 16, 16, 2, 64), 64, 48, torch.float16),
    ]


def full_config():
    return vcfg("full-384", 384,
                [enc("dino", 14, 1024, 16, 4096, True, 4, True, 22),
                 enc("siglip", 14, 1152, 16, 4304, False, 0, False, 25, False)],
                2560, msc_cfg(2, 2, 64, 128, 1, 256), 10240, 2560, torch.bfloat16)


def grid_of(c):
    return c["size"] // c["encoders"][0]["patch_size"]


# --------------------------------------------------------------------------------------------------
# model.py's vision half, with the package's tensor names
# --------------------------------------------------------------------------------------------------


class VisionHalf(nn.Module):
    def __init__(self, c):
        super().__init__()
        g = grid_of(c)
        self.c = c
        self.vision_backbone = nn.ModuleDict({e["name"]: M.ViT(e, g) for e in c["encoders"]})
        self.mlp = nn.Sequential(nn.Linear(sum(e["dim"] for e in c["encoders"]), c["width"]), nn.GELU())
        self.bidirectional_mamba = M.MSC(c["width"], dict(c["msc"]))
        self.projector = M.Projector(c["width"], c["projector_hidden"], c["llm_d_model"])

    def forward(self, pix):
        feats = [self.vision_backbone[e["name"]](pix) for e in self.c["encoders"]]
        return self.projector(self.bidirectional_mamba(self.mlp(torch.cat(feats, dim=-1))))


def package_shapes(c):
    """Every tensor name and shape of the vision half, from the sizes alone (no model built)."""
    g = grid_of(c)
    out = {}
    for e in c["encoders"]:
        p = f"vision_backbone.{e['name']}."
        D, P, H = e["dim"], e["patch_size"], e["mlp_hidden"]
        out[p + "pos_embed"] = (1, g * g, D)
        if e["class_token"]:
            out[p + "cls_token"] = (1, 1, D)
        if e["register_tokens"]:
            out[p + "reg_token"] = (1, e["register_tokens"], D)
        out[p + "patch_embed.proj.weight"] = (D, 3, P, P)
        out[p + "patch_embed.proj.bias"] = (D,)
        for j in range(e["feature_layer"] + 1):
            b = f"{p}blocks.{j}."
            for n in ("norm1", "norm2"):
                out[b + n + ".weight"] = out[b + n + ".bias"] = (D,)
            out[b + "attn.qkv.weight"], out[b + "attn.qkv.bias"] = (3 * D, D), (3 * D,)
            out[b + "attn.proj.weight"], out[b + "attn.proj.bias"] = (D, D), (D,)
            out[b + "mlp.fc1.weight"], out[b + "mlp.fc1.bias"] = (H, D), (H,)
            out[b + "mlp.fc2.weight"], out[b + "mlp.fc2.bias"] = (D, H), (D,)
            if e["layer_scale"]:
                out[b + "ls1.gamma"] = out[b + "ls2.gamma"] = (D,)
    Fd, W = sum(e["dim"] for e in c["encoders"]), c["width"]
    out["mlp.0.weight"], out["mlp.0.bias"] = (W, Fd), (W,)
    ms = c["msc"]
    I = ms["expand"] * W
    nh, GN = I // ms["headdim"], ms["ngroups"] * ms["d_state"]
    CD = I + 2 * GN
    for l in range(ms["n_layer"]):
        p = f"bidirectional_mamba.layers.{l}."
        x = p + "mixer."
        out[x + "in_proj.weight"] = (2 * I + 2 * GN + nh, W)
        for sfx in ("", "_b"):
            out[x + "conv1d" + sfx + ".weight"], out[x + "conv1d" + sfx + ".bias"] = (CD, 1, ms["d_conv"]), (CD,)
            out[x + "dt_bias" + sfx] = out[x + "A_log" + sfx] = out[x + "D" + sfx] = (nh,)
        out[x + "norm.weight"] = (I,)
        out[x + "out_proj.weight"] = (W, I)
        out[p + "norm.weight"] = out[p + "norm.bias"] = (W,)
        for w in ("w1", "w2", "w3"):
            out[f"{p}mlp.{w}.weight"], out[f"{p}mlp.{w}.bias"] = (W, W), (W,)
    out["bidirectional_mamba.norm_f.weight"] = out["bidirectional_mamba.norm_f.bias"] = (W,)
    PH, L = c["projector_hidden"], c["llm_d_model"]
    out["projector.projector.0.weight"], out["projector.projector.0.bias"] = (PH, W), (PH,)
    out["projector.projector.2.weight"], out["projector.projector.2.bias"] = (L, PH), (L,)
    out["projector.projector.4.weight"], out["projector.projector.4.bias"] = (L, L), (L,)
    return out


def bf16_kept(name, t):
    """The tensors the module keeps in bf16: every matrix (2-D and up) except pos_embed, the prefix
    tokens and the conv1d weights."""
    if t.dim() < 2:
        return False
    return not any(k in name for k in ("pos_embed", "cls_token", "reg_token", "conv1d"))


def random_model(c, seed):
    torch.manual_seed(seed)
    m = VisionHalf(c).float()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "A_log" in name or "dt_bias" in name:
                continue  # model.py's initialisation is already the right kind of random
            if name.endswith(".D") or name.endswith(".D_b"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "conv1d" in name:
                p.copy_(0.3 * torch.randn_like(p))
            elif "gamma" in name:
                p.copy_(0.3 + 0.1 * torch.randn_like(p))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.dim() >= 2 and "pos_embed" not in name and "token" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) * fan_in ** -0.5)
            else:
                p.copy_(0.3 * torch.randn_like(p))
        for name, p in m.named_parameters():
            if bf16_kept(name, p):
                p.copy_(p.bfloat16().float())
    return m


# --------------------------------------------------------------------------------------------------
# The matched reference: model.py's parts, with each product's input rounded to bf16 where the
# module rounds it (round_acts), fp32 elsewhere.
# --------------------------------------------------------------------------------------------------


def reference(m, pix, round_acts):
    r = (lambda t: t.bfloat16().float()) if round_acts else (lambda t: t)

    def lin(x, mod):
        y = r(x) @ mod.weight.t()
        return y + mod.bias if mod.bias is not None else y

    feats = []
    for e in m.c["encoders"]:
        vit = m.vision_backbone[e["name"]]
        x = r((pix - vit.mean) / vit.std)
        x = F.conv2d(x, vit.patch_embed.proj.weight, vit.patch_embed.proj.bias, stride=e["patch_size"])
        x = x.flatten(2).transpose(1, 2) + vit.pos_embed
        B = x.shape[0]
        prefix = []
        if e["class_token"]:
            prefix.append(vit.cls_token.expand(B, -1, -1))
        if e["register_tokens"]:
            prefix.append(vit.reg_token.expand(B, -1, -1))
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
        for blk in vit.blocks:
            T, D, H = x.shape[1], e["dim"], e["heads"]
            qkv = lin(blk.norm1(x), blk.attn.qkv).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
            att = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) / math.sqrt(D // H), dim=-1)
            o = (att @ qkv[2]).transpose(1, 2).reshape(B, T, D)
            a = lin(o, blk.attn.proj)
            x = x + (blk.ls1(a) if blk.ls1 is not None else a)
            h = F.gelu(lin(blk.norm2(x), blk.mlp.fc1))
            mm = lin(h, blk.mlp.fc2)
            x = x + (blk.ls2(mm) if blk.ls2 is not None else mm)
        feats.append(x[:, vit.n_prefix:])
    h = F.gelu(lin(torch.cat(feats, dim=-1), m.mlp[0]))
    for layer in m.bidirectional_mamba.layers:
        mx = layer.mixer
        zxbcdt = lin(h, mx.in_proj)
        di, cd = mx.d_inner, mx.conv_dim
        z, xbc, dt_raw = zxbcdt[..., :di], zxbcdt[..., di:di + cd], zxbcdt[..., di + cd:]
        yf, _ = mx._ssm(mx._conv(xbc, mx.conv1d), dt_raw, mx.dt_bias, mx.A_log, mx.D)
        yb, _ = mx._ssm(mx._conv(xbc.flip(1), mx.conv1d_b), dt_raw.flip(1), mx.dt_bias_b, mx.A_log_b, mx.D_b)
        g = (mx.norm(yf, z) + mx.norm(yb.flip(1), z)) / 2
        h = h + lin(g, mx.out_proj)
        t = layer.norm(h)
        a = F.silu(lin(t, layer.mlp.w1)) * lin(t, layer.mlp.w2)
        h = h + lin(a, layer.mlp.w3)
    t = m.bidirectional_mamba.norm_f(h)
    p = m.projector.projector
    t = F.gelu(lin(t, p[0]))
    t = F.gelu(lin(t, p[2]))
    return lin(t, p[4])


# --------------------------------------------------------------------------------------------------
# The module through ctypes, and a stand-in for --self-test
# --------------------------------------------------------------------------------------------------


def package_tensors(m, dtype):
    return {k: v.detach().to(dtype).contiguous() for k, v in m.state_dict().items()}


def make_desc(c, tensors, poison=True):
    arr = (lmc.Tensor * max(1, len(tensors)))()
    keep = []
    for i, (name, t) in enumerate(tensors.items()):
        t = t.contiguous()
        b = name.encode()
        keep += [t, b]
        arr[i].name = b
        arr[i].dtype = lmc._TORCH_DT[t.dtype]
        arr[i].ndim = t.dim()
        for k, s in enumerate(t.shape):
            arr[i].shape[k] = s
        arr[i].data = t.data_ptr()
    d = VisionDesc()
    d.device = 0
    d.image_size = c["size"]
    d.n_encoders = len(c["encoders"])
    for i, e in enumerate(c["encoders"]):
        v = d.encoders[i]
        b = e["name"].encode()
        keep.append(b)
        v.name = b
        v.patch_size, v.dim, v.heads, v.mlp_hidden = e["patch_size"], e["dim"], e["heads"], e["mlp_hidden"]
        v.class_token, v.register_tokens = int(e["class_token"]), e["register_tokens"]
        v.layer_scale, v.feature_layer, v.norm_eps = int(e["layer_scale"]), e["feature_layer"], e["norm_eps"]
        for k in range(3):
            v.mean[k], v.std[k] = e["mean"][k], e["std"][k]
    ms = c["msc"]
    d_inner = ms["expand"] * c["width"]
    d.mlp_out, d.msc_layers = c["width"], ms["n_layer"]
    d.msc_d_inner, d.msc_d_state, d.msc_headdim = d_inner, ms["d_state"], ms["headdim"]
    d.msc_nheads, d.msc_ngroups, d.msc_d_conv = d_inner // ms["headdim"], ms["ngroups"], ms["d_conv"]
    d.msc_chunk_size = ms["chunk_size"]
    d.msc_norm_group_size = d_inner // ms["ngroups"]  # model.py's (mamba_ssm's) gated norm groups
    d.msc_mixer_norm_eps, d.msc_conv_bias, d.msc_layer_norm_eps = ms["norm_eps"], 1, ms["layer_norm_eps"]
    d.projector_hidden, d.llm_d_model, d.poison = c["projector_hidden"], c["llm_d_model"], int(poison)
    d.tensors, d.n_tensors = arr, len(tensors)
    return d, keep


class CudaModule:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        self.lib.mlmamba_backend_entry.restype = POINTER(lmc.Header)
        header = self.lib.mlmamba_backend_entry().contents
        self.api_version = header.api_version
        if header.api_version != API_VERSION:
            raise RuntimeError(f"module API version {header.api_version}, this driver speaks {API_VERSION}")
        self.t = ctypes.cast(ctypes.pointer(header), POINTER(BackendV3)).contents

    def call(self, fn, *args):
        err = ctypes.create_string_buffer(1024)
        code = fn(*args, err, len(err))
        if code != OK:
            raise ModuleError(code, err.value.decode(errors="replace"))

    def create(self, c, tensors, poison=True):
        return GpuVision(self, c, tensors, poison)


class GpuVision:
    def __init__(self, mod, c, tensors, poison):
        self.m, self.t, self.c = mod, mod.t, c
        desc, keep = make_desc(c, tensors, poison)
        h = c_void_p()
        mod.call(self.t.vision_create, ctypes.byref(desc), ctypes.byref(h))
        del keep  # the host tensors are read only during vision_create
        self.h = h

    def info(self):
        i = VisionInfo()
        self.t.vision_info(self.h, ctypes.byref(i))
        return dict(weight_bytes=i.weight_bytes, scratch_bytes=i.scratch_bytes, rows=i.rows, width=i.width)

    def encode(self, rgb):
        """rgb: uint8 [S, S, 3] -> rows [R, L] (NaN-filled before the call)."""
        g = grid_of(self.c)
        out = torch.full((g * g, self.c["llm_d_model"]), float("nan"), dtype=torch.float32)
        rgb = rgb.contiguous()
        self.m.call(self.t.vision_encode, self.h, ctypes.cast(c_void_p(rgb.data_ptr()), POINTER(ctypes.c_uint8)),
                    rgb.shape[0], lmc.fptr(out), out.numel())
        return out

    def last_ms(self):
        ms = c_float(0)
        self.t.vision_last_elapsed_ms(self.h, ctypes.byref(ms))
        return float(ms.value)

    def close(self):
        if self.h:
            self.t.vision_free(self.h)
            self.h = None


class FakeModule:
    """The matched reference in fp32 on the CPU: exercises the harness, says nothing of kernels."""
    api_version = API_VERSION

    def create(self, c, tensors, poison=True):
        if c["llm_d_model"] ** 2 > 2**34:
            raise ModuleError(ERR_OOM, "out of GPU memory: stand-in")
        m = VisionHalf(c).float()
        sd = m.state_dict()
        for k in sd:
            if k not in tensors:
                raise ModuleError(ERR_INVALID, f"tensor {k} is missing from the description")
        m.load_state_dict({k: v.float() for k, v in tensors.items()})
        return FakeVision(c, m)


class FakeVision:
    def __init__(self, c, m):
        self.c, self.model, self.h = c, m, True

    def info(self):
        g = grid_of(self.c)
        return dict(weight_bytes=0, scratch_bytes=0, rows=g * g, width=self.c["llm_d_model"])

    def encode(self, rgb):
        if rgb.shape[0] != self.c["size"]:
            raise ModuleError(ERR_INVALID, "the picture has the wrong size")
        pix = rgb.permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            return reference(self.model, pix, True)[0].float()

    def last_ms(self):
        return 0.0

    def close(self):
        self.h = None


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    if not torch.isfinite(a).all():
        return float("nan")
    return float(torch.linalg.vector_norm(a - b) / max(float(torch.linalg.vector_norm(b)), 1e-30))


def check_config(mod, c, seed, rep, dev):
    name = c["name"]
    m = random_model(c, seed)
    tensors = package_tensors(m, c["dtype"])
    # The weights as the module holds them (host dtype, then bf16 for the matrices).
    m.load_state_dict({k: (v.float().bfloat16().float() if bf16_kept(k, v) else v.float())
                       for k, v in tensors.items()})
    g = grid_of(c)
    gen = torch.Generator().manual_seed(seed + 1)
    pics = [torch.randint(0, 256, (c["size"], c["size"], 3), dtype=torch.uint8, generator=gen) for _ in range(2)]
    md = m.to(dev)
    with torch.no_grad():
        refs = []
        for p in pics:
            pix = p.permute(2, 0, 1)[None].float().to(dev) / 255.0
            exact = md(pix)[0].float().cpu()
            matched = reference(md, pix, True)[0].float().cpu()
            plain = reference(md, pix, False)[0].float().cpu()
            refs.append((exact, matched, plain))
    rep.within(f"{name}: this reference vs model.py (fp32 both)", rel(refs[0][2], refs[0][0]), TOL_REF)
    want = {k: tuple(t.shape) for k, t in tensors.items()}
    rep.check(f"{name}: package_shapes matches model.py's names and shapes", want == package_shapes(c))
    v = mod.create(c, tensors)
    try:
        info = v.info()
        rep.check(f"{name}: rows x width", info["rows"] == g * g and info["width"] == c["llm_d_model"],
                  f"{info['rows']} x {info['width']}")
        outs = []
        for k, p in enumerate(pics):
            out = v.encode(p)
            outs.append(out)
            rep.check(f"{name}: picture {k} rows finite", bool(torch.isfinite(out).all()))
            rep.within(f"{name}: picture {k} vs model.py fp32", rel(out, refs[k][0]), TOL_BF16)
            rep.within(f"{name}: picture {k} vs matched bf16 reference", rel(out, refs[k][1]), TOL_MATCHED)
        again = v.encode(pics[0])
        rep.check(f"{name}: same picture twice gives identical rows", bool(torch.equal(again, outs[0])))
        rep.check(f"{name}: another picture gives other rows", not torch.equal(outs[0], outs[1]))
        bad = torch.zeros((c["size"] + 1, c["size"] + 1, 3), dtype=torch.uint8)
        try:
            v.encode(bad)
            rep.check(f"{name}: a picture of the wrong size is refused", False)
        except ModuleError as e:
            rep.check(f"{name}: a picture of the wrong size is refused", e.code == ERR_INVALID, e.code, None, e.message)
        after = v.encode(pics[0])
        rep.check(f"{name}: usable after a refused call", bool(torch.equal(after, outs[0])))
    finally:
        v.close()
    # A tensor missing from the description.
    some = dict(tensors)
    some.pop(next(iter(k for k in some if k.endswith("mlp.0.weight"))))
    try:
        mod.create(c, some).close()
        rep.check(f"{name}: a missing tensor is refused", False)
    except ModuleError as e:
        rep.check(f"{name}: a missing tensor is refused", e.code == ERR_INVALID, e.code, None, e.message)
    return tensors


def check_out_of_memory(mod, rep, c, tensors):
    huge = dict(c, llm_d_model=400000)  # the last projector matrix alone: 320 GB in bf16
    try:
        mod.create(huge, tensors).close()
        rep.check("an impossible allocation is refused", False)
    except ModuleError as e:
        rep.check("an impossible allocation is refused with out-of-memory", e.code == ERR_OOM, e.code, None, e.message)


def full_size_timing(mod, rep, runs):
    """Random weights: one random bf16 buffer viewed by every tensor of its size or smaller, so the
    host needs only the largest tensor."""
    c = full_config()
    shapes = package_shapes(c)
    biggest = max(math.prod(s) for s in shapes.values())
    pool = (0.02 * torch.randn(biggest)).to(torch.bfloat16)
    tensors = {k: pool[:math.prod(s)].view(s) for k, s in shapes.items()}
    v = mod.create(c, tensors)
    try:
        info = v.info()
        gen = torch.Generator().manual_seed(7)
        pic = torch.randint(0, 256, (384, 384, 3), dtype=torch.uint8, generator=gen)
        out = v.encode(pic)  # warm-up: cuBLASLt plans, first launches
        rep.check("full size: rows finite", bool(torch.isfinite(out).all()))
        ms = []
        for _ in range(runs):
            v.encode(pic)
            ms.append(v.last_ms())
        return dict(config="DINOv2-L/14 reg4 (block 22) + SigLIP SO400M/14 (block 25), 384 px, 27x27 grid",
                    weight_MiB=round(info["weight_bytes"] / 2**20, 1),
                    scratch_MiB=round(info["scratch_bytes"] / 2**20, 1),
                    encode_ms_median=round(statistics.median(ms), 3), encode_ms_min=round(min(ms), 3), runs=runs)
    finally:
        v.close()


def write_outputs(out, result, rep):
    os.makedirs(out, exist_ok=True)
    result["checks"] = rep.checks
    result["failed"] = len(rep.failed())
    with open(os.path.join(out, "vision_check.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    lines = ["# CUDA vision check", "", f"- module API version: {result.get('api_version')}",
             f"- checks: {len(rep.checks)}, failed: {len(rep.failed())}",
             f"- tolerances: {result['tolerances']}", ""]
    if result.get("timing"):
        lines += ["## Timing", "", "```", json.dumps(result["timing"], indent=1), "```", ""]
    lines += ["## Checks", "", "| check | ok | value | limit | detail |", "|---|---|---|---|---|"]
    for ch in rep.checks:
        v = ch["value"]
        v = f"{v:.3g}" if isinstance(v, float) else ("" if v is None else str(v))
        lines.append(f"| {ch['name']} | {'yes' if ch['passed'] else 'NO'} | {v} | {ch['limit'] or ''} | {ch['detail']} |")
    if result["errors"]:
        lines += ["", "## Errors", ""] + ["```\n" + e + "\n```" for e in result["errors"]]
    with open(os.path.join(out, "vision_check.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", help="path of libmlmamba-cuda.so")
    ap.add_argument("--out", required=True)
    ap.add_argument("--self-test", action="store_true", help="no GPU: run the harness against a reference stand-in")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    torch.manual_seed(0)
    rep = lmc.Report()
    result = dict(tolerances=dict(bf16=TOL_BF16, matched=TOL_MATCHED, reference=TOL_REF), errors=[])
    if a.self_test:
        mod, dev = FakeModule(), "cpu"
    else:
        if not a.module:
            ap.error("--module is required without --self-test")
        mod, dev = CudaModule(a.module), "cuda"
        # The references in true fp32: no TF32 in their products or convolutions.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    result["api_version"] = mod.api_version
    rep.check("module API version", mod.api_version == API_VERSION, mod.api_version)
    last = None
    for i, c in enumerate(correctness_configs()):
        try:
            last = (c, check_config(mod, c, 200 + i, rep, dev))
        except Exception:
            result["errors"].append(f"{c['name']}:\n{traceback.format_exc()}")
            rep.check(f"{c['name']} ran to the end", False, None, None, "exception, see errors")
            print(traceback.format_exc(), flush=True)
    if last:
        try:
            check_out_of_memory(mod, rep, *last)
        except Exception:
            result["errors"].append(f"out of memory:\n{traceback.format_exc()}")
            rep.check("out-of-memory check ran to the end", False, None, None, "exception, see errors")
    if not a.self_test and not a.skip_timing:
        try:
            result["timing"] = full_size_timing(mod, rep, a.runs)
            print(f"timing: {result['timing']}", flush=True)
        except Exception:
            result["errors"].append(f"timing:\n{traceback.format_exc()}")
            rep.check("full-size timing ran to the end", False, None, None, "exception, see errors")
            print(traceback.format_exc(), flush=True)
    write_outputs(a.out, result, rep)
    failed = rep.failed()
    print(f"{len(rep.checks)} checks, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
