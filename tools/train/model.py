"""Trainable PyTorch ML-Mamba (docs/model-format.md, docs/MODEL.md) for GPU training.

The module tree mirrors the package's tensor names, so `model.state_dict()` IS the package (minus
nothing, plus nothing): `vision_backbone.<encoder>.blocks.0.attn.qkv.weight`, `mlp.0.weight`,
`bidirectional_mamba.layers.0.mixer.conv1d_b.weight`, `projector.projector.2.bias`,
`llm_backbone.backbone.layers.3.mixer.A_log`, ... Export is therefore a dump (see `package_tensors`).

It computes what tools/reference/mlmamba_ref.py computes (tools/train/test_model.py checks the logits
of an exported package against it), but batched and fast:
- ViT attention through scaled_dot_product_attention on a fused qkv projection;
- the Mamba-2 scan in the chunked SSD form with batched einsums (loops only over chunks, never tokens);
- both directions of the connector's BiMamba2 scanned in one call (stacked on the batch axis);
- logits only at the positions a loss or a decoder needs (the tied head is the largest matrix).
Numerically sensitive parts (conv + SiLU, softplus, the scan, the gated RMSNorm, every RMSNorm and the
residual stream) run in float32 even under bf16 autocast; the linear layers take autocast's bf16.
Works with torch 1.13 (CPU, tests) and torch 2.x (GPU training).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

_SDPA = getattr(F, "scaled_dot_product_attention", None)

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIGLIP_MEAN, SIGLIP_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def _no_autocast(device_type: str):
    # torch 1.13's autocast needs a dtype it supports even when disabled.
    if device_type == "cuda":
        return torch.autocast("cuda", enabled=False)
    return torch.autocast("cpu", enabled=False)


# --------------------------------------------------------------------------------------------------
# Vision transformer (timm layout: patch_embed.proj, pos_embed, cls_token, reg_token, blocks.{j}.*)
# --------------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch, bias=True)

    def forward(self, x):
        # A stride-p convolution sees floor(S / p) patches per side; the remaining pixels are unseen,
        # as in the engine.
        return self.proj(x).flatten(2).transpose(1, 2)                 # [B, g*g, D]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)                  # rows [q | k | v]
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x):
        B, T, D = x.shape
        H = self.heads
        qkv = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)   # [3, B, H, T, hd]
        q, k, v = qkv[0], qkv[1], qkv[2]
        if _SDPA is not None:
            o = _SDPA(q, k, v)
        else:
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H), dim=-1)
            o = att @ v
        return self.proj(o.transpose(1, 2).reshape(B, T, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))                          # exact (erf) GELU


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x):
        return x * self.gamma


class ViTBlock(nn.Module):
    def __init__(self, e: dict):
        super().__init__()
        d = e["dim"]
        self.norm1 = nn.LayerNorm(d, eps=e["norm_eps"])
        self.attn = Attention(d, e["heads"])
        self.norm2 = nn.LayerNorm(d, eps=e["norm_eps"])
        self.mlp = Mlp(d, e["mlp_hidden"])
        if e["layer_scale"]:
            # Small LayerScale start: each block begins close to the identity, which lets a
            # from-scratch ViT take a large learning rate.
            self.ls1 = LayerScale(d, 0.1)
            self.ls2 = LayerScale(d, 0.1)
        else:
            self.ls1 = self.ls2 = None

    def forward(self, x):
        a = self.attn(self.norm1(x))
        x = x + (self.ls1(a) if self.ls1 is not None else a)
        m = self.mlp(self.norm2(x))
        return x + (self.ls2(m) if self.ls2 is not None else m)


class ViT(nn.Module):
    """Blocks 0..feature_layer only: the package never runs later blocks or a final norm."""

    def __init__(self, e: dict, grid: int):
        super().__init__()
        d = e["dim"]
        self.e = e
        self.n_prefix = int(e["class_token"]) + e["register_tokens"]
        self.patch_embed = PatchEmbed(d, e["patch_size"])
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, d))
        if e["class_token"]:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if e["register_tokens"]:
            self.reg_token = nn.Parameter(torch.zeros(1, e["register_tokens"], d))
        self.blocks = nn.ModuleList([ViTBlock(e) for _ in range(e["feature_layer"] + 1)])
        self.register_buffer("mean", torch.tensor(e["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(e["std"]).view(1, 3, 1, 1), persistent=False)

    def forward(self, pix):
        """pix [B, 3, S, S] in [0, 1] -> features [B, g*g, dim] of block feature_layer."""
        x = self.patch_embed((pix - self.mean) / self.std) + self.pos_embed
        B = x.shape[0]
        prefix = []
        if self.e["class_token"]:
            prefix.append(self.cls_token.expand(B, -1, -1))
        if self.e["register_tokens"]:
            prefix.append(self.reg_token.expand(B, -1, -1))
        if prefix:                                                     # no position embedding on them
            x = torch.cat(prefix + [x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return x[:, self.n_prefix:]


# --------------------------------------------------------------------------------------------------
# Mamba-2 mixer
# --------------------------------------------------------------------------------------------------

def ssd_scan(x, dt, a, B, C, chunk: int, initial_state=None):
    """Chunked SSD scan from zero state (or `initial_state` [b, H, P, N]), all in the caller's dtype
    (float32).

    x [b, T, H, P]; dt [b, T, H] (after softplus); a = dt * A [b, T, H]; B, C [b, T, G, N] with head h
    reading group h // (H / G). Returns y [b, T, H, P] WITHOUT the D skip term, and the final state
    [b, H, P, N]. Same algebra as mamba2_ref.ssm_scan_chunked: intra-chunk quadratic form, per-chunk
    states, a recurrence over chunk boundaries (a loop over chunks, never over tokens), carried-in term.
    """
    b, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    K = H // G
    Q = chunk
    nc = (T + Q - 1) // Q
    pad = nc * Q - T
    if pad:
        # Padding tokens get dt = 0 (and a = 0): they neither decay nor add to the state.
        x, dt, a, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, a, B, C))
    x = x.reshape(b, nc, Q, G, K, P)
    dt = dt.reshape(b, nc, Q, G, K)
    a = a.reshape(b, nc, Q, G, K)
    B = B.reshape(b, nc, Q, G, N)
    C = C.reshape(b, nc, Q, G, N)
    cs = torch.cumsum(a, dim=2)                                        # [b,c,Q,G,K]

    # Intra-chunk: y_l = sum_{s<=l} (C_l . B_s) exp(cs_l - cs_s) dt_s x_s. Mask before exp (s > l
    # would overflow).
    diff = cs[:, :, :, None] - cs[:, :, None, :]                       # [b,c,l,s,G,K]
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    L = torch.exp(diff.masked_fill(~causal[:, :, None, None], -math.inf))
    CB = torch.einsum("bclgn,bcsgn->bclsg", C, B)
    M = L * CB[..., None] * dt[:, :, None]                             # [b,c,l,s,G,K]
    y = torch.einsum("bclsgk,bcsgkp->bclgkp", M, x)

    # Each chunk's contribution to the state at its end, then the recurrence across chunks.
    to_end = torch.exp(cs[:, :, -1:] - cs) * dt                        # [b,c,Q,G,K]
    S_chunk = torch.einsum("bcsgk,bcsgkp,bcsgn->bcgkpn", to_end, x, B)
    chunk_decay = torch.exp(cs[:, :, -1])                              # [b,c,G,K]
    S = x.new_zeros(b, G, K, P, N) if initial_state is None else initial_state.reshape(b, G, K, P, N)
    S_in = []
    for c in range(nc):
        S_in.append(S)
        S = chunk_decay[:, c, :, :, None, None] * S + S_chunk[:, c]
    S_in = torch.stack(S_in, dim=1)                                    # [b,c,G,K,P,N]
    y = y + torch.einsum("bclgn,bcgkpn->bclgkp", C, S_in) * torch.exp(cs)[..., None]
    y = y.reshape(b, nc * Q, H, P)[:, :T]
    return y, S.reshape(b, H, P, N)


class GatedRMSNorm(nn.Module):
    """Gate before the norm: g = y * silu(z), RMS over each group of d_inner / ngroups channels."""

    def __init__(self, d_inner: int, group_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_inner))
        self.group_size, self.eps = group_size, eps

    def forward(self, y, z):
        g = y.float() * F.silu(z.float())
        shp = g.shape
        g = g.reshape(*shp[:-1], shp[-1] // self.group_size, self.group_size)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return g.reshape(shp) * self.weight.float()


def _dt_bias_init(n: int, lo=1e-3, hi=1e-1):
    # softplus(dt_bias) log-uniform in [lo, hi]: mamba_ssm's starting range of time steps.
    dt = torch.exp(torch.rand(n) * (math.log(hi) - math.log(lo)) + math.log(lo))
    return dt + torch.log(-torch.expm1(-dt))


class Mamba2Mixer(nn.Module):
    """in_proj -> [z | xBC | dt]; causal depthwise conv + SiLU; SSD scan; gated RMSNorm; out_proj.
    With `bidirectional` it is the connector's BiMamba2: a second conv / dt_bias / A_log / D set
    (suffix _b) scans the reversed sequence, both share in_proj, norm and out_proj, and the two
    gated-normed outputs are averaged."""

    def __init__(self, d_model: int, m: dict, norm_eps: float, bidirectional: bool):
        super().__init__()
        self.d_inner = m["expand"] * d_model
        self.headdim, self.d_state, self.ngroups = m["headdim"], m["d_state"], m["ngroups"]
        self.nheads = self.d_inner // self.headdim
        self.conv_dim = self.d_inner + 2 * self.ngroups * self.d_state
        self.chunk = m["chunk_size"]
        self.d_conv = m["d_conv"]
        self.bidirectional = bidirectional
        H = self.nheads
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * self.ngroups * self.d_state + H, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, self.d_conv, groups=self.conv_dim, bias=True)
        self.dt_bias = nn.Parameter(_dt_bias_init(H))
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1.0, 16.0)))
        self.D = nn.Parameter(torch.ones(H))
        if bidirectional:
            self.conv1d_b = nn.Conv1d(self.conv_dim, self.conv_dim, self.d_conv, groups=self.conv_dim, bias=True)
            self.dt_bias_b = nn.Parameter(_dt_bias_init(H))
            self.A_log_b = nn.Parameter(torch.log(torch.empty(H).uniform_(1.0, 16.0)))
            self.D_b = nn.Parameter(torch.ones(H))
        self.norm = GatedRMSNorm(self.d_inner, self.d_inner // self.ngroups, norm_eps)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)   # initialised by MLMamba._init

    def _conv(self, xbc, conv, conv_state=None):
        """xbc [b, T, C] -> silu(causal depthwise conv + bias); tap d_conv-1 multiplies the current token.
        conv_state [b, d_conv-1, C]: the inputs before this segment (zeros when None)."""
        T = xbc.shape[1]
        if conv_state is None:
            y = F.conv1d(xbc.transpose(1, 2), conv.weight.float(), conv.bias.float(),
                         padding=self.d_conv - 1, groups=self.conv_dim)[..., :T]
        else:
            y = F.conv1d(torch.cat([conv_state, xbc], dim=1).transpose(1, 2), conv.weight.float(),
                         conv.bias.float(), groups=self.conv_dim)
        return F.silu(y).transpose(1, 2)

    def _ssm(self, xbc_act, dt_raw, dt_bias, A_log, D, initial_state=None):
        """xbc_act [b, T, conv_dim], dt_raw [b, T, H]; params may carry a leading batch axis.
        Returns y [b, T, d_inner] and the final SSM state [b, H, P, N]."""
        b, T, _ = xbc_act.shape
        H, P, G, N = self.nheads, self.headdim, self.ngroups, self.d_state
        x = xbc_act[..., :self.d_inner].reshape(b, T, H, P)
        Bm = xbc_act[..., self.d_inner:self.d_inner + G * N].reshape(b, T, G, N)
        Cm = xbc_act[..., self.d_inner + G * N:].reshape(b, T, G, N)
        dt = F.softplus(dt_raw + dt_bias)
        A = -torch.exp(A_log)
        y, S = ssd_scan(x, dt, dt * A, Bm, Cm, self.chunk, initial_state)
        return (y + D[..., None] * x).reshape(b, T, self.d_inner), S

    def forward_with_state(self, u, state=None):
        """Language-model mixer over a segment that continues from `state` = (conv_state
        [b, d_conv-1, conv_dim], ssm_state [b, H, P, N]) or from zeros; returns the output and the
        state after the segment. The same arithmetic as forward() on the whole sequence: a picture's
        rows can be run once and their state shared by every question about it."""
        assert not self.bidirectional
        zxbcdt = self.in_proj(u)
        with _no_autocast(u.device.type):
            zxbcdt = zxbcdt.float()
            di, cd = self.d_inner, self.conv_dim
            z, xbc, dt_raw = zxbcdt[..., :di], zxbcdt[..., di:di + cd], zxbcdt[..., di + cd:]
            conv_in, ssm_in = state if state is not None else (None, None)
            x_act = self._conv(xbc, self.conv1d, conv_in)
            y, ssm_out = self._ssm(x_act, dt_raw, self.dt_bias.float(), self.A_log.float(), self.D.float(), ssm_in)
            g = self.norm(y, z)
            k = self.d_conv - 1
            hist = xbc if conv_in is None else torch.cat([conv_in, xbc], dim=1)
            if hist.shape[1] < k:
                hist = F.pad(hist, (0, 0, k - hist.shape[1], 0))
            conv_out = hist[:, -k:]
        return self.out_proj(g), (conv_out, ssm_out)

    def forward(self, u):
        zxbcdt = self.in_proj(u)
        with _no_autocast(u.device.type):
            zxbcdt = zxbcdt.float()
            di, cd = self.d_inner, self.conv_dim
            z, xbc, dt_raw = zxbcdt[..., :di], zxbcdt[..., di:di + cd], zxbcdt[..., di + cd:]
            if not self.bidirectional:
                y, _ = self._ssm(self._conv(xbc, self.conv1d), dt_raw, self.dt_bias.float(),
                                 self.A_log.float(), self.D.float())
                g = self.norm(y, z)
            else:
                b = u.shape[0]
                xf = self._conv(xbc, self.conv1d)
                xb = self._conv(xbc.flip(1), self.conv1d_b)
                # Both directions in one scan: stacked on the batch axis with per-row parameters.
                dtb = torch.stack([self.dt_bias, self.dt_bias_b]).float().repeat_interleave(b, 0)[:, None]
                Al = torch.stack([self.A_log, self.A_log_b]).float().repeat_interleave(b, 0)[:, None]
                Dd = torch.stack([self.D, self.D_b]).float().repeat_interleave(b, 0)[:, None]
                y, _ = self._ssm(torch.cat([xf, xb]), torch.cat([dt_raw, dt_raw.flip(1)]), dtb, Al, Dd)
                # The gated norm is per position, so norming the un-reversed backward output with z
                # equals norming the reversed one with reversed z.
                g = (self.norm(y[:b], z) + self.norm(y[b:].flip(1), z)) / 2
        return self.out_proj(g)


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()


# --------------------------------------------------------------------------------------------------
# MSC connector, projector, language model
# --------------------------------------------------------------------------------------------------

class SwiGLU(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.w1, self.w2, self.w3 = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class MSCLayer(nn.Module):
    def __init__(self, d: int, msc: dict):
        super().__init__()
        self.mixer = Mamba2Mixer(d, msc, msc["norm_eps"], True)
        self.norm = nn.LayerNorm(d, eps=msc["layer_norm_eps"])
        self.mlp = SwiGLU(d)

    def forward(self, h):
        h = h + self.mixer(h)                                          # no norm before the mixer (as released)
        return h + self.mlp(self.norm(h))


class MSC(nn.Module):
    def __init__(self, d: int, msc: dict):
        super().__init__()
        self.layers = nn.ModuleList([MSCLayer(d, msc) for _ in range(msc["n_layer"])])
        self.norm_f = nn.LayerNorm(d, eps=msc["layer_norm_eps"])

    def forward(self, h):
        for layer in self.layers:
            h = layer(h)
        return self.norm_f(h)


class Projector(nn.Module):
    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out), nn.GELU(),
                                       nn.Linear(d_out, d_out))

    def forward(self, x):
        return self.projector(x)


class Mamba2Block(nn.Module):
    def __init__(self, llm: dict):
        super().__init__()
        self.norm = RMSNorm(llm["d_model"], llm["norm_eps"])
        self.mixer = Mamba2Mixer(llm["d_model"], llm, llm["norm_eps"], False)


class Backbone(nn.Module):
    def __init__(self, llm: dict):
        super().__init__()
        self.embedding = nn.Embedding(llm["vocab_size"], llm["d_model"])
        self.layers = nn.ModuleList([Mamba2Block(llm) for _ in range(llm["n_layer"])])
        self.norm_f = RMSNorm(llm["d_model"], llm["norm_eps"])


class LLMBackbone(nn.Module):
    """Mamba-2 LM with a tied head (no lm_head tensor: the package ties it to the embedding)."""

    def __init__(self, llm: dict):
        super().__init__()
        self.backbone = Backbone(llm)

    def hidden(self, x):
        """x [b, T, d_model] input rows -> final-normed hidden [b, T, d_model] (float32)."""
        hidden = x
        residual = torch.zeros_like(x, dtype=torch.float32)
        for layer in self.backbone.layers:
            residual = hidden.float() + residual                       # residual stream in float32
            hidden = layer.mixer(layer.norm(residual))
        return self.backbone.norm_f(hidden.float() + residual)

    def hidden_segment(self, x, states=None):
        """Like hidden() for a segment that continues an earlier one: `states` holds each layer's
        mixer state after it (None: the start). Returns the segment's final-normed hidden [b, T, d]
        and the layers' states after the segment. The residual stream needs no carry: it is per
        position."""
        hidden = x
        residual = torch.zeros_like(x, dtype=torch.float32)
        out_states = []
        for j, layer in enumerate(self.backbone.layers):
            residual = hidden.float() + residual
            hidden, st = layer.mixer.forward_with_state(layer.norm(residual), None if states is None else states[j])
            out_states.append(st)
        return self.backbone.norm_f(hidden.float() + residual), out_states

    def head(self, h):
        return h @ self.backbone.embedding.weight.t().to(h.dtype)


# --------------------------------------------------------------------------------------------------
# Whole model
# --------------------------------------------------------------------------------------------------

def grid_of(cfg: dict) -> int:
    grids = {cfg["image"]["size"] // e["patch_size"] for e in cfg["vision_backbone"]["encoders"]}
    assert len(grids) == 1, f"encoders give different grids {grids}"
    return grids.pop()


class MLMamba(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        g = grid_of(cfg)
        encs = cfg["vision_backbone"]["encoders"]
        self.vision_backbone = nn.ModuleDict({e["name"]: ViT(e, g) for e in encs})
        width = cfg["mlp"]["out_dim"]
        self.mlp = nn.Sequential(nn.Linear(sum(e["dim"] for e in encs), width), nn.GELU())
        self.bidirectional_mamba = MSC(width, dict(cfg["bidirectional_mamba"]))
        self.projector = Projector(width, cfg["projector"]["hidden_dim"], cfg["llm_backbone"]["d_model"])
        self.llm_backbone = LLMBackbone(cfg["llm_backbone"])
        self._init()

    def _init(self):
        for name, mod in self.named_modules():
            if isinstance(mod, nn.Linear):
                nn.init.trunc_normal_(mod.weight, std=0.02)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.LayerNorm):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
        for mod in self.modules():
            if isinstance(mod, Mamba2Mixer):
                # in_proj at fan-in scale, out_proj additionally scaled down with depth.
                nn.init.normal_(mod.in_proj.weight, std=mod.in_proj.in_features ** -0.5)
                n_layer = self.cfg["llm_backbone"]["n_layer"] if not mod.bidirectional \
                    else self.cfg["bidirectional_mamba"]["n_layer"]
                nn.init.normal_(mod.out_proj.weight, std=mod.out_proj.in_features ** -0.5 / math.sqrt(2 * n_layer))
        for vit in self.vision_backbone.values():
            nn.init.trunc_normal_(vit.pos_embed, std=0.02)
            for t in ("cls_token", "reg_token"):
                if hasattr(vit, t):
                    nn.init.trunc_normal_(getattr(vit, t), std=0.02)
        nn.init.normal_(self.llm_backbone.backbone.embedding.weight, std=0.02)

    @property
    def grid(self) -> int:
        return grid_of(self.cfg)

    def encode_images(self, pix):
        """pix [B, 3, S, S] scaled to [0, 1] (float) -> visual rows [B, g*g, d_model]."""
        feats = [self.vision_backbone[e["name"]](pix) for e in self.cfg["vision_backbone"]["encoders"]]
        h = self.mlp(torch.cat(feats, dim=-1))                         # DINO first: config order
        return self.projector(self.bidirectional_mamba(h))

    def hidden(self, visual, ids, img_index=None):
        """visual [B, V, d] (or None), ids [N, L] -> final hidden [N, V + L, d] (float32).
        Sequence n reads visual rows of picture img_index[n] (default: n)."""
        emb = self.llm_backbone.backbone.embedding(ids)
        if visual is not None:
            v = visual if img_index is None else visual[img_index]
            emb = torch.cat([v.to(emb.dtype), emb], dim=1)
        return self.llm_backbone.hidden(emb)

    def hidden_text(self, visual, ids, img_index):
        """hidden(visual, ids, img_index)[:, V:] computed with each picture's rows run through the
        language model once (not once per question about it): their state is copied to every
        sequence that reads that picture. Same result; the language model reads V rows per picture
        instead of per sequence."""
        _, states = self.llm_backbone.hidden_segment(visual)
        states = [(c[img_index], s[img_index]) for c, s in states]
        emb = self.llm_backbone.backbone.embedding(ids)
        h, _ = self.llm_backbone.hidden_segment(emb, states=states)
        return h

    def logits(self, visual, ids, img_index=None):
        return self.llm_backbone.head(self.hidden(visual, ids, img_index))


# --------------------------------------------------------------------------------------------------
# Package export helpers
# --------------------------------------------------------------------------------------------------

def package_tensors(model: MLMamba) -> dict:
    """Package tensor name -> float32 CPU tensor (the state dict, detached)."""
    return {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}


def no_decay(name: str, p: torch.Tensor) -> bool:
    """Parameters kept out of weight decay: vectors (norms, biases, LayerScale, dt_bias, A_log, D),
    position embeddings and prefix tokens."""
    return p.dim() < 2 or name.endswith(("pos_embed", "cls_token", "reg_token"))


def export_package(model: MLMamba, folder: str, dtype: str = "f16", shard_bytes: int = 15 * 10 ** 6,
                   tokenizer_json: str | None = None) -> list:
    """Writes config.json, the weights (sharded with an index when over shard_bytes) and the
    tokenizer into `folder` with the package writer of tools/make_random_package.py. Checks first
    that the state dict holds exactly the tensors (names and shapes) the package layout requires."""
    import os
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(os.path.dirname(here)))
    import make_random_package as mrp                                    # noqa: E402

    cfg = model.cfg
    mrp.check_spec(cfg)
    layout = mrp.package_layout(cfg)
    tensors = package_tensors(model)
    want = {n: tuple(s) for n, s, _ in layout}
    have = {n: tuple(t.shape) for n, t in tensors.items()}
    if want != have:
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        shapes = sorted(n for n in set(want) & set(have) if want[n] != have[n])
        raise ValueError(f"state dict does not match the package layout: missing {missing[:5]}, "
                         f"extra {extra[:5]}, wrong shapes {shapes[:5]}")
    os.makedirs(folder, exist_ok=True)
    if os.path.exists(os.path.join(folder, "config.json")):
        os.remove(os.path.join(folder, "config.json"))
    # Layout order (data-flow order) keeps each shard's tensors together by stage.
    entries = [(n, want[n], (lambda t=tensors[n]: iter([t.numpy()]))) for n, _, _ in layout]
    files = mrp.write_weights(folder, entries, dtype, shard_bytes)
    if tokenizer_json is not None:
        import shutil
        if os.path.abspath(tokenizer_json) != os.path.abspath(os.path.join(folder, "tokenizer.json")):
            shutil.copy(tokenizer_json, os.path.join(folder, "tokenizer.json"))
        files.append("tokenizer.json")
    # config.json last: an interrupted export has none and is never mistaken for a model.
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(mrp.config_json(cfg))
    return files + ["config.json"]


def make_config(name: str, image_size: int, patch: int, enc_dims, enc_heads, enc_mlp, enc_depth,
                mlp_out: int, msc: dict, projector_hidden: int, llm: dict, vocab_size: int,
                max_sequence_length: int = 2048, max_new_tokens: int = 64) -> dict:
    """A package spec (config.json fields + each encoder's `depth`, which config_json drops).
    Encoder 0 is DINOv2-style (class token, 4 registers, LayerScale), encoder 1 SigLIP-style."""
    def enc(name, dim, heads, mlp_hidden, depth, cls, regs, ls, mean, std):
        return {"name": name, "patch_size": patch, "dim": dim, "heads": heads, "mlp_hidden": mlp_hidden,
                "class_token": cls, "register_tokens": regs, "layer_scale": ls, "feature_layer": depth - 1,
                "norm_eps": 1e-6, "mean": list(mean), "std": list(std), "depth": depth}
    return {
        "format": "mlmamba-package",
        "format_version": 1,
        "name": name,
        "llm_backbone": dict(llm, vocab_size=vocab_size, norm_eps=1e-5, max_sequence_length=max_sequence_length),
        "tokenizer": {"file": "tokenizer.json", "eos_token_id": 0},
        "prompt": {"template": "zephyr"},
        "generation": {"max_new_tokens": max_new_tokens},
        "image": {"size": image_size, "resize": "resize-naive"},
        "vision_backbone": {"encoders": [
            enc("dino_featurizer", enc_dims[0], enc_heads[0], enc_mlp[0], enc_depth[0], True, 4, True,
                IMAGENET_MEAN, IMAGENET_STD),
            enc("siglip_featurizer", enc_dims[1], enc_heads[1], enc_mlp[1], enc_depth[1], False, 0, False,
                SIGLIP_MEAN, SIGLIP_STD)]},
        "mlp": {"out_dim": mlp_out},
        "bidirectional_mamba": dict(msc, norm_eps=1e-5, layer_norm_eps=1e-5),
        "projector": {"hidden_dim": projector_hidden},
    }
