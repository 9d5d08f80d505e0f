"""Independent PyTorch reference of the whole ML-Mamba pipeline (docs/MODEL.md, docs/model-format.md).

Written from the model description, not from any existing implementation, so that it can check both
the public libraries (timm, transformers) and the C++ engine. It runs in float64 by default: its
golden values are meant to be "the exact answer" up to rounding.

Pipeline (batch 1, sequence-major tensors [rows, width]):
  picture -> convert("RGB") -> square (resize-naive | letterbox | resize-crop; PIL bicubic, antialiased)
          -> /255 -> per encoder (x - mean) / std                                      [3, S, S] each
  each ViT (timm layout): patch conv + pos_embed, prefix tokens (cls, registers) prepended WITHOUT
          position embedding, pre-norm blocks 0..feature_layer, prefix dropped, no final norm
                                                                                       [grid^2, dim]
  concat on channels in config order -> mlp.0 Linear + exact GELU                     [grid^2, out_dim]
  MSC: n_layer x { h += BiMamba2(h); h += SwiGLU(LayerNorm(h)) } -> LayerNorm norm_f  [grid^2, out_dim]
  projector: Linear + GELU, Linear + GELU, Linear                                       [grid^2, d_model]
  Mamba-2 LM (mamba2_ref) on [visual rows ; text embeddings] -> logits

The Mamba-2 pieces (causal conv, both scans, gated RMSNorm, the LM itself) come from mamba2_ref.py;
this file only adds the bidirectional wiring of the connector and the embedding-input LM forward.
Only torch, PIL and (for text) the `tokenizers` package are needed.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mamba2_ref import (  # noqa: E402
    Mamba2LM, Mamba2LMConfig, causal_depthwise_conv, gated_rms_norm, load_weights, read_safetensors,
    rel_err, rms_norm, ssm_scan_chunked, ssm_scan_recurrent,
)

__all__ = [
    "EncoderConfig", "MSCConfig", "PackageConfig", "MLMambaRef", "Conversation", "to_square",
    "letterbox_fill", "preprocess", "zephyr_turn", "rel_err", "read_safetensors",
]


# --------------------------------------------------------------------------------------------------
# Configuration (the package's config.json; every field required, no defaults)
# --------------------------------------------------------------------------------------------------

class _Fields:
    """Reads required fields of one JSON object, naming the object in every error."""

    def __init__(self, obj: dict, where: str):
        if not isinstance(obj, dict):
            raise ValueError(f"{where} is not an object")
        self.obj, self.where = obj, where

    def __call__(self, key, kind=None):
        if key not in self.obj:
            raise KeyError(f"{self.where} lacks '{key}'")
        v = self.obj[key]
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"{self.where}.{key} is not an integer: {v!r}")
        if kind is bool and not isinstance(v, bool):
            raise ValueError(f"{self.where}.{key} is not a boolean: {v!r}")
        return v


@dataclass
class EncoderConfig:
    name: str
    patch_size: int
    dim: int
    heads: int
    mlp_hidden: int
    class_token: bool
    register_tokens: int
    layer_scale: bool
    feature_layer: int
    norm_eps: float
    mean: tuple
    std: tuple

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def n_prefix(self) -> int:
        return int(self.class_token) + self.register_tokens

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "EncoderConfig":
        f = _Fields(d, where)
        c = cls(name=str(f("name")), patch_size=f("patch_size", int), dim=f("dim", int),
                heads=f("heads", int), mlp_hidden=f("mlp_hidden", int),
                class_token=f("class_token", bool), register_tokens=f("register_tokens", int),
                layer_scale=f("layer_scale", bool), feature_layer=f("feature_layer", int),
                norm_eps=float(f("norm_eps")), mean=tuple(float(v) for v in f("mean")),
                std=tuple(float(v) for v in f("std")))
        if c.dim % c.heads:
            raise ValueError(f"{where}: dim {c.dim} is not a multiple of heads {c.heads}")
        if len(c.mean) != 3 or len(c.std) != 3:
            raise ValueError(f"{where}: mean and std need 3 values")
        return c


@dataclass
class MSCConfig:
    """The Mamba-2 Scan Connector (bidirectional_mamba) at width d_model = mlp.out_dim."""
    n_layer: int
    d_model: int
    d_state: int
    headdim: int
    ngroups: int
    expand: int
    d_conv: int
    chunk_size: int
    norm_eps: float
    layer_norm_eps: float

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
    def d_in_proj(self) -> int:
        return 2 * self.d_inner + 2 * self.ngroups * self.d_state + self.nheads

    @property
    def group_size(self) -> int:
        # The connector is mamba_ssm code: its gated RMSNorm normalises each group on its own.
        return self.d_inner // self.ngroups


@dataclass
class PackageConfig:
    name: str
    llm: Mamba2LMConfig
    max_sequence_length: int
    tokenizer_file: str
    eos_token_id: int
    template: str
    max_new_tokens: int
    # image half (None for a text-only package)
    image_size: int | None = None
    resize: str | None = None
    encoders: list = field(default_factory=list)
    mlp_out_dim: int | None = None
    msc: MSCConfig | None = None
    projector_hidden: int | None = None

    @property
    def has_vision(self) -> bool:
        return bool(self.encoders)

    @property
    def grid(self) -> int:
        grids = {self.image_size // e.patch_size for e in self.encoders}
        if len(grids) != 1:
            raise ValueError(f"encoders give different grids {sorted(grids)}")
        return grids.pop()

    @property
    def visual_rows(self) -> int:
        return self.grid * self.grid if self.has_vision else 0

    @classmethod
    def from_dict(cls, d: dict) -> "PackageConfig":
        top = _Fields(d, "config")
        if top("format") != "mlmamba-package":
            raise ValueError(f"format {d.get('format')!r} is not mlmamba-package")
        if top("format_version", int) != 1:
            raise ValueError(f"format_version {d['format_version']} is not 1")
        lf = _Fields(top("llm_backbone"), "llm_backbone")
        llm = Mamba2LMConfig(
            d_model=lf("d_model", int), n_layer=lf("n_layer", int), vocab_size=lf("vocab_size", int),
            d_state=lf("d_state", int), d_conv=lf("d_conv", int), expand=lf("expand", int),
            headdim=lf("headdim", int), ngroups=lf("ngroups", int), chunk_size=lf("chunk_size", int),
            norm_eps=float(lf("norm_eps")), tie_embeddings=True)
        # The package's LM is mamba_ssm code: per-group gated norm (docs/model-format.md).
        llm.norm_group_size = llm.d_inner // llm.ngroups
        llm.validate()
        tf = _Fields(top("tokenizer"), "tokenizer")
        c = cls(name=str(top("name")), llm=llm, max_sequence_length=lf("max_sequence_length", int),
                tokenizer_file=str(tf("file")), eos_token_id=tf("eos_token_id", int),
                template=str(_Fields(top("prompt"), "prompt")("template")),
                max_new_tokens=_Fields(top("generation"), "generation")("max_new_tokens", int))
        if c.template not in ("zephyr", "none"):
            raise ValueError(f"prompt.template {c.template!r} is not known")
        if "vision_backbone" not in d:
            return c
        imf = _Fields(top("image"), "image")
        c.image_size, c.resize = imf("size", int), str(imf("resize"))
        if c.resize not in ("resize-naive", "letterbox", "resize-crop"):
            raise ValueError(f"image.resize {c.resize!r} is not known")
        encs = _Fields(top("vision_backbone"), "vision_backbone")("encoders")
        if not encs:
            raise ValueError("vision_backbone.encoders is empty")
        c.encoders = [EncoderConfig.from_dict(e, f"vision_backbone.encoders[{i}]") for i, e in enumerate(encs)]
        c.mlp_out_dim = _Fields(top("mlp"), "mlp")("out_dim", int)
        bf = _Fields(top("bidirectional_mamba"), "bidirectional_mamba")
        c.msc = MSCConfig(n_layer=bf("n_layer", int), d_model=c.mlp_out_dim, d_state=bf("d_state", int),
                          headdim=bf("headdim", int), ngroups=bf("ngroups", int), expand=bf("expand", int),
                          d_conv=bf("d_conv", int), chunk_size=bf("chunk_size", int),
                          norm_eps=float(bf("norm_eps")), layer_norm_eps=float(bf("layer_norm_eps")))
        c.projector_hidden = _Fields(top("projector"), "projector")("hidden_dim", int)
        _ = c.grid  # every encoder must give the same grid
        return c


# --------------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------------

def letterbox_fill(mean) -> tuple:
    """Pad colour of `letterbox`: the first encoder's mean as 8-bit values, truncated (int(m * 255)),
    which is what the Prismatic code the release derives from does (0.5 -> 127, not 128)."""
    return tuple(int(m * 255) for m in mean)


def to_square(img, size: int, mode: str, fill=(0, 0, 0)):
    """PIL picture (RGB) -> size x size PIL picture. PIL's BICUBIC resize always antialiases (its
    filter support widens with the scale factor), which is the arithmetic the release saw.

    letterbox: floor((m - w) / 2) columns on BOTH sides and floor((m - h) / 2) rows on both sides,
      m = max(w, h) (so an odd difference leaves the padded picture one pixel short of square; the
      resize then stretches it), filled with `fill`, then resized to the square.
    resize-crop: shorter side to `size` (longer side int(size * long / short)), then a centre crop
      whose offset is round((side - size) / 2) with Python's round (half to even).
    """
    from PIL import Image
    bicubic = getattr(Image, "Resampling", Image).BICUBIC
    if mode == "resize-naive":
        return img.resize((size, size), bicubic)
    if mode == "letterbox":
        w, h = img.size
        m = max(w, h)
        pw, ph = (m - w) // 2, (m - h) // 2
        canvas = Image.new("RGB", (w + 2 * pw, h + 2 * ph), tuple(int(v) for v in fill))
        canvas.paste(img, (pw, ph))
        return canvas.resize((size, size), bicubic)
    if mode == "resize-crop":
        w, h = img.size
        if w <= h:
            nw, nh = size, int(size * h / w)
        else:
            nw, nh = int(size * w / h), size
        r = img.resize((nw, nh), bicubic)
        left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
        return r.crop((left, top, left + size, top + size))
    raise ValueError(f"resize mode {mode!r} is not known")


def preprocess(img, cfg: PackageConfig, dtype=torch.float64) -> dict:
    """PIL picture -> {encoder name: [3, S, S]} normalised tensors (all encoders see the same pixels)."""
    sq = to_square(img.convert("RGB"), cfg.image_size, cfg.resize, letterbox_fill(cfg.encoders[0].mean))
    pix = torch.from_numpy(np.asarray(sq, dtype=np.float64).copy()).permute(2, 0, 1) / 255.0   # [3,S,S]
    out = {}
    for e in cfg.encoders:
        mean = torch.tensor(e.mean, dtype=torch.float64)[:, None, None]
        std = torch.tensor(e.std, dtype=torch.float64)[:, None, None]
        out[e.name] = ((pix - mean) / std).to(dtype)
    return out


# --------------------------------------------------------------------------------------------------
# Vision transformer (timm layout)
# --------------------------------------------------------------------------------------------------

class ViTEncoder:
    def __init__(self, cfg: EncoderConfig, grid: int, sd: dict, dtype=torch.float64):
        self.cfg, self.grid = cfg, grid
        pre = f"vision_backbone.{cfg.name}."
        D, p = cfg.dim, cfg.patch_size

        def get(key, shape):
            if pre + key not in sd:
                raise KeyError(f"missing tensor {pre + key}")
            t = sd[pre + key].to(dtype)
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"{pre + key}: shape {tuple(t.shape)}, expected {tuple(shape)}")
            return t

        self.patch_w = get("patch_embed.proj.weight", (D, 3, p, p))
        self.patch_b = get("patch_embed.proj.bias", (D,))
        self.pos = get("pos_embed", (1, grid * grid, D))[0]
        prefix = []
        if cfg.class_token:
            prefix.append(get("cls_token", (1, 1, D))[0])
        if cfg.register_tokens:
            prefix.append(get("reg_token", (1, cfg.register_tokens, D))[0])
        self.prefix = torch.cat(prefix) if prefix else torch.zeros(0, D, dtype=dtype)
        self.blocks = []
        for j in range(cfg.feature_layer + 1):   # blocks past the feature layer are never read
            b = f"blocks.{j}."
            blk = {
                "n1w": get(b + "norm1.weight", (D,)), "n1b": get(b + "norm1.bias", (D,)),
                "qkv_w": get(b + "attn.qkv.weight", (3 * D, D)), "qkv_b": get(b + "attn.qkv.bias", (3 * D,)),
                "proj_w": get(b + "attn.proj.weight", (D, D)), "proj_b": get(b + "attn.proj.bias", (D,)),
                "n2w": get(b + "norm2.weight", (D,)), "n2b": get(b + "norm2.bias", (D,)),
                "fc1_w": get(b + "mlp.fc1.weight", (cfg.mlp_hidden, D)), "fc1_b": get(b + "mlp.fc1.bias", (cfg.mlp_hidden,)),
                "fc2_w": get(b + "mlp.fc2.weight", (D, cfg.mlp_hidden)), "fc2_b": get(b + "mlp.fc2.bias", (D,)),
            }
            if cfg.layer_scale:
                blk["ls1"] = get(b + "ls1.gamma", (D,))
                blk["ls2"] = get(b + "ls2.gamma", (D,))
            self.blocks.append(blk)

    def attention(self, x: torch.Tensor, blk: dict) -> torch.Tensor:
        T = x.shape[0]
        H, hd = self.cfg.heads, self.cfg.head_dim
        qkv = (x @ blk["qkv_w"].t() + blk["qkv_b"]).reshape(T, 3, H, hd).permute(1, 2, 0, 3)   # [3,H,T,hd]
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)                  # [H,T,T]
        o = (att @ v).permute(1, 0, 2).reshape(T, H * hd)
        return o @ blk["proj_w"].t() + blk["proj_b"]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [3, S, S] (normalised) -> features [grid*grid, dim] of block feature_layer."""
        c = self.cfg
        # A stride-p convolution is a linear map of each p x p patch; rows/cols past grid*p are unseen.
        x = F.conv2d(pixels[None], self.patch_w, self.patch_b, stride=c.patch_size)[0]       # [D,g,g]
        x = x.flatten(1).t() + self.pos                                                     # [g*g, D]
        x = torch.cat([self.prefix, x])
        for blk in self.blocks:
            a = self.attention(F.layer_norm(x, (c.dim,), blk["n1w"], blk["n1b"], c.norm_eps), blk)
            x = x + (blk["ls1"] * a if c.layer_scale else a)
            h = F.layer_norm(x, (c.dim,), blk["n2w"], blk["n2b"], c.norm_eps)
            m = F.gelu(h @ blk["fc1_w"].t() + blk["fc1_b"]) @ blk["fc2_w"].t() + blk["fc2_b"]   # exact GELU
            x = x + (blk["ls2"] * m if c.layer_scale else m)
        return x[c.n_prefix:]


