#!/usr/bin/env python3
"""Checks and times the CUDA backend module's Mamba-2 language model through its C ABI (ctypes).

Correctness, on random models of several shapes (ngroups 1 and 2, both gated-norm modes, f32 / f16
/ bf16 host weights, tied and untied heads, biases), against tools/reference/mamba2_ref.py in
float64 on the same weights (the large matrices rounded to bf16, as the module keeps them):
  - last logits of prompts whose lengths sit on and around chunk and segment boundaries;
  - the same against a float64 reference that also rounds each matrix product's input to bf16
    (what the module computes, up to fp32 rounding): a tight bound that catches indexing errors a
    bf16-sized tolerance could hide;
  - the conversation state (conv history and SSM state) after a prompt;
  - the chunked SSD form against the module's own recurrent form;
  - visual-style fp32 rows followed by token ids;
  - greedy tokens over 10 steps (decode graph and the on-device greedy loop);
  - decode after a prompt against one longer prompt; snapshot / restore / copy / reset;
  - a bad token id and an impossible allocation give error codes and leave the model usable.
Every output buffer is filled with NaN before each call and the module poisons its scratch with
NaN (desc.poison): a value nothing wrote shows as NaN, and NaN never passes a check.

Timing (CUDA events inside the module): a 1024-token prompt and decode at batch 1 for a
Mamba-2 130M-shape and 2.7B-shape random model, with the device-to-device copy bandwidth measured
in the same run for the memory floor.

  python3 tools/cuda/check_lm.py --module build/lib/libmlmamba-cuda.so --out DIR
  python3 tools/cuda/check_lm.py --self-test --out DIR   # no GPU: the harness against a stand-in

Writes DIR/cuda_check.json and DIR/cuda_check.md; exits 1 if any check failed.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import mamba2_ref as ref  # noqa: E402

API_VERSION = 3
OK, ERR_INVALID, ERR_OOM = 0, 1, 2
DT_F32, DT_F16, DT_BF16 = 0, 1, 2
SCAN_CHUNKED, SCAN_RECURRENT = 0, 1

# Tolerances on ||gpu - ref|| / ||ref||.
# Against the exact float64 reference: the module rounds the input of every matrix product to bf16
# (relative rounding error about 2^-9 each, three per layer), so errors of a few 1e-3 are expected;
# 2e-2 is the stated bf16 bound.
TOL_BF16 = 2e-2
# Against the reference that rounds the same activations to bf16: what remains is fp32 arithmetic
# and the bf16 roundings that fall the other way after it. Without such a flip the float32 stand-in
# lands near 1e-7; one flip in a d_model-128 model moves the logits by up to about 8e-4 (seen in
# --self-test), and fp32 on the device flips more often than the CPU's.
TOL_MATCHED = 5e-3
# Two runs of the module that differ only in the scan form or in where a prompt is cut: the same
# flips, in both runs.
TOL_SELF = 5e-3

# --------------------------------------------------------------------------------------------------
# The C ABI (engine/src/backend_module.h, version 3: its language-model part; the vision part
# is in check_vision.py)
# --------------------------------------------------------------------------------------------------
c_int, c_float, c_size_t, c_int32, c_int64 = (ctypes.c_int, ctypes.c_float, ctypes.c_size_t,
                                              ctypes.c_int32, ctypes.c_int64)
c_char_p, c_void_p, POINTER, CFUNCTYPE = ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER, ctypes.CFUNCTYPE
P_float, P_int32 = POINTER(c_float), POINTER(c_int32)


class DeviceInfo(ctypes.Structure):
    _fields_ = [("index", c_int), ("name", ctypes.c_char * 256), ("total_memory", c_size_t),
                ("free_memory", c_size_t), ("compute_major", c_int), ("compute_minor", c_int)]


class Tensor(ctypes.Structure):
    _fields_ = [("name", c_char_p), ("dtype", c_int), ("ndim", c_int), ("shape", c_int64 * 4),
                ("data", c_void_p)]


class LmDesc(ctypes.Structure):
    _fields_ = [("device", c_int), ("d_model", c_int), ("n_layer", c_int), ("vocab_size", c_int),
                ("d_inner", c_int), ("d_state", c_int), ("headdim", c_int), ("nheads", c_int),
                ("ngroups", c_int), ("d_conv", c_int), ("chunk_size", c_int),
                ("norm_group_size", c_int), ("norm_eps", c_float), ("mixer_norm_eps", c_float),
                ("proj_bias", c_int), ("conv_bias", c_int), ("max_segment", c_int),
                ("scan_form", c_int), ("poison", c_int), ("tensors", POINTER(Tensor)),
                ("n_tensors", c_int)]


class LmInfo(ctypes.Structure):
    _fields_ = [("weight_bytes", c_size_t), ("scratch_bytes", c_size_t), ("state_bytes", c_size_t),
                ("max_segment", c_int)]


class Header(ctypes.Structure):
    _fields_ = [("api_version", c_int), ("name", c_char_p)]


E = (c_char_p, c_size_t)  # every fallible call ends with an error buffer and its length


class Backend(ctypes.Structure):
    _fields_ = [
        ("header", Header),
        ("probe", CFUNCTYPE(c_int, POINTER(DeviceInfo), c_int, *E)),
        ("lm_create", CFUNCTYPE(c_int, POINTER(LmDesc), POINTER(c_void_p), *E)),
        ("lm_free", CFUNCTYPE(None, c_void_p)),
        ("lm_info", CFUNCTYPE(c_int, c_void_p, POINTER(LmInfo))),
        ("state_create", CFUNCTYPE(c_int, c_void_p, POINTER(c_void_p), *E)),
        ("state_free", CFUNCTYPE(None, c_void_p)),
        ("state_reset", CFUNCTYPE(c_int, c_void_p, c_void_p, *E)),
        ("state_copy", CFUNCTYPE(c_int, c_void_p, c_void_p, c_void_p, *E)),
        ("state_floats", CFUNCTYPE(c_size_t, c_void_p)),
        ("state_read", CFUNCTYPE(c_int, c_void_p, c_void_p, P_float, c_size_t, *E)),
        ("state_write", CFUNCTYPE(c_int, c_void_p, c_void_p, P_float, c_size_t, *E)),
        ("lm_feed_rows", CFUNCTYPE(c_int, c_void_p, c_void_p, P_float, c_int, P_float, P_int32, *E)),
        ("lm_feed_ids", CFUNCTYPE(c_int, c_void_p, c_void_p, P_int32, c_int, P_float, P_int32, *E)),
        ("lm_decode", CFUNCTYPE(c_int, c_void_p, c_void_p, c_int32, P_float, P_int32, *E)),
        ("lm_generate_greedy", CFUNCTYPE(c_int, c_void_p, c_void_p, c_int32, c_int, c_int32, P_int32,
                                         POINTER(c_int), *E)),
        ("lm_last_elapsed_ms", CFUNCTYPE(c_int, c_void_p, POINTER(c_float))),
    ]


class ModuleError(RuntimeError):
    def __init__(self, code, message):
        super().__init__(f"code {code}: {message}")
        self.code = code
        self.message = message


def fptr(t):
    return ctypes.cast(c_void_p(t.data_ptr()), P_float) if t is not None else None


def iptr(t):
    return ctypes.cast(c_void_p(t.data_ptr()), P_int32) if t is not None else None


class CudaModule:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        self.lib.mlmamba_backend_entry.restype = POINTER(Header)
        header = self.lib.mlmamba_backend_entry().contents
        self.api_version = header.api_version
        if header.api_version != API_VERSION:
            raise RuntimeError(f"module API version {header.api_version}, this driver speaks {API_VERSION}")
        self.t = ctypes.cast(ctypes.pointer(header), POINTER(Backend)).contents

    def call(self, fn, *args):
        err = ctypes.create_string_buffer(1024)
        code = fn(*args, err, len(err))
        if code != OK:
            raise ModuleError(code, err.value.decode(errors="replace"))

    def probe(self):
        devs = (DeviceInfo * 16)()
        err = ctypes.create_string_buffer(1024)
        n = self.t.probe(devs, 16, err, len(err))
        if n < 0:
            raise ModuleError(-1, err.value.decode(errors="replace"))
        return [dict(index=d.index, name=d.name.decode(), compute=f"{d.compute_major}.{d.compute_minor}",
                     total_gib=round(d.total_memory / 2**30, 1), free_gib=round(d.free_memory / 2**30, 1))
                for d in devs[:min(n, 16)]]

    def create(self, cfg, tensors, scan_form=SCAN_CHUNKED, poison=True):
        return GpuLm(self, cfg, tensors, scan_form, poison)


_TORCH_DT = {torch.float32: DT_F32, torch.float16: DT_F16, torch.bfloat16: DT_BF16}


def make_desc(cfg, tensors, scan_form, poison):
    arr = (Tensor * max(1, len(tensors)))()
    keep = []
    for i, (name, t) in enumerate(tensors.items()):
        t = t.contiguous()
        keep.append(t)
        b = name.encode()
        keep.append(b)
        arr[i].name = b
        arr[i].dtype = _TORCH_DT[t.dtype]
        arr[i].ndim = t.dim()
        for k, s in enumerate(t.shape):
            arr[i].shape[k] = s
        arr[i].data = t.data_ptr()
    d = LmDesc()
    d.device = 0
    d.d_model, d.n_layer, d.vocab_size = cfg["d_model"], cfg["n_layer"], cfg["vocab"]
    d.d_inner, d.d_state, d.headdim = cfg["d_inner"], cfg["d_state"], cfg["headdim"]
    d.nheads, d.ngroups, d.d_conv, d.chunk_size = cfg["nheads"], cfg["ngroups"], cfg["d_conv"], cfg["chunk"]
    d.norm_group_size = cfg["group_size"]
    d.norm_eps = d.mixer_norm_eps = 1e-5
    d.proj_bias, d.conv_bias = int(cfg["proj_bias"]), 1
    d.max_segment, d.scan_form, d.poison = cfg.get("segment", 0), scan_form, int(poison)
    d.tensors, d.n_tensors = arr, len(tensors)
    return d, (arr, keep)


class GpuLm:
    def __init__(self, mod, cfg, tensors, scan_form, poison):
        self.m, self.t, self.cfg = mod, mod.t, cfg
        desc, self._keep = make_desc(cfg, tensors, scan_form, poison)
        h = c_void_p()
        mod.call(self.t.lm_create, ctypes.byref(desc), ctypes.byref(h))
        self.h = h
        self._keep = None  # the host tensors are read only during lm_create

    def info(self):
        i = LmInfo()
        self.t.lm_info(self.h, ctypes.byref(i))
        return dict(weight_bytes=i.weight_bytes, scratch_bytes=i.scratch_bytes, state_bytes=i.state_bytes,
                    max_segment=i.max_segment)

    def new_state(self):
        s = c_void_p()
        self.m.call(self.t.state_create, self.h, ctypes.byref(s))
        return s

    def free_state(self, s):
        self.t.state_free(s)

    def close(self):
        if self.h:
            self.t.lm_free(self.h)
            self.h = None

    def _outs(self, want_logits):
        logits = torch.full((self.cfg["vocab"],), float("nan"), dtype=torch.float32) if want_logits else None
        am = torch.full((1,), -1, dtype=torch.int32)
        return logits, am

    def feed_ids(self, s, ids, want_logits=True):
        ids = torch.tensor(list(ids), dtype=torch.int32)
        logits, am = self._outs(want_logits)
        self.m.call(self.t.lm_feed_ids, self.h, s, iptr(ids), len(ids), fptr(logits), iptr(am))
        return logits, int(am[0])

    def feed_rows(self, s, rows, want_logits=True):
        rows = rows.to(torch.float32).contiguous()
        logits, am = self._outs(want_logits)
        self.m.call(self.t.lm_feed_rows, self.h, s, fptr(rows), rows.shape[0], fptr(logits), iptr(am))
        return logits, int(am[0])

    def decode(self, s, token, want_logits=True):
        logits, am = self._outs(want_logits)
        self.m.call(self.t.lm_decode, self.h, s, int(token), fptr(logits), iptr(am))
        return logits, int(am[0])

    def generate(self, s, first, n, eos=-1):
        out = torch.full((max(1, n),), -1, dtype=torch.int32)
        got = c_int(0)
        self.m.call(self.t.lm_generate_greedy, self.h, s, int(first), n, int(eos), iptr(out), ctypes.byref(got))
        return [int(v) for v in out[:got.value]]

    def state_read(self, s):
        n = self.t.state_floats(self.h)
        buf = torch.full((n,), float("nan"), dtype=torch.float32)
        self.m.call(self.t.state_read, self.h, s, fptr(buf), n)
        return buf

    def state_write(self, s, buf):
        buf = buf.contiguous()
        self.m.call(self.t.state_write, self.h, s, fptr(buf), buf.numel())

    def state_copy(self, dst, src):
        self.m.call(self.t.state_copy, self.h, dst, src)

    def state_reset(self, s):
        self.m.call(self.t.state_reset, self.h, s)

    def last_ms(self):
        ms = c_float(0)
        self.t.lm_last_elapsed_ms(self.h, ctypes.byref(ms))
        return float(ms.value)


# --------------------------------------------------------------------------------------------------
# A stand-in for the module, built on the reference in float32 (--self-test: the harness itself
# is exercised on a machine without a GPU; it says nothing about the kernels).
# --------------------------------------------------------------------------------------------------
class FakeModule:
    api_version = API_VERSION

    def probe(self):
        return [dict(index=0, name="stand-in (no GPU)", compute="0.0", total_gib=0, free_gib=0)]

    def create(self, cfg, tensors, scan_form=SCAN_CHUNKED, poison=True):
        if cfg["vocab"] * cfg["d_model"] > 2**31:
            raise ModuleError(ERR_OOM, "out of GPU memory: stand-in")
        return FakeLm(cfg, tensors)


class FakeLm:
    def __init__(self, cfg, tensors):
        self.cfg = cfg
        self.model = reference_model(cfg, tensors, torch.float32)
        self.h = True

    def info(self):
        return dict(weight_bytes=0, scratch_bytes=0, state_bytes=0, max_segment=cfg_segment(self.cfg))

    def new_state(self):
        return {"caches": self.model.empty_cache(), "last": None}

    def free_state(self, s):
        pass

    def close(self):
        self.h = None

    def _run(self, s, rows):
        with bf16_activations():
            logits = None
            for r in rows:
                logits = step_row(self.model, r, s["caches"])
        return logits.float(), int(torch.argmax(logits))

    def feed_ids(self, s, ids, want_logits=True):
        for i in ids:
            if not 0 <= i < self.cfg["vocab"]:
                raise ModuleError(ERR_INVALID, f"token id {i} is outside the vocabulary")
        return self._run(s, [self.model.w.embedding[i] for i in ids])

    def feed_rows(self, s, rows, want_logits=True):
        return self._run(s, [r.to(torch.float32) for r in rows])

    def decode(self, s, token, want_logits=True):
        return self.feed_ids(s, [token])

    def generate(self, s, first, n, eos=-1):
        out, tok = [], first
        for _ in range(n):
            _, tok = self.decode(s, tok)
            out.append(tok)
            if tok == eos:
                break
        return out

    def state_read(self, s):
        parts = []
        for c in s["caches"]:
            parts += [c.conv[:, 1:].t().reshape(-1), c.ssm.reshape(-1)]
        return torch.cat(parts).float()

    def state_write(self, s, buf):
        c = self.cfg
        conv_n = (c["d_conv"] - 1) * c["conv_dim"]
        ssm_n = c["nheads"] * c["headdim"] * c["d_state"]
        off = 0
        for cache in s["caches"]:
            hist = buf[off:off + conv_n].reshape(c["d_conv"] - 1, c["conv_dim"]).t()
            cache.conv = torch.cat([torch.zeros(c["conv_dim"], 1), hist], dim=1).clone()
            off += conv_n
            cache.ssm = buf[off:off + ssm_n].reshape(c["nheads"], c["headdim"], c["d_state"]).clone()
            off += ssm_n

    def state_copy(self, dst, src):
        self.state_write(dst, self.state_read(src))

    def state_reset(self, s):
        s["caches"] = self.model.empty_cache()

    def last_ms(self):
        return 0.0


def step_row(model, row, caches):
    """One row (an embedding or an input row) through the reference's decode step."""
    c = model.cfg
    hidden = row.to(model.dtype)[None, :]
    residual = torch.zeros_like(hidden)
    for i in range(c.n_layer):
        residual = hidden + residual
        x = ref.rms_norm(residual, model.w.layer_norm[i], c.norm_eps)
        hidden = model.mixer_step(i, x, caches[i])
    final = ref.rms_norm(hidden + residual, model.w.norm_f, c.norm_eps)
    return (final @ model.w.lm_head.t())[0]


