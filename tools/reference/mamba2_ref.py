"""Independent PyTorch reference of the Mamba-2 language model (docs/MODEL.md section 3).

Written from the model description, not from any existing implementation, so that it can be used to
check both transformers and the C++ engine. It runs in float64 by default: the golden values it
produces are meant to be "the exact answer" up to rounding, and the two scan paths (plain recurrence
and chunked SSD) must agree to ~1e-12 there.

Layout (batch 1, sequence-major, tensors [T, ...]):
  embedding -> n_layer x { residual = hidden + residual; x = RMSNorm(residual) * w; hidden = mixer(x) }
            -> RMSNorm(hidden + residual) * norm_f -> lm_head (tied to the embedding unless given)
Mixer: in_proj -> [z | xBC | dt]; xBC -> causal depthwise conv1d + bias -> SiLU -> [x | B | C];
  dt = softplus(dt + dt_bias); A = -exp(A_log);
  S_h[t] = exp(dt[t,h] A[h]) S_h[t-1] + dt[t,h] x[t,h,:] (outer) B[t,g(h),:];  y = S_h[t] C[t,g(h),:] + D[h] x
  with g(h) = h // (nheads / ngroups); then g = y * silu(z), RMSNorm over groups of `norm_group_size`
  channels, * norm.weight; out_proj.

Only torch is needed (plus json/struct); safetensors files are read by a small reader below so the
reference does not depend on the safetensors package.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

def _json_float(v) -> float:
    """JSON has no infinity: config files spell it Infinity (Python's json), "Infinity", null, or
    {"__float__": "Infinity"} (transformers 5)."""
    if v is None:
        return math.inf
    if isinstance(v, dict) and "__float__" in v:
        v = v["__float__"]
    return float(v)


@dataclass
class Mamba2LMConfig:
    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int
    d_conv: int
    expand: int
    headdim: int
    ngroups: int
    chunk_size: int
    norm_eps: float = 1e-5
    # Channels per normalisation group in the gated RMSNorm. mamba_ssm normalises each of the
    # ngroups groups on its own (d_inner // ngroups); transformers' Mamba2 normalises over all of
    # d_inner. The two only differ when ngroups > 1, so it has to follow the checkpoint's origin.
    norm_group_size: int | None = None  # None: whole d_inner
    tie_embeddings: bool = True
    # (min, max) clamp of dt after softplus; (0, inf) means no clamp (what the released models use).
    dt_limit: tuple = (0.0, math.inf)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.ngroups * self.d_state

    @property
    def group_size(self) -> int:
        return self.d_inner if self.norm_group_size is None else self.norm_group_size

    def validate(self) -> None:
        if self.d_inner % self.headdim:
            raise ValueError(f"d_inner {self.d_inner} is not a multiple of headdim {self.headdim}")
        if self.nheads % self.ngroups:
            raise ValueError(f"nheads {self.nheads} is not a multiple of ngroups {self.ngroups}")
        if self.d_inner % self.group_size:
            raise ValueError(f"d_inner {self.d_inner} is not a multiple of norm group {self.group_size}")

    @classmethod
    def from_transformers(cls, cfg: dict, norm_group_size: int | None = None) -> "Mamba2LMConfig":
        """From a transformers `model_type: mamba2` config.json (as a dict).

        Every size is read from the file: transformers' defaults are not the sizes of any released
        model, so a missing field is an error rather than a silent default. The gated-norm grouping
        defaults to the whole d_inner, which is what transformers' Mamba2 computes (checked on
        transformers 5.17 by make_mamba2_fixtures.py, which compares the two on an ngroups=2 model).
        """
        def need(key):
            if key not in cfg:
                raise KeyError(f"transformers Mamba-2 config lacks '{key}'")
            return cfg[key]

        if cfg.get("model_type", "mamba2") != "mamba2":
            raise ValueError(f"model_type {cfg.get('model_type')!r} is not mamba2")
        limit = [_json_float(v) for v in cfg.get("time_step_limit", [0.0, math.inf])]
        c = cls(
            d_model=int(need("hidden_size")),
            n_layer=int(need("num_hidden_layers")),
            vocab_size=int(need("vocab_size")),
            d_state=int(need("state_size")),
            d_conv=int(need("conv_kernel")),
            expand=int(need("expand")),
            headdim=int(need("head_dim")),
            ngroups=int(need("n_groups")),
            chunk_size=int(need("chunk_size")),
            norm_eps=float(need("layer_norm_epsilon")),
            norm_group_size=norm_group_size,
            tie_embeddings=bool(need("tie_word_embeddings")),
            dt_limit=(limit[0], limit[1]),
        )
        if int(need("num_heads")) != c.nheads:
            raise ValueError(f"num_heads {cfg['num_heads']} != expand*hidden_size/head_dim = {c.nheads}")
        if cfg.get("rms_norm", True) is not True:
            raise ValueError("only rms_norm=true Mamba-2 models are described by docs/MODEL.md")
        c.validate()
        return c

    @classmethod
    def from_mamba_ssm(cls, cfg: dict) -> "Mamba2LMConfig":
        """From a mamba_ssm config.json (d_model, n_layer, ssm_cfg, ...).

        mamba_ssm's Mamba2 module defaults (d_state 128, d_conv 4, expand 2, headdim 64, ngroups 1,
        chunk_size 256) apply to fields its ssm_cfg leaves out, because that is what built the model.
        The vocabulary is padded up to pad_vocab_size_multiple like mamba_ssm does.
        """
        ssm = dict(cfg.get("ssm_cfg", {}))
        if ssm.get("layer", "Mamba2") != "Mamba2":
            raise ValueError(f"ssm_cfg.layer {ssm.get('layer')!r} is not Mamba2")
        if int(cfg.get("d_intermediate", 0)) != 0:
            raise ValueError("models with an MLP after each mixer (d_intermediate > 0) are not covered")
        vocab = int(cfg["vocab_size"])
        mult = int(cfg.get("pad_vocab_size_multiple", 1))
        if vocab % mult:
            vocab += mult - vocab % mult
        ngroups = int(ssm.get("ngroups", 1))
        c = cls(
            d_model=int(cfg["d_model"]),
            n_layer=int(cfg["n_layer"]),
            vocab_size=vocab,
            d_state=int(ssm.get("d_state", 128)),
            d_conv=int(ssm.get("d_conv", 4)),
            expand=int(ssm.get("expand", 2)),
            headdim=int(ssm.get("headdim", 64)),
            ngroups=ngroups,
            chunk_size=int(ssm.get("chunk_size", 256)),
            norm_eps=1e-5,
            tie_embeddings=bool(cfg.get("tie_embeddings", True)),
            dt_limit=tuple(float(v) for v in ssm.get("dt_limit", (0.0, math.inf))),
        )
        if ssm.get("norm_before_gate", False):
            raise ValueError("norm_before_gate=True is not the released layout")
        c.norm_group_size = c.d_inner // ngroups
        c.validate()
        return c


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
}


def read_safetensors(path: str) -> dict[str, torch.Tensor]:
    """Reads a .safetensors file: u64 little-endian header length, JSON header, raw data."""
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, size = _ST_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        raw = bytearray(blob[base + begin:base + end])
        count = (end - begin) // size
        if dtype == torch.bfloat16:
            t = torch.frombuffer(raw, dtype=torch.int16, count=count).view(torch.bfloat16)
        else:
            t = torch.frombuffer(raw, dtype=dtype, count=count)
        out[name] = t.reshape(info["shape"]).clone()
    return out


@dataclass
class MixerWeights:
    in_proj: torch.Tensor           # [2*d_inner + 2*ngroups*d_state + nheads, d_model]
    conv_w: torch.Tensor            # [conv_dim, d_conv] (the [conv_dim, 1, d_conv] checkpoint tensor)
    conv_b: torch.Tensor | None     # [conv_dim]
    dt_bias: torch.Tensor           # [nheads]
    A_log: torch.Tensor             # [nheads]
    D: torch.Tensor                 # [nheads]
    norm_w: torch.Tensor            # [d_inner]
    out_proj: torch.Tensor          # [d_model, d_inner]
    in_proj_b: torch.Tensor | None = None
    out_proj_b: torch.Tensor | None = None


@dataclass
class LMWeights:
    embedding: torch.Tensor         # [vocab, d_model]
    layer_norm: list                # n_layer x [d_model]
    mixers: list                    # n_layer x MixerWeights
    norm_f: torch.Tensor            # [d_model]
    lm_head: torch.Tensor           # [vocab, d_model] (the embedding itself when tied)


def _strip_prefix(sd: dict) -> dict:
    # Packages prefix the LM with "llm_backbone." (docs/MODEL.md section 8); plain checkpoints do not.
    if any(k.startswith("llm_backbone.") for k in sd):
        sd = {k[len("llm_backbone."):]: v for k, v in sd.items() if k.startswith("llm_backbone.")}
    return sd


def load_weights(sd: dict, cfg: Mamba2LMConfig, dtype=torch.float64) -> LMWeights:
    """Accepts mamba_ssm names (backbone.embedding.weight) and transformers names
    (backbone.embeddings.weight); all other keys are the same in both."""
    sd = _strip_prefix(dict(sd))

    def get(key, shape=None, optional=False):
        if key not in sd:
            if optional:
                return None
            raise KeyError(f"missing tensor {key}")
        t = sd[key].to(dtype)
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise ValueError(f"{key}: shape {tuple(t.shape)}, expected {tuple(shape)}")
        return t

    emb_key = "backbone.embeddings.weight" if "backbone.embeddings.weight" in sd else "backbone.embedding.weight"
    emb = get(emb_key, (cfg.vocab_size, cfg.d_model))
    d_in_proj = 2 * cfg.d_inner + 2 * cfg.ngroups * cfg.d_state + cfg.nheads
    norms, mixers = [], []
    for i in range(cfg.n_layer):
        p = f"backbone.layers.{i}."
        norms.append(get(p + "norm.weight", (cfg.d_model,)))
        m = p + "mixer."
        mixers.append(MixerWeights(
            in_proj=get(m + "in_proj.weight", (d_in_proj, cfg.d_model)),
            in_proj_b=get(m + "in_proj.bias", (d_in_proj,), optional=True),
            conv_w=get(m + "conv1d.weight", (cfg.conv_dim, 1, cfg.d_conv))[:, 0, :].contiguous(),
            conv_b=get(m + "conv1d.bias", (cfg.conv_dim,), optional=True),
            dt_bias=get(m + "dt_bias", (cfg.nheads,)),
            A_log=get(m + "A_log", (cfg.nheads,)),
            D=get(m + "D", (cfg.nheads,)),
            norm_w=get(m + "norm.weight", (cfg.d_inner,)),
            out_proj=get(m + "out_proj.weight", (cfg.d_model, cfg.d_inner)),
            out_proj_b=get(m + "out_proj.bias", (cfg.d_model,), optional=True),
        ))
    norm_f = get("backbone.norm_f.weight", (cfg.d_model,))
    if cfg.tie_embeddings or "lm_head.weight" not in sd:
        if not cfg.tie_embeddings:
            raise KeyError("untied model without lm_head.weight")
        lm_head = emb
    else:
        lm_head = get("lm_head.weight", (cfg.vocab_size, cfg.d_model))
    return LMWeights(embedding=emb, layer_norm=norms, mixers=mixers, norm_f=norm_f, lm_head=lm_head)


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------

def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def gated_rms_norm(y, z, w, eps, group_size):
    """Gate before the norm: g = y * silu(z), then RMS over each run of `group_size` channels."""
    g = y * F.silu(z)
    shape = g.shape
    g = g.reshape(*shape[:-1], shape[-1] // group_size, group_size)
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
    return g.reshape(shape) * w


def causal_depthwise_conv(xbc: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                          history: torch.Tensor | None = None) -> torch.Tensor:
    """xbc [T, C], w [C, K]; tap K-1 multiplies the current token. `history` is [C, K-1] of the
    columns before xbc (zeros at sequence start)."""
    T, C = xbc.shape
    K = w.shape[1]
    if history is None:
        history = xbc.new_zeros(C, K - 1)
    padded = torch.cat([history.t(), xbc], dim=0)          # [T + K - 1, C]
    out = xbc.new_zeros(T, C)
    for k in range(K):
        out = out + padded[k:k + T] * w[:, k]
    if b is not None:
        out = out + b
    return out


def _heads_of_groups(t: torch.Tensor, nheads: int) -> torch.Tensor:
    """[T, G, N] -> [T, H, N]; head h reads group h // (H / G)."""
    G = t.shape[1]
    return t.repeat_interleave(nheads // G, dim=1)


def ssm_scan_recurrent(x, dt, A, B, C, D, state=None):
    """Per-token recurrence. x [T,H,P], dt [T,H] (after softplus), A [H], B/C [T,G,N], D [H].
    Returns y [T,H,P] and the final state [H,P,N]."""
    T, H, P = x.shape
    N = B.shape[-1]
    Bh, Ch = _heads_of_groups(B, H), _heads_of_groups(C, H)
    S = x.new_zeros(H, P, N) if state is None else state.clone()
    ys = []
    for t in range(T):
        decay = torch.exp(dt[t] * A)                                       # [H]
        S = decay[:, None, None] * S + (dt[t][:, None] * x[t])[:, :, None] * Bh[t][:, None, :]
        ys.append(torch.einsum("hpn,hn->hp", S, Ch[t]) + D[:, None] * x[t])
    y = torch.stack(ys) if ys else x.new_zeros(0, H, P)
    return y, S


def ssm_scan_chunked(x, dt, A, B, C, D, chunk_size, state=None):
    """Chunked SSD form of the same scan (same arguments and results as ssm_scan_recurrent).

    The sequence is cut into chunks of Q tokens. With a = dt*A and cs its running sum inside a chunk:
      intra-chunk:  y_l += sum_{s<=l} (C_l . B_s) exp(cs_l - cs_s) dt_s x_s
      chunk state:  S_c  = sum_s exp(cs_end - cs_s) dt_s x_s (outer) B_s
      inter-chunk:  S_in[c+1] = exp(cs_end[c]) S_in[c] + S_c
      carried in:   y_l += exp(cs_l) C_l . S_in[c]
    Padding tokens get dt = 0: they decay nothing and add nothing, so the final state is exact.
    """
    T, H, P = x.shape
    N = B.shape[-1]
    Q = chunk_size
    Bh, Ch = _heads_of_groups(B, H), _heads_of_groups(C, H)
    S = x.new_zeros(H, P, N) if state is None else state.clone()
    if T == 0:
        return x.new_zeros(0, H, P), S
    nc = (T + Q - 1) // Q
    pad = nc * Q - T

    def chunks(t):
        t = torch.cat([t, t.new_zeros(pad, *t.shape[1:])], dim=0)
        return t.reshape(nc, Q, *t.shape[1:])

    xc, dtc, Bc, Cc = chunks(x), chunks(dt), chunks(Bh), chunks(Ch)     # [nc,Q,H,(P|N)], dt [nc,Q,H]
    a = dtc * A                                                          # [nc,Q,H], <= 0
    cs = torch.cumsum(a, dim=1)                                          # [nc,Q,H]

    # Intra-chunk (diagonal blocks). Entries with s > l are masked before exp so they cannot overflow.
    diff = cs[:, :, None, :] - cs[:, None, :, :]                         # [nc,l,s,H]
    causal = torch.tril(torch.ones(Q, Q, dtype=torch.bool))
    L = torch.exp(diff.masked_fill(~causal[None, :, :, None], -math.inf))
    CB = torch.einsum("clhn,cshn->clsh", Cc, Bc)
    y_diag = torch.einsum("clsh,csh,cshp->clhp", CB * L, dtc, xc)

    # Each chunk's own contribution to the state at its end.
    to_end = torch.exp(cs[:, -1:, :] - cs)                               # [nc,Q,H]
    S_chunk = torch.einsum("csh,cshp,cshn->chpn", to_end * dtc, xc, Bc)

    # Inter-chunk recurrence over chunk boundaries (nc steps, not T).
    S_in = []
    chunk_decay = torch.exp(cs[:, -1, :])                                # [nc,H]
    for c in range(nc):
        S_in.append(S)
        S = chunk_decay[c][:, None, None] * S + S_chunk[c]
    S_in = torch.stack(S_in)                                             # [nc,H,P,N]

    y_off = torch.einsum("clhn,chpn,clh->clhp", Cc, S_in, torch.exp(cs))
    y = (y_diag + y_off).reshape(nc * Q, H, P)[:T] + D[:, None] * x
    return y, S


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

@dataclass
class LayerCache:
    conv: torch.Tensor   # [conv_dim, d_conv]: the last d_conv pre-conv xBC columns, oldest first
    ssm: torch.Tensor    # [nheads, headdim, d_state]


@dataclass
class Taps:
    """Intermediate tensors of one forward, for stage-by-stage golden comparisons."""
    mixer_out: list = field(default_factory=list)           # per layer: hidden leaving the mixer [T, d_model]
    hidden_after_layer: list = field(default_factory=list)  # per layer: residual stream hidden + residual
    final_norm_out: torch.Tensor | None = None               # RMSNorm(hidden + residual) * norm_f


class Mamba2LM:
    def __init__(self, cfg: Mamba2LMConfig, weights: LMWeights, dtype=torch.float64):
        self.cfg = cfg
        self.w = weights
        self.dtype = dtype

    @classmethod
    def from_state_dict(cls, cfg: Mamba2LMConfig, sd: dict, dtype=torch.float64) -> "Mamba2LM":
        return cls(cfg, load_weights(sd, cfg, dtype), dtype)

    @classmethod
    def from_transformers_dir(cls, folder: str, dtype=torch.float64,
                              norm_group_size: int | None = None) -> "Mamba2LM":
        with open(f"{folder}/config.json") as f:
            cfg = Mamba2LMConfig.from_transformers(json.load(f), norm_group_size)
        return cls.from_state_dict(cfg, read_safetensors(f"{folder}/model.safetensors"), dtype)

    # ---- mixer -----------------------------------------------------------------------------------

    def _split_in_proj(self, m: MixerWeights, u: torch.Tensor):
        c = self.cfg
        zxbcdt = u @ m.in_proj.t()
        if m.in_proj_b is not None:
            zxbcdt = zxbcdt + m.in_proj_b
        z = zxbcdt[:, :c.d_inner]
        xbc = zxbcdt[:, c.d_inner:c.d_inner + c.conv_dim]
        dt = zxbcdt[:, c.d_inner + c.conv_dim:]
        return z, xbc, dt

    def _ssm_inputs(self, m: MixerWeights, xbc_act: torch.Tensor, dt_raw: torch.Tensor):
        c = self.cfg
        T = xbc_act.shape[0]
        x = xbc_act[:, :c.d_inner].reshape(T, c.nheads, c.headdim)
        gn = c.ngroups * c.d_state
        B = xbc_act[:, c.d_inner:c.d_inner + gn].reshape(T, c.ngroups, c.d_state)
        C = xbc_act[:, c.d_inner + gn:].reshape(T, c.ngroups, c.d_state)
        dt = F.softplus(dt_raw + m.dt_bias)
        lo, hi = c.dt_limit
        if lo > 0.0 or hi < math.inf:
            dt = dt.clamp(lo, hi)
        A = -torch.exp(m.A_log)
        return x, dt, A, B, C

    def _mixer_out(self, m: MixerWeights, y: torch.Tensor, z: torch.Tensor):
        c = self.cfg
        g = gated_rms_norm(y.reshape(y.shape[0], c.d_inner), z, m.norm_w, c.norm_eps, c.group_size)
        out = g @ m.out_proj.t()
        if m.out_proj_b is not None:
            out = out + m.out_proj_b
        return out

    def mixer_forward(self, i: int, u: torch.Tensor, scan: str = "chunked"):
        """Whole-sequence mixer from zero state. Returns out [T, d_model] and the layer's cache."""
        c, m = self.cfg, self.w.mixers[i]
        z, xbc, dt_raw = self._split_in_proj(m, u)
        xbc_act = F.silu(causal_depthwise_conv(xbc, m.conv_w, m.conv_b))
        x, dt, A, B, C = self._ssm_inputs(m, xbc_act, dt_raw)
        if scan == "chunked":
            y, S = ssm_scan_chunked(x, dt, A, B, C, m.D, c.chunk_size)
        elif scan == "recurrent":
            y, S = ssm_scan_recurrent(x, dt, A, B, C, m.D)
        else:
            raise ValueError(scan)
        hist = torch.cat([xbc.new_zeros(c.d_conv, c.conv_dim), xbc], dim=0)[-c.d_conv:]
        return self._mixer_out(m, y, z), LayerCache(conv=hist.t().contiguous(), ssm=S)

    def mixer_step(self, i: int, u: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """One token (u [1, d_model]) against the layer's cache, which is updated in place."""
        c, m = self.cfg, self.w.mixers[i]
        z, xbc, dt_raw = self._split_in_proj(m, u)
        cache.conv = torch.cat([cache.conv[:, 1:], xbc.t()], dim=1)
        conv = (cache.conv * m.conv_w).sum(-1)
        if m.conv_b is not None:
            conv = conv + m.conv_b
        xbc_act = F.silu(conv)[None, :]
        x, dt, A, B, C = self._ssm_inputs(m, xbc_act, dt_raw)
        y, cache.ssm = ssm_scan_recurrent(x, dt, A, B, C, m.D, cache.ssm)
        return self._mixer_out(m, y, z)

    # ---- LM --------------------------------------------------------------------------------------

    def forward(self, ids, scan: str = "chunked", taps: Taps | None = None):
        """Full forward from empty state. Returns logits [T, vocab] and the per-layer caches."""
        c = self.cfg
        ids = torch.as_tensor(list(ids), dtype=torch.long)
        hidden = self.w.embedding[ids]
        residual = torch.zeros_like(hidden)
        caches = []
        for i in range(c.n_layer):
            residual = hidden + residual
            x = rms_norm(residual, self.w.layer_norm[i], c.norm_eps)
            hidden, cache = self.mixer_forward(i, x, scan)
            caches.append(cache)
            if taps is not None:
                taps.mixer_out.append(hidden)
                taps.hidden_after_layer.append(hidden + residual)
        final = rms_norm(hidden + residual, self.w.norm_f, c.norm_eps)
        if taps is not None:
            taps.final_norm_out = final
        return final @ self.w.lm_head.t(), caches

    def empty_cache(self) -> list:
        c = self.cfg
        return [LayerCache(conv=torch.zeros(c.conv_dim, c.d_conv, dtype=self.dtype),
                           ssm=torch.zeros(c.nheads, c.headdim, c.d_state, dtype=self.dtype))
                for _ in range(c.n_layer)]

    def step(self, token: int, caches: list) -> torch.Tensor:
        """Decode one token; returns logits [vocab] and advances `caches`."""
        c = self.cfg
        hidden = self.w.embedding[torch.tensor([int(token)])]
        residual = torch.zeros_like(hidden)
        for i in range(c.n_layer):
            residual = hidden + residual
            x = rms_norm(residual, self.w.layer_norm[i], c.norm_eps)
            hidden = self.mixer_step(i, x, caches[i])
        final = rms_norm(hidden + residual, self.w.norm_f, c.norm_eps)
        return (final @ self.w.lm_head.t())[0]

    def prefill(self, ids, scan: str = "chunked"):
        """Returns (last-position logits or None for an empty prompt, caches)."""
        ids = list(ids)
        if not ids:
            return None, self.empty_cache()
        logits, caches = self.forward(ids, scan)
        return logits[-1], caches

    def greedy(self, ids, n_new: int, scan: str = "chunked"):
        """Greedy decoding through prefill + decode steps, never stopping early.
        Returns the new ids and the logits that chose each of them."""
        logits, caches = self.prefill(ids, scan)
        out, chosen_from = [], []
        for _ in range(n_new):
            tok = int(torch.argmax(logits))
            out.append(tok)
            chosen_from.append(logits)
            logits = self.step(tok, caches)
        return out, chosen_from


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.double(), b.double()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))