# --------------------------------------------------------------------------------------------------
# MSC connector (bidirectional Mamba-2 + SwiGLU)
# --------------------------------------------------------------------------------------------------

def _direction(c: MSCConfig, xbc, dt_raw, z, conv_w, conv_b, dt_bias, A_log, D, norm_w, scan):
    """One direction of BiMamba2 over a sequence already in its scan order; gated-normed output."""
    T = xbc.shape[0]
    xbc_act = F.silu(causal_depthwise_conv(xbc, conv_w, conv_b))
    gn = c.ngroups * c.d_state
    x = xbc_act[:, :c.d_inner].reshape(T, c.nheads, c.headdim)
    B = xbc_act[:, c.d_inner:c.d_inner + gn].reshape(T, c.ngroups, c.d_state)
    C = xbc_act[:, c.d_inner + gn:].reshape(T, c.ngroups, c.d_state)
    dt = F.softplus(dt_raw + dt_bias)
    A = -torch.exp(A_log)
    if scan == "chunked":
        y, _ = ssm_scan_chunked(x, dt, A, B, C, D, c.chunk_size)
    elif scan == "recurrent":
        y, _ = ssm_scan_recurrent(x, dt, A, B, C, D)
    else:
        raise ValueError(scan)
    return gated_rms_norm(y.reshape(T, c.d_inner), z, norm_w, c.norm_eps, c.group_size)