# --------------------------------------------------------------------------------------------------
# Random models and the reference
# --------------------------------------------------------------------------------------------------
def shape_cfg(d_model, n_layer, vocab, d_state, headdim, ngroups, chunk, expand=2, d_conv=4,
              norm="whole", tied=True, proj_bias=False, dtype=torch.bfloat16, segment=0, out_scale=1.0, name=""):
    d_inner = expand * d_model
    nheads = d_inner // headdim
    return dict(name=name, d_model=d_model, n_layer=n_layer, vocab=vocab, d_state=d_state, headdim=headdim,
                ngroups=ngroups, chunk=chunk, expand=expand, d_conv=d_conv, d_inner=d_inner, nheads=nheads,
                conv_dim=d_inner + 2 * ngroups * d_state,
                d_in_proj=2 * d_inner + 2 * ngroups * d_state + nheads,
                group_size=d_inner if norm == "whole" else d_inner // ngroups, norm=norm, tied=tied,
                proj_bias=proj_bias, dtype=dtype, segment=segment, out_scale=out_scale)


def cfg_segment(c):
    s = c.get("segment", 0) or 2048
    return max(c["chunk"], min(s, 65535) // c["chunk"] * c["chunk"])


BIG = ("embedding.weight", "lm_head.weight", "in_proj.weight", "out_proj.weight")


def make_weights(c, seed, device="cpu"):
    """Host tensors in the config's dtype, named as the module expects. Drawn like
    tools/make_random_model.py (decays in the trained range), with a unit-scale embedding. With a
    tied head the embedding of the last token dominates its own logits unless the mixers' output
    is scaled up (out_scale): otherwise greedy decoding only repeats its input."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=g, device=device) * std

    def uniform(n, lo, hi):
        return torch.rand(n, generator=g, device=device) * (hi - lo) + lo

    D, L, V, H = c["d_model"], c["n_layer"], c["vocab"], c["nheads"]
    t = {"embedding.weight": randn(V, D)}
    for i in range(L):
        p, m = f"layers.{i}.", f"layers.{i}.mixer."
        dt = torch.exp(uniform(H, math.log(1e-3), math.log(1e-1)))
        t[p + "norm.weight"] = 1 + randn(D, std=0.05)
        t[m + "in_proj.weight"] = randn(c["d_in_proj"], D, std=D ** -0.5)
        if c["proj_bias"]:
            t[m + "in_proj.bias"] = randn(c["d_in_proj"], std=0.1)
        t[m + "conv1d.weight"] = randn(c["conv_dim"], 1, c["d_conv"], std=0.3)
        t[m + "conv1d.bias"] = randn(c["conv_dim"], std=0.1)
        t[m + "dt_bias"] = dt + torch.log(-torch.expm1(-dt))
        t[m + "A_log"] = torch.log(uniform(H, 1, 16))
        t[m + "D"] = 1 + randn(H, std=0.1)
        t[m + "norm.weight"] = 1 + randn(c["d_inner"], std=0.05)
        t[m + "out_proj.weight"] = randn(D, c["d_inner"], std=c["out_scale"] * c["d_inner"] ** -0.5 / math.sqrt(L))
        if c["proj_bias"]:
            t[m + "out_proj.bias"] = randn(D, std=0.1)
    t["norm_f.weight"] = 1 + randn(D, std=0.05)
    if not c["tied"]:
        t["lm_head.weight"] = randn(V, D, std=1.0)
    return {k: v.to(c["dtype"]).cpu().contiguous() for k, v in t.items()}


def resident(name, t):
    """What the module keeps: the large matrices in bf16 (rounded to nearest even), the rest exact."""
    if name.endswith(BIG):
        return t.to(torch.bfloat16).to(torch.float64)
    return t.to(torch.float64)


def reference_model(c, tensors, dtype=torch.float64):
    rc = ref.Mamba2LMConfig(d_model=c["d_model"], n_layer=c["n_layer"], vocab_size=c["vocab"],
                            d_state=c["d_state"], d_conv=c["d_conv"], expand=c["expand"], headdim=c["headdim"],
                            ngroups=c["ngroups"], chunk_size=c["chunk"], norm_eps=1e-5,
                            norm_group_size=c["group_size"], tie_embeddings=c["tied"])
    sd = {}
    for k, v in tensors.items():
        sd[k if k == "lm_head.weight" else "backbone." + k] = resident(k, v)
    return ref.Mamba2LM.from_state_dict(rc, sd, dtype)


@contextlib.contextmanager
def bf16_activations():
    """The reference with each matrix product's input rounded to bf16, as the module feeds them:
    the layers' RMSNorm and norm_f feed in_proj and the head, the gated RMSNorm feeds out_proj."""
    rms, gated = ref.rms_norm, ref.gated_rms_norm

    def rnd(x):
        return x.to(torch.bfloat16).to(x.dtype)

    ref.rms_norm = lambda x, w, eps: rnd(rms(x, w, eps))
    ref.gated_rms_norm = lambda y, z, w, eps, gs: rnd(gated(y, z, w, eps, gs))
    try:
        yield
    finally:
        ref.rms_norm, ref.gated_rms_norm = rms, gated


def ref_run(model, ids=None, rows=None, matched=False):
    """Last logits and caches of [rows ; ids] from an empty state. Rows enter through extra
    embedding entries, the head stays the model's own."""
    ids = list(ids or [])
    m = model
    if rows is not None:
        V = model.w.embedding.shape[0]
        w = model.w
        ext = ref.LMWeights(embedding=torch.cat([w.embedding, rows.to(torch.float64)]), layer_norm=w.layer_norm,
                            mixers=w.mixers, norm_f=w.norm_f, lm_head=w.lm_head)
        m = ref.Mamba2LM(model.cfg, ext, model.dtype)
        ids = [V + r for r in range(rows.shape[0])] + ids
    with bf16_activations() if matched else contextlib.nullcontext():
        logits, caches = m.forward(ids, "chunked")
    return logits[-1], caches


def ref_greedy(model, ids, n, matched=True):
    with bf16_activations() if matched else contextlib.nullcontext():
        toks, chosen_from = model.greedy(ids, n)
    return toks, chosen_from


def flat_state(c, caches):
    parts = []
    for cache in caches:
        parts += [cache.conv[:, 1:].t().reshape(-1), cache.ssm.reshape(-1)]
    return torch.cat(parts)


def split_state(c, flat):
    conv_n = (c["d_conv"] - 1) * c["conv_dim"]
    ssm_n = c["nheads"] * c["headdim"] * c["d_state"]
    per = conv_n + ssm_n
    conv = torch.cat([flat[i * per:i * per + conv_n] for i in range(c["n_layer"])])
    ssm = torch.cat([flat[i * per + conv_n:(i + 1) * per] for i in range(c["n_layer"])])
    return conv, ssm


def rel(a, b):
    if a is None or b is None:
        return float("nan")
    a, b = a.double(), b.double()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------
class Report:
    def __init__(self):
        self.checks = []

    def check(self, name, passed, value=None, limit=None, detail=""):
        passed = bool(passed)
        self.checks.append(dict(name=name, passed=passed, value=value, limit=limit, detail=detail))
        mark = "ok  " if passed else "FAIL"
        v = f" {value:.3g}" if isinstance(value, float) else (f" {value}" if value is not None else "")
        lim = f" (limit {limit:g})" if isinstance(limit, float) else ""
        print(f"  [{mark}] {name}:{v}{lim} {detail}", flush=True)
        return passed

    def within(self, name, value, limit, detail=""):
        # NaN compares false: it never passes.
        return self.check(name, value <= limit, value, limit, detail)

    def failed(self):
        return [c for c in self.checks if not c["passed"]]


def finite(t):
    return t is not None and bool(torch.isfinite(t).all())


def greedy_agree(gpu, ref_toks, ref_logits, err_bound):
    """Identical tokens, except where the reference's own top-1 margin over the module's choice is
    within the error bound: a near-tie the arithmetic cannot decide (reported, not hidden)."""
    for k, (a, b) in enumerate(zip(gpu, ref_toks)):
        if a != b:
            lg = ref_logits[k].double()
            margin = float(lg[b] - lg[a])
            tie = margin <= err_bound * float(torch.linalg.vector_norm(lg))
            return tie, f"first difference at step {k}: module {a}, reference {b}, reference margin {margin:.3g}" + (
                " (near-tie)" if tie else "")
    if len(gpu) != len(ref_toks):
        return False, f"{len(gpu)} tokens, reference {len(ref_toks)}"
    return True, "identical"


def check_config(mod, c, lengths, seed, rep):
    tag = c["name"]
    print(f"\n== {tag}: d_model {c['d_model']}, layers {c['n_layer']}, d_state {c['d_state']}, headdim "
          f"{c['headdim']}, ngroups {c['ngroups']}, chunk {c['chunk']}, norm {c['norm']}, vocab {c['vocab']}, "
          f"{str(c['dtype']).replace('torch.', '')} weights, {'tied' if c['tied'] else 'untied'} head"
          f"{', biases' if c['proj_bias'] else ''}, segment {cfg_segment(c)}", flush=True)
    tensors = make_weights(c, seed)
    model = reference_model(c, tensors)
    lm = mod.create(c, tensors, SCAN_CHUNKED, poison=True)
    lm_rec = mod.create(c, tensors, SCAN_RECURRENT, poison=True)
    gen = torch.Generator().manual_seed(seed + 1)

    def rand_ids(n):
        return torch.randint(0, c["vocab"], (n,), generator=gen).tolist()

    st, st2 = lm.new_state(), lm_rec.new_state()
    try:
        for L in lengths:
            ids = rand_ids(L)
            lm.state_reset(st)
            lm_rec.state_reset(st2)
            logits, am = lm.feed_ids(st, ids)
            logits_rec, _ = lm_rec.feed_ids(st2, ids)
            exact, _ = ref_run(model, ids)
            matched, caches = ref_run(model, ids, matched=True)
            rep.check(f"{tag} T={L} logits written (no NaN)", finite(logits))
            rep.within(f"{tag} T={L} logits vs float64 reference", rel(logits, exact), TOL_BF16)
            rep.within(f"{tag} T={L} logits vs bf16-activation reference", rel(logits, matched), TOL_MATCHED)
            rep.check(f"{tag} T={L} device argmax = argmax of the logits", finite(logits) and am == int(torch.argmax(logits)),
                      am)
            rep.within(f"{tag} T={L} chunked vs recurrent scan", rel(logits, logits_rec), TOL_SELF)
            conv, ssm = split_state(c, lm.state_read(st))
            rconv, rssm = split_state(c, flat_state(c, caches))
            rep.within(f"{tag} T={L} conv_state vs reference", rel(conv, rconv), TOL_MATCHED)
            rep.within(f"{tag} T={L} ssm_state vs reference", rel(ssm, rssm), TOL_MATCHED)

        # Visual-style rows then ids, in two calls: the cut falls inside a chunk.
        rows = torch.randn(20, c["d_model"], generator=gen)
        ids = rand_ids(17)
        lm.state_reset(st)
        lm.feed_rows(st, rows, want_logits=False)
        logits, _ = lm.feed_ids(st, ids)
        rep.within(f"{tag} rows(20)+ids(17) vs float64 reference", rel(logits, ref_run(model, ids, rows)[0]), TOL_BF16)
        rep.within(f"{tag} rows(20)+ids(17) vs bf16-activation reference",
                   rel(logits, ref_run(model, ids, rows, matched=True)[0]), TOL_MATCHED)

        # Greedy decoding: the decode graph step by step, and the on-device greedy loop.
        prompt, n_new = rand_ids(17), 10
        lm.state_reset(st)
        _, first = lm.feed_ids(st, prompt, want_logits=False)
        st_copy = lm.new_state()
        lm.state_copy(st_copy, st)
        toks, cur = [first], first
        for _ in range(n_new - 1):
            _, cur = lm.decode(st, cur, want_logits=False)
            toks.append(cur)
        rtoks, rlogits = ref_greedy(model, prompt, n_new)
        ok, why = greedy_agree(toks, rtoks, rlogits, TOL_MATCHED)
        rep.check(f"{tag} greedy {n_new} tokens vs bf16-activation reference", ok, None, None, why)
        etoks, _ = ref_greedy(model, prompt, n_new, matched=False)
        same = sum(a == b for a, b in zip(toks, etoks))
        rep.check(f"{tag} greedy vs float64 reference (information)", True, f"{same}/{n_new} equal")
        gen_toks = lm.generate(st_copy, first, n_new - 1)
        rep.check(f"{tag} on-device greedy loop = decode steps", [first] + gen_toks == toks, None, None,
                  f"{[first] + gen_toks} vs {toks}")
        lm.free_state(st_copy)

        # Decode after a prompt against one longer prompt.
        ids = rand_ids(40)
        lm.state_reset(st)
        lm.feed_ids(st, ids[:33], want_logits=False)
        for t in ids[33:]:
            logits_dec, _ = lm.decode(st, t)
        lm.state_reset(st)
        logits_pre, _ = lm.feed_ids(st, ids)
        rep.check(f"{tag} decode logits written (no NaN)", finite(logits_dec))
        rep.within(f"{tag} prompt(33)+decode(7) vs prompt(40)", rel(logits_dec, logits_pre), TOL_SELF)
        rep.within(f"{tag} prompt(33)+decode(7) vs bf16-activation reference",
                   rel(logits_dec, ref_run(model, ids, matched=True)[0]), TOL_MATCHED)

        # Snapshot / restore / copy / reset.
        prompt, follow = rand_ids(17), rand_ids(5)
        lm.state_reset(st)
        first_logits, _ = lm.feed_ids(st, prompt)
        snap = lm.state_read(st)
        rep.check(f"{tag} state read back (no NaN)", finite(snap))
        other = lm.new_state()
        lm.state_copy(other, st)
        a = [lm.decode(st, t)[0] for t in follow]
        lm.state_write(st, snap)
        b = [lm.decode(st, t)[0] for t in follow]
        cpy = [lm.decode(other, t)[0] for t in follow]
        rep.check(f"{tag} restore then decode = decode", all(torch.equal(x, y) for x, y in zip(a, b)), None, None,
                  f"max rel {max(rel(x, y) for x, y in zip(a, b)):.3g}")
        rep.check(f"{tag} copied state decodes the same", all(torch.equal(x, y) for x, y in zip(a, cpy)))
        lm.free_state(other)
        lm.state_reset(st)
        again, _ = lm.feed_ids(st, prompt)
        rep.check(f"{tag} reset then same prompt = same logits", torch.equal(again, first_logits))

        # A bad id is an error, not a crash, and the model goes on working.
        try:
            lm.decode(st, c["vocab"])
            rep.check(f"{tag} out-of-vocabulary id refused", False, None, None, "accepted")
        except ModuleError as e:
            rep.check(f"{tag} out-of-vocabulary id refused", e.code == ERR_INVALID and "vocabulary" in e.message,
                      None, None, e.message)
        lm.state_reset(st)
        again, _ = lm.feed_ids(st, prompt)
        rep.check(f"{tag} usable after an error", torch.equal(again, first_logits))
        return lm, st, prompt, first_logits, lm_rec, st2
    except Exception:
        lm.free_state(st)
        lm_rec.free_state(st2)
        lm.close()
        lm_rec.close()
        raise


def check_out_of_memory(mod, rep, survivor):
    """A model that cannot fit: a clear error, nothing read from the (absent) weights, and the
    model already loaded keeps working."""
    huge = shape_cfg(d_model=4096, n_layer=1, vocab=1 << 27, d_state=128, headdim=64, ngroups=1, chunk=256,
                     name="huge")
    try:
        lm = mod.create(huge, {}, SCAN_CHUNKED, poison=False)
        lm.close()
        rep.check("1 TiB model refused", False, None, None, "it was created")
    except ModuleError as e:
        rep.check("1 TiB model refused with out of GPU memory", e.code == ERR_OOM and "out of GPU memory" in e.message,
                  None, None, e.message)
    lm, st, prompt, expected, *_ = survivor
    lm.state_reset(st)
    logits, _ = lm.feed_ids(st, prompt)
    rep.check("loaded model still usable after the refused one", torch.equal(logits, expected))


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------
def copy_bandwidth():
    """Device-to-device copy of 4 GiB, bytes read plus bytes written over the median time."""
    n = 4 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    a.random_(0, 255)
    b = torch.empty_like(a)
    times = []
    for i in range(13):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        if i >= 3:
            times.append(s.elapsed_time(e))
    del a, b
    torch.cuda.empty_cache()
    ms = statistics.median(times)
    return 2 * n / (ms * 1e-3), ms


def time_model(mod, c, prefill_len=1024, decode_steps=100, generate_tokens=256, seed=7):
    print(f"\n== timing {c['name']}: d_model {c['d_model']}, {c['n_layer']} layers, vocab {c['vocab']}", flush=True)
    t0 = time.time()
    tensors = make_weights(c, seed, device="cuda" if torch.cuda.is_available() else "cpu")
    torch.cuda.empty_cache()
    gen_s = time.time() - t0
    t0 = time.time()
    lm = mod.create(c, tensors, SCAN_CHUNKED, poison=False)
    load_s = time.time() - t0
    params = sum(v.numel() for v in tensors.values())
    del tensors
    info = lm.info()
    st = lm.new_state()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, c["vocab"], (prefill_len,), generator=g).tolist()
    pre = []
    for i in range(6):
        lm.state_reset(st)
        logits, first = lm.feed_ids(st, ids)
        if i:
            pre.append(lm.last_ms())
    ok = finite(logits)
    steps = []
    tok = first
    for i in range(decode_steps + 10):
        _, tok = lm.decode(st, tok, want_logits=False)
        if i >= 10:
            steps.append(lm.last_ms())
    lm.state_reset(st)
    _, first = lm.feed_ids(st, ids, want_logits=False)
    out = lm.generate(st, first, generate_tokens)
    gen_ms = lm.last_ms()
    lm.free_state(st)
    lm.close()
    r = dict(name=c["name"], params=params, weight_bytes=info["weight_bytes"], state_bytes=info["state_bytes"],
             scratch_bytes=info["scratch_bytes"], random_weights_s=round(gen_s, 2), load_s=round(load_s, 2),
             prefill_tokens=prefill_len, prefill_ms=statistics.median(pre), prefill_ms_all=pre,
             decode_step_ms=statistics.median(steps), decode_step_ms_p90=sorted(steps)[int(0.9 * len(steps))],
             generate_tokens=len(out), generate_ms=gen_ms, logits_finite=ok)
    r["prefill_tok_s"] = prefill_len / (r["prefill_ms"] * 1e-3)
    r["decode_tok_s_graph"] = 1e3 / r["decode_step_ms"]
    r["decode_tok_s_greedy_loop"] = len(out) / (gen_ms * 1e-3) if gen_ms > 0 else float("nan")
    print(f"  prefill {prefill_len}: {r['prefill_ms']:.2f} ms ({r['prefill_tok_s']:.0f} tok/s); decode step "
          f"{r['decode_step_ms']:.3f} ms ({r['decode_tok_s_graph']:.0f} tok/s); greedy loop "
          f"{r['decode_tok_s_greedy_loop']:.0f} tok/s", flush=True)
    return r