def bimamba2(c: MSCConfig, w: dict, h: torch.Tensor, scan: str = "chunked") -> torch.Tensor:
    zxbcdt = h @ w["in_proj"].t()                                   # shared by both directions
    z = zxbcdt[:, :c.d_inner]
    xbc = zxbcdt[:, c.d_inner:c.d_inner + c.conv_dim]
    dt_raw = zxbcdt[:, c.d_inner + c.conv_dim:]
    y_f = _direction(c, xbc, dt_raw, z, w["conv_w"], w["conv_b"], w["dt_bias"], w["A_log"], w["D"],
                     w["norm_w"], scan)
    flip = lambda t: torch.flip(t, dims=[0])  # noqa: E731
    y_b = flip(_direction(c, flip(xbc), flip(dt_raw), flip(z), w["conv_b_w"], w["conv_b_b"],
                          w["dt_bias_b"], w["A_log_b"], w["D_b"], w["norm_w"], scan))
    return ((y_f + y_b) / 2) @ w["out_proj"].t()


def load_msc(sd: dict, c: MSCConfig, dtype=torch.float64) -> dict:
    def get(key, shape):
        if key not in sd:
            raise KeyError(f"missing tensor {key}")
        t = sd[key].to(dtype)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{key}: shape {tuple(t.shape)}, expected {tuple(shape)}")
        return t

    d, H = c.d_model, c.nheads
    layers = []
    for l in range(c.n_layer):
        p = f"bidirectional_mamba.layers.{l}."
        m = p + "mixer."
        layers.append({
            "in_proj": get(m + "in_proj.weight", (c.d_in_proj, d)),
            "out_proj": get(m + "out_proj.weight", (d, c.d_inner)),
            "conv_w": get(m + "conv1d.weight", (c.conv_dim, 1, c.d_conv))[:, 0, :].contiguous(),
            "conv_b": get(m + "conv1d.bias", (c.conv_dim,)),
            "conv_b_w": get(m + "conv1d_b.weight", (c.conv_dim, 1, c.d_conv))[:, 0, :].contiguous(),
            "conv_b_b": get(m + "conv1d_b.bias", (c.conv_dim,)),
            "dt_bias": get(m + "dt_bias", (H,)), "A_log": get(m + "A_log", (H,)), "D": get(m + "D", (H,)),
            "dt_bias_b": get(m + "dt_bias_b", (H,)), "A_log_b": get(m + "A_log_b", (H,)),
            "D_b": get(m + "D_b", (H,)),
            "norm_w": get(m + "norm.weight", (c.d_inner,)),
            "ln_w": get(p + "norm.weight", (d,)), "ln_b": get(p + "norm.bias", (d,)),
            **{f"w{i}": get(p + f"mlp.w{i}.weight", (d, d)) for i in (1, 2, 3)},
            **{f"b{i}": get(p + f"mlp.w{i}.bias", (d,)) for i in (1, 2, 3)},
        })
    return {"layers": layers, "norm_f_w": get("bidirectional_mamba.norm_f.weight", (d,)),
            "norm_f_b": get("bidirectional_mamba.norm_f.bias", (d,))}


def msc_forward(c: MSCConfig, w: dict, h: torch.Tensor, scan: str = "chunked") -> torch.Tensor:
    for L in w["layers"]:
        h = h + bimamba2(c, L, h, scan)                             # no norm before the mixer
        u = F.layer_norm(h, (c.d_model,), L["ln_w"], L["ln_b"], c.layer_norm_eps)
        h = h + (F.silu(u @ L["w1"].t() + L["b1"]) * (u @ L["w2"].t() + L["b2"])) @ L["w3"].t() + L["b3"]
    return F.layer_norm(h, (c.d_model,), w["norm_f_w"], w["norm_f_b"], c.layer_norm_eps)


# --------------------------------------------------------------------------------------------------
# Language model fed with embeddings
# --------------------------------------------------------------------------------------------------

class VisualMamba2LM(Mamba2LM):
    """mamba2_ref's LM with an entry point that takes ready-made input rows (visual rows + text
    embeddings); decoding steps are mamba2_ref's own."""

    def forward_embeds(self, hidden: torch.Tensor, scan: str = "chunked"):
        c = self.cfg
        residual = torch.zeros_like(hidden)
        caches = []
        for i in range(c.n_layer):
            residual = hidden + residual
            hidden, cache = self.mixer_forward(i, rms_norm(residual, self.w.layer_norm[i], c.norm_eps), scan)
            caches.append(cache)
        final = rms_norm(hidden + residual, self.w.norm_f, c.norm_eps)
        return final @ self.w.lm_head.t(), caches