# --------------------------------------------------------------------------------------------------
def correctness_configs(quick):
    A = shape_cfg(128, 2, 512, 32, 32, 1, 16, norm="whole", dtype=torch.bfloat16, segment=32, out_scale=12.0,
                  name="A ng1 chunk16 seg32 bf16")
    B = shape_cfg(128, 3, 768, 64, 16, 2, 32, norm="group", tied=False, proj_bias=True, dtype=torch.float32,
                  name="B ng2 group-norm chunk32 f32 untied bias")
    C = shape_cfg(256, 2, 1000, 128, 64, 1, 64, norm="whole", dtype=torch.float16, out_scale=12.0, name="C ng1 d_state128 chunk64 f16")
    D = shape_cfg(128, 2, 512, 64, 32, 2, 16, norm="whole", dtype=torch.bfloat16, out_scale=12.0, name="D ng2 whole-norm chunk16 bf16")
    runs = [(A, [1, 15, 16, 17, 63, 64, 65, 200]), (B, [1, 31, 32, 33, 65, 200]), (C, [1, 63, 64, 65, 200]),
            (D, [1, 15, 16, 17, 200])]
    if quick:
        runs = [(A, [1, 17, 65]), (B, [33])]
    return runs


def timing_configs():
    common = dict(vocab=50288, d_state=128, headdim=64, ngroups=1, chunk=256, dtype=torch.bfloat16)
    return [shape_cfg(768, 24, name="mamba2-130m shape", **common),
            shape_cfg(2560, 64, name="mamba2-2.7b shape", **common)]