# --------------------------------------------------------------------------------------------------
# Prompt template
# --------------------------------------------------------------------------------------------------

def zephyr_turn(message: str, first: bool) -> str:
    """Text of one user turn up to the start of the answer (docs/MODEL.md section 5). Only the first turn's
    message is stripped, as in the released REPL."""
    if first:
        return "<|user|>\n" + message.strip() + "<|endoftext|>\n<|assistant|>\n"
    return "\n<|user|>\n" + message + "<|endoftext|>\n<|assistant|>\n"


# --------------------------------------------------------------------------------------------------
# Whole package
# --------------------------------------------------------------------------------------------------

class MLMambaRef:
    def __init__(self, cfg: PackageConfig, sd: dict, dtype=torch.float64, tokenizer=None):
        self.cfg, self.dtype = cfg, dtype
        self.lm = VisualMamba2LM(cfg.llm, load_weights(sd, cfg.llm, dtype), dtype)
        self.tokenizer = tokenizer
        if not cfg.has_vision:
            return
        g = cfg.grid
        self.encoders = [ViTEncoder(e, g, sd, dtype) for e in cfg.encoders]
        in_dim = sum(e.dim for e in cfg.encoders)

        def get(key, shape):
            if key not in sd:
                raise KeyError(f"missing tensor {key}")
            t = sd[key].to(dtype)
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"{key}: shape {tuple(t.shape)}, expected {tuple(shape)}")
            return t

        o, ph, dm = cfg.mlp_out_dim, cfg.projector_hidden, cfg.llm.d_model
        self.mlp_w, self.mlp_b = get("mlp.0.weight", (o, in_dim)), get("mlp.0.bias", (o,))
        self.msc = load_msc(sd, cfg.msc, dtype)
        self.proj = [(get(f"projector.projector.{i}.weight", s), get(f"projector.projector.{i}.bias", s[:1]))
                     for i, s in ((0, (ph, o)), (2, (dm, ph)), (4, (dm, dm)))]

    @classmethod
    def load(cls, folder: str, dtype=torch.float64, with_tokenizer: bool = True) -> "MLMambaRef":
        with open(os.path.join(folder, "config.json")) as f:
            cfg = PackageConfig.from_dict(json.load(f))
        sd = read_safetensors(os.path.join(folder, "model.safetensors"))
        tok = None
        if with_tokenizer:
            from tokenizers import Tokenizer
            tok = Tokenizer.from_file(os.path.join(folder, cfg.tokenizer_file))
        return cls(cfg, sd, dtype, tok)

    # ---- image half ------------------------------------------------------------------------------

    def encode_image(self, img, taps: dict | None = None, msc_scan: str = "chunked") -> torch.Tensor:
        """PIL picture -> visual rows [grid*grid, d_model]. `taps` (a dict) receives every stage."""
        pre = preprocess(img, self.cfg, self.dtype)
        feats = {enc.cfg.name: enc.forward(pre[enc.cfg.name]) for enc in self.encoders}
        return self.rows_from_features(feats, taps, msc_scan, pre)

    def rows_from_features(self, feats: dict, taps=None, msc_scan="chunked", pre=None) -> torch.Tensor:
        cat = torch.cat([feats[e.name] for e in self.cfg.encoders], dim=1)      # config order
        mlp = F.gelu(cat @ self.mlp_w.t() + self.mlp_b)
        msc = msc_forward(self.cfg.msc, self.msc, mlp, msc_scan)
        (w0, b0), (w2, b2), (w4, b4) = self.proj
        rows = F.gelu(F.gelu(msc @ w0.t() + b0) @ w2.t() + b2) @ w4.t() + b4
        if taps is not None:
            taps.update(preprocessed=pre, features=feats, mlp_out=mlp, msc_out=msc, projector_out=rows)
        return rows

    # ---- language model --------------------------------------------------------------------------

    def encode_text(self, text: str) -> list:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def inputs(self, visual: torch.Tensor | None, ids) -> torch.Tensor:
        emb = self.lm.w.embedding[torch.as_tensor(list(ids), dtype=torch.long)]
        return emb if visual is None else torch.cat([visual.to(self.dtype), emb])

    def logits(self, visual, ids, scan: str = "chunked") -> torch.Tensor:
        """All-position logits of [visual rows ; ids] from empty state."""
        return self.lm.forward_embeds(self.inputs(visual, ids), scan)[0]

    def prefill(self, visual, ids, scan: str = "chunked"):
        logits, caches = self.lm.forward_embeds(self.inputs(visual, ids), scan)
        return logits[-1], caches

    def greedy(self, visual, ids, n_new: int, stop_at_eos: bool = False, scan: str = "chunked"):
        """Argmax decoding through prefill + decode steps. Returns (new ids, the logits that chose
        each, the caches after feeding every returned id but the last). With stop_at_eos the eos id
        ends the answer (and is returned as its last element)."""
        logits, caches = self.prefill(visual, ids, scan)
        out, chosen_from = [], []
        for n in range(n_new):
            tok = int(torch.argmax(logits))
            out.append(tok)
            chosen_from.append(logits)
            if (stop_at_eos and tok == self.cfg.eos_token_id) or n == n_new - 1:
                break
            logits = self.lm.step(tok, caches)
        return out, chosen_from, caches


class Conversation:
    """Multi-turn chat the way the released REPL runs it: every turn re-runs the whole conversation
    (image included) from empty state. History ids = each turn's template text + the reply ids +
    eos (a reply is stored as reply + "<|endoftext|>", whether it stopped at eos or at max tokens)."""

    def __init__(self, ref: MLMambaRef, image=None):
        self.ref = ref
        self.visual = ref.encode_image(image) if image is not None else None
        self.history: list = []
        self.turns = 0

    def turn_ids(self, message: str) -> list:
        if self.ref.cfg.template == "zephyr":
            return self.ref.encode_text(zephyr_turn(message, self.turns == 0))
        return self.ref.encode_text(message)

    def ask(self, message: str, max_new: int | None = None) -> tuple:
        """Returns (reply ids without eos, the full prompt ids that were run)."""
        max_new = self.ref.cfg.max_new_tokens if max_new is None else max_new
        prompt = self.history + self.turn_ids(message)
        new, _, _ = self.ref.greedy(self.visual, prompt, max_new, stop_at_eos=True)
        eos = self.ref.cfg.eos_token_id
        reply = new[:-1] if new and new[-1] == eos else new
        self.history = prompt + reply + [eos]
        self.turns += 1
        return reply, prompt

    def reply_text(self, reply: list) -> str:
        return self.ref.tokenizer.decode(reply, skip_special_tokens=False)