def write_outputs(out, result, rep):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cuda_check.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    lines = ["# CUDA language model check", "", f"- module API version: {result.get('api_version')}",
             f"- devices: {result.get('devices')}", f"- torch {torch.__version__}, python {platform.python_version()}",
             f"- checks: {len(rep.checks) - len(rep.failed())} passed, {len(rep.failed())} failed", ""]
    if rep.failed():
        lines += ["## Failed", ""] + [f"- {c['name']}: {c['value']} (limit {c['limit']}) {c['detail']}"
                                      for c in rep.failed()] + [""]
    lines += ["## Checks", "", "| check | value | limit | ok |", "|---|---|---|---|"]
    for c in rep.checks:
        v = f"{c['value']:.3g}" if isinstance(c["value"], float) else (c["value"] if c["value"] is not None else "")
        lines.append(f"| {c['name']} | {v} {c['detail'] if not isinstance(c['value'], float) else ''} | "
                     f"{c['limit'] if c['limit'] is not None else ''} | {'yes' if c['passed'] else '**NO**'} |")
    t = result.get("timing")
    if t:
        lines += ["", "## Timing (batch 1, CUDA events inside the module)", ""]
        if "copy_bandwidth_GBps" in t:
            lines.append(f"- device-to-device copy: {t['copy_bandwidth_GBps']:.0f} GB/s (read + write)")
        lines += ["", "| model | weights GiB | prefill 1024 ms | prefill tok/s | decode step ms | decode tok/s "
                      "(graph) | greedy loop tok/s | floor ms/token | floor tok/s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in t.get("models", []):
            lines.append(f"| {r['name']} | {r['weight_bytes'] / 2**30:.2f} | {r['prefill_ms']:.2f} | "
                         f"{r['prefill_tok_s']:.0f} | {r['decode_step_ms']:.3f} | {r['decode_tok_s_graph']:.0f} | "
                         f"{r['decode_tok_s_greedy_loop']:.0f} | {r.get('floor_ms', float('nan')):.3f} | "
                         f"{r.get('floor_tok_s', float('nan')):.0f} |")
    if result.get("errors"):
        lines += ["", "## Errors", ""] + [f"```\n{e}\n```" for e in result["errors"]]
    with open(os.path.join(out, "cuda_check.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", help="path of libmlmamba-cuda.so")
    ap.add_argument("--out", required=True)
    ap.add_argument("--self-test", action="store_true", help="no GPU: run the harness against a reference stand-in")
    ap.add_argument("--quick", action="store_true", help="fewer shapes and lengths")
    ap.add_argument("--skip-timing", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    rep = Report()
    result = dict(tolerances=dict(bf16=TOL_BF16, matched=TOL_MATCHED, self=TOL_SELF), errors=[])
    if a.self_test:
        mod = FakeModule()
    else:
        if not a.module:
            ap.error("--module is required without --self-test")
        mod = CudaModule(a.module)
    result["api_version"] = mod.api_version
    rep.check("module API version", mod.api_version == API_VERSION, mod.api_version)
    try:
        result["devices"] = mod.probe()
    except ModuleError as e:
        print(f"skipped: no CUDA device ({e.message})", flush=True)
        result["errors"].append(f"no CUDA device: {e.message}")
        result["checks"] = rep.checks
        write_outputs(a.out, result, rep)
        return 2
    print(f"devices: {result['devices']}", flush=True)

    survivor = None
    for i, (c, lengths) in enumerate(correctness_configs(a.quick)):
        try:
            got = check_config(mod, c, lengths, 100 + i, rep)
            if survivor is None:
                survivor = got
            else:
                got[0].free_state(got[1])
                got[4].free_state(got[5])
                got[0].close()
                got[4].close()
        except Exception:
            result["errors"].append(f"{c['name']}:\n{traceback.format_exc()}")
            rep.check(f"{c['name']} ran to the end", False, None, None, "exception, see errors")
            print(traceback.format_exc(), flush=True)
    if survivor:
        try:
            check_out_of_memory(mod, rep, survivor)
        except Exception:
            result["errors"].append(f"out of memory:\n{traceback.format_exc()}")
            rep.check("out-of-memory check ran to the end", False, None, None, "exception, see errors")
        lm, st, _, _, lm_rec, st2 = survivor
        lm.free_state(st)
        lm_rec.free_state(st2)
        lm.close()
        lm_rec.close()

    if not a.self_test and not a.skip_timing:
        timing = dict(models=[])
        try:
            bw, ms = copy_bandwidth()
            timing["copy_bandwidth_GBps"] = bw / 1e9
            print(f"\ndevice-to-device copy: {bw / 1e9:.0f} GB/s", flush=True)
            for c in timing_configs():
                r = time_model(mod, c)
                # The memory floor of one decoded token: every weight read once (the tied head reads
                # the whole embedding), the SSM and conv state read and written once.
                r["floor_ms"] = (r["weight_bytes"] + 2 * r["state_bytes"]) / bw * 1e3
                r["floor_tok_s"] = 1e3 / r["floor_ms"]
                r["floor_weights_only_tok_s"] = bw / r["weight_bytes"]
                timing["models"].append(r)
                rep.check(f"{c['name']} timing logits finite", r["logits_finite"])
        except Exception:
            result["errors"].append(f"timing:\n{traceback.format_exc()}")
            rep.check("timing ran to the end", False, None, None, "exception, see errors")
            print(traceback.format_exc(), flush=True)
        result["timing"] = timing

    result["checks"] = rep.checks
    write_outputs(a.out, result, rep)
    print(f"\n{len(rep.checks) - len(rep.failed())} checks passed, {len(rep.failed())} failed", flush=True)
    for c in rep.failed():
        print(f"  FAILED {c['name']}: {c['value']} {c['detail']}", flush=True)
    t = result.get("timing")
    if t and t.get("models"):
        print(f"\n{'model':<20} {'prefill1024 ms':>15} {'decode ms':>10} {'tok/s graph':>12} {'tok/s loop':>11} "
              f"{'floor tok/s':>12}")
        for r in t["models"]:
            print(f"{r['name']:<20} {r['prefill_ms']:>15.2f} {r['decode_step_ms']:>10.3f} "
                  f"{r['decode_tok_s_graph']:>12.0f} {r['decode_tok_s_greedy_loop']:>11.0f} {r['floor_tok_s']:>12.0f}")
        print(f"copy bandwidth {t.get('copy_bandwidth_GBps', float('nan')):.0f} GB/s")
    return 1 if rep.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
