"""Writes the tiny ML-Mamba package fixtures (tests/fixtures/mlmamba_tiny_*) and checks them.

Runs on the GPU machine (torch, timm, transformers, safetensors, tokenizers, PIL; no network):
    HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 python3 tools/reference/make_mlmamba_fixtures.py --out "$OUT/fx"
`--dry-run` skips timm, torchvision, transformers and (when absent) tokenizers, so the reference side
runs anywhere torch + PIL are installed; its folders are NOT fixtures.

Each folder is a complete package (config.json in the package schema, model.safetensors in f32,
tokenizer.json, two PNG pictures) plus expected.json, all computed by the float64 reference
(mlmamba_ref.py) on the files as written, rounded to float32. Checks (exit status 1 when any fails):
  - every reference ViT vs timm's VisionTransformer built with the same config and loaded (strict)
    with the same tensors: features of block feature_layer, prefix dropped, no norm; float64 and
    float32 timm; also the hand-run block loop of the timm modules;
  - preprocessing vs torchvision's Resize/ToTensor/Normalize (and its pad for letterbox) on PIL;
  - MSC and LM: recurrence vs chunked SSD (float64);
  - the LM part vs transformers' Mamba2ForCausalLM fed inputs_embeds = [visual rows ; text
    embeddings]: all-position logits and 24 greedy steps (for ngroups > 1, against the reference
    with transformers' whole-width gated norm, since the package follows mamba_ssm's per-group norm);
  - prefill + decode steps vs full forward; greedy deterministic; the two-turn conversation run
    from scratch equals the state carried on from turn 1;
  - >= 8 distinct tokens in every greedy answer; the picture changes the answer's logits;
  - the safetensors package reads what the reference's reader reads; prompts decode back to text.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from functools import partial

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mamba2_ref import Mamba2LMConfig, read_safetensors, rel_err  # noqa: E402
from make_mamba2_fixtures import draw_weights as draw_lm_weights, hf_config_fields, write_safetensors  # noqa: E402
import mlmamba_ref as R  # noqa: E402

N_NEW = 24
MIN_DISTINCT = 8
TOL_TIMM64 = 1e-10   # same maths, float64 both sides
TOL_TIMM32 = 1e-5    # timm in float32 vs the float64 reference
TOL_PRE = 1e-6       # torchvision float32 vs float64 preprocessing
TOL_TF = 1e-4        # transformers float32 (CPU) vs float64 reference
TOL_EXACT = 1e-10    # two float64 evaluations of the same maths
TOKENIZER_IDS = 963  # rows of the embedding past this have no text in the fixture tokenizer
EOS_ROW_SCALE = 1.4
# The seeds were picked (with the dry run, whose stand-in tokenizer gives the real ids for these
# ASCII prompts) among those where every answer visits >= 8 distinct tokens with a top-1/top-2
# logit gap >= 0.005 at every step, and some first answer meets eos after a few tokens.

DINO = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
SIGLIP = dict(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])

PACKAGES = [
    {
        "name": "mlmamba_tiny_dual", "seed": 117, "image": {"size": 64, "resize": "resize-naive"},
        "encoders": [
            dict(name="dino_featurizer", patch_size=8, dim=48, heads=4, mlp_hidden=96, class_token=True,
                 register_tokens=4, layer_scale=True, feature_layer=2, depth=4, **DINO),
            dict(name="siglip_featurizer", patch_size=8, dim=40, heads=5, mlp_hidden=80, class_token=False,
                 register_tokens=0, layer_scale=False, feature_layer=2, depth=4, timm_pool="map", **SIGLIP),
        ],
        "mlp_out": 64,
        "msc": dict(n_layer=2, d_state=16, headdim=16, ngroups=1, expand=2, d_conv=4, chunk_size=16),
        "projector_hidden": 96,
        "llm": dict(d_model=64, n_layer=2, d_state=16, headdim=16, ngroups=1, expand=2, d_conv=4, chunk_size=16),
    },
    {
        # Odd sizes: 49 visual rows (not a multiple of the chunk), head_dim 72, MSC width 48 != LM
        # width 64, ngroups 2 in both Mamba parts. No attention-pool head and no block past the
        # feature layer here (the dual package has both): at dim 144 they would only add weight bytes.
        "name": "mlmamba_tiny_siglip_odd", "seed": 116, "image": {"size": 70, "resize": "letterbox"},
        "encoders": [
            dict(name="siglip_featurizer", patch_size=10, dim=144, heads=2, mlp_hidden=200, class_token=False,
                 register_tokens=0, layer_scale=False, feature_layer=1, depth=2, timm_pool="", **SIGLIP),
        ],
        "mlp_out": 48,
        "msc": dict(n_layer=2, d_state=16, headdim=16, ngroups=2, expand=2, d_conv=4, chunk_size=16),
        "projector_hidden": 80,
        "llm": dict(d_model=64, n_layer=2, d_state=16, headdim=16, ngroups=2, expand=2, d_conv=4, chunk_size=16),
    },
]

PICTURES = [
    # file, first question (spaces around it: the first turn strips), second turn
    ("shapes_96x80.png", "  What shapes do you see? ", "And what colour is the circle?"),
    ("photo_50x130.png", "Describe the colours.", "Is it dark?"),
]
TEXT_ONLY_QUESTION = "Write a short story about a red square."


# --------------------------------------------------------------------------------------------------
# Package writing
# --------------------------------------------------------------------------------------------------

def package_config(spec: dict) -> dict:
    llm = dict(spec["llm"], vocab_size=1024, norm_eps=1e-5, max_sequence_length=2048)
    encs = [{k: v for k, v in e.items() if k not in ("depth", "timm_pool")} | {"norm_eps": 1e-6}
            for e in spec["encoders"]]
    return {
        "format": "mlmamba-package", "format_version": 1, "name": spec["name"],
        "llm_backbone": {k: llm[k] for k in ("d_model", "n_layer", "vocab_size", "d_state", "headdim", "ngroups",
                                             "expand", "d_conv", "chunk_size", "norm_eps", "max_sequence_length")},
        "tokenizer": {"file": "tokenizer.json", "eos_token_id": 0},
        "prompt": {"template": "zephyr"},
        "generation": {"max_new_tokens": N_NEW},
        "image": dict(spec["image"]),
        "vision_backbone": {"encoders": encs},
        "mlp": {"out_dim": spec["mlp_out"]},
        "bidirectional_mamba": dict(spec["msc"], norm_eps=1e-5, layer_norm_eps=1e-5),
        "projector": {"hidden_dim": spec["projector_hidden"]},
    }


class Draw:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *s):
        return torch.randn(*s, generator=self.g, dtype=torch.float32)

    def rand(self, *s):
        return torch.rand(*s, generator=self.g, dtype=torch.float32)

    def linear(self, out_f, in_f, gain=1.0):
        return gain * self.randn(out_f, in_f) / math.sqrt(in_f)

    def near_one(self, n):
        return 1 + 0.1 * (2 * self.rand(n) - 1)


def draw_vit(dr: Draw, e: dict, grid: int) -> dict:
    """timm key names. LayerScale gammas in [0.2, 1] (trained DINOv2 values are of that order, far
    from the 1e-5 init) so the attention and MLP branches matter; pos_embed strong enough that
    patch order matters."""
    D, p, Hm = e["dim"], e["patch_size"], e["mlp_hidden"]
    sd = {"patch_embed.proj.weight": dr.randn(D, 3, p, p) / math.sqrt(3 * p * p),
          "patch_embed.proj.bias": 0.1 * dr.randn(D),
          "pos_embed": 0.5 * dr.randn(1, grid * grid, D)}
    if e["class_token"]:
        sd["cls_token"] = dr.randn(1, 1, D)
    if e["register_tokens"]:
        sd["reg_token"] = dr.randn(1, e["register_tokens"], D)
    for j in range(e["depth"]):
        b = f"blocks.{j}."
        sd[b + "norm1.weight"], sd[b + "norm1.bias"] = dr.near_one(D), 0.1 * dr.randn(D)
        # q and k 1.5x larger than 1/sqrt(D) so the softmax is neither flat nor one-hot.
        qkv = dr.linear(3 * D, D)
        qkv[:2 * D] *= 1.5
        sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"] = qkv, 0.1 * dr.randn(3 * D)
        sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = dr.linear(D, D), 0.1 * dr.randn(D)
        if e["layer_scale"]:
            sd[b + "ls1.gamma"] = 0.2 + 0.8 * dr.rand(D)
        sd[b + "norm2.weight"], sd[b + "norm2.bias"] = dr.near_one(D), 0.1 * dr.randn(D)
        sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = dr.linear(Hm, D), 0.1 * dr.randn(Hm)
        sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = dr.linear(D, Hm), 0.1 * dr.randn(D)
        if e["layer_scale"]:
            sd[b + "ls2.gamma"] = 0.2 + 0.8 * dr.rand(D)
    # The final norm is stored (as in timm checkpoints) but the model never uses it.
    sd["norm.weight"], sd["norm.bias"] = dr.near_one(D), 0.1 * dr.randn(D)
    return sd


def draw_memory(dr: Draw, H: int) -> tuple:
    """dt_bias, A_log, D of one scan with a long memory that is also strongly written: dt
    log-uniform in [0.01, 0.5] (stored as its inverse softplus), A log-uniform in [0.02, 1], so the
    per-token decay exp(-dt A) ranges from 0.6 to 0.9998, and a small skip D in [0, 0.5]. With the
    Mamba-2 fixtures' ranges (dt <= 0.1, A >= 1, D >= 0.5) the answer forgets the picture: the same
    tokens come out for every picture and for no picture."""
    # float64 maths: float32 log/expm1 may differ by an ulp between torch builds.
    dt = torch.exp(dr.rand(H).double() * (math.log(0.5) - math.log(0.01)) + math.log(0.01))
    log_a = dr.rand(H).double() * (math.log(1.0) - math.log(0.02)) + math.log(0.02)
    return (dt + torch.log(-torch.expm1(-dt))).float(), log_a.float(), 0.5 * dr.rand(H)


def draw_ssm_direction(dr: Draw, H: int, conv_dim: int, d_conv: int) -> tuple:
    conv_w, conv_b = 0.3 * dr.randn(conv_dim, 1, d_conv), 0.1 * dr.randn(conv_dim)
    return (conv_w, conv_b) + draw_memory(dr, H)


def draw_package(spec: dict, cfg: R.PackageConfig) -> dict:
    dr = Draw(spec["seed"])
    sd = {}
    for e in spec["encoders"]:
        for k, v in draw_vit(dr, e, cfg.grid).items():
            sd[f"vision_backbone.{e['name']}.{k}"] = v
    in_dim = sum(e["dim"] for e in spec["encoders"])
    o = cfg.mlp_out_dim
    sd["mlp.0.weight"], sd["mlp.0.bias"] = dr.linear(o, in_dim), 0.1 * dr.randn(o)
    c = cfg.msc
    for l in range(c.n_layer):
        p = f"bidirectional_mamba.layers.{l}."
        m = p + "mixer."
        sd[m + "in_proj.weight"] = dr.linear(c.d_in_proj, o)
        for suf in ("", "_b"):
            cw, cb, dtb, alog, dd = draw_ssm_direction(dr, c.nheads, c.conv_dim, c.d_conv)
            sd[m + f"conv1d{suf}.weight"], sd[m + f"conv1d{suf}.bias"] = cw, cb
            sd[m + f"dt_bias{suf}"], sd[m + f"A_log{suf}"], sd[m + f"D{suf}"] = dtb, alog, dd
        sd[m + "norm.weight"] = dr.near_one(c.d_inner)
        sd[m + "out_proj.weight"] = dr.linear(o, c.d_inner)
        sd[p + "norm.weight"], sd[p + "norm.bias"] = dr.near_one(o), 0.1 * dr.randn(o)
        for i in (1, 2, 3):
            sd[p + f"mlp.w{i}.weight"], sd[p + f"mlp.w{i}.bias"] = dr.linear(o, o), 0.1 * dr.randn(o)
    sd["bidirectional_mamba.norm_f.weight"], sd["bidirectional_mamba.norm_f.bias"] = dr.near_one(o), 0.1 * dr.randn(o)
    ph, dm = cfg.projector_hidden, cfg.llm.d_model
    for i, (a, b) in ((0, (ph, o)), (2, (dm, ph)), (4, (dm, dm))):
        sd[f"projector.projector.{i}.weight"], sd[f"projector.projector.{i}.bias"] = dr.linear(a, b), 0.1 * dr.randn(a)
    # The LM is drawn like the Mamba-2 fixtures (out_proj 3x, so greedy answers wander) and stored
    # under the release's mamba_ssm names. Rows without a token in the fixture tokenizer are shrunk
    # so the tied head rarely picks them and answers stay decodable text.
    lm = draw_lm_weights(cfg.llm, spec["seed"] + 1000)
    lm["backbone.embeddings.weight"][TOKENIZER_IDS:] *= 0.1
    # A longer eos row makes eos win now and then, so some answers end early and the conversation
    # fixtures cover a reply cut at eos as well as one cut at the token limit.
    lm["backbone.embeddings.weight"][0] *= EOS_ROW_SCALE
    for i in range(cfg.llm.n_layer):
        p = f"backbone.layers.{i}.mixer."
        lm[p + "dt_bias"], lm[p + "A_log"], lm[p + "D"] = draw_memory(dr, cfg.llm.nheads)
    for k, v in lm.items():
        sd["llm_backbone." + k.replace("backbone.embeddings.", "backbone.embedding.")] = v
    return sd


def write_pictures(folder: str) -> None:
    """Two small RGB PNGs: flat shapes with hard edges (96x80) and a smooth gradient with seeded
    noise (50x130, tall, so letterbox pads columns). Drawn with numpy, not ImageDraw, so the pixels
    do not depend on the PIL version's rasteriser."""
    from PIL import Image
    y, x = np.mgrid[0:80, 0:96].astype(np.float64)
    img = np.empty((80, 96, 3))
    img[:] = (235, 230, 220)
    img[(x - 24) ** 2 + (y - 26) ** 2 <= 16 ** 2] = (220, 30, 40)                    # red disc
    img[(x >= 50) & (x <= 88) & (y >= 8) & (y <= 36)] = (30, 60, 200)               # blue box
    img[(y <= 74) & (y >= 48 + np.abs(x - 46))] = (40, 170, 60)                     # green triangle
    img[np.abs(y - (79 - 35 * x / 95)) <= 1.0] = (10, 10, 10)                        # dark line
    Image.fromarray(img.astype(np.uint8), "RGB").save(os.path.join(folder, PICTURES[0][0]), optimize=True)
    y, x = np.mgrid[0:130, 0:50].astype(np.float64)
    noise = torch.randn(130, 50, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64).numpy()
    r = 40 + 180 * (y / 129) + 10 * np.sin(x / 4)
    g = 200 - 120 * (x / 49) + 20 * np.cos(y / 9)
    b = 90 + 80 * np.sin((x + y) / 17)
    arr = np.stack([r, g, b], -1) + 6 * noise
    Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB").save(
        os.path.join(folder, PICTURES[1][0]), optimize=True)


# --------------------------------------------------------------------------------------------------
# timm / torchvision / transformers sides
# --------------------------------------------------------------------------------------------------

class Libs:
    def __init__(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import timm
        import torchvision
        import transformers
        from timm.models.vision_transformer import VisionTransformer
        from transformers import Mamba2Config, Mamba2ForCausalLM
        self.timm, self.VisionTransformer = timm, VisionTransformer
        self.Mamba2Config, self.Mamba2ForCausalLM = Mamba2Config, Mamba2ForCausalLM
        import PIL
        print(f"torch {torch.__version__}, timm {timm.__version__}, torchvision {torchvision.__version__}, "
              f"transformers {transformers.__version__}, PIL {PIL.__version__}")

    # ---- timm ----

    def vit(self, e: dict, image_size: int):
        import torch.nn as nn
        ratio = (e["mlp_hidden"] + 0.25) / e["dim"]   # timm takes int(dim * mlp_ratio)
        m = self.VisionTransformer(
            img_size=image_size, patch_size=e["patch_size"], num_classes=0,
            global_pool="token" if e["class_token"] else e["timm_pool"],   # "map": SigLIP's attention-pool head
            embed_dim=e["dim"], depth=e["depth"], num_heads=e["heads"], mlp_ratio=ratio, qkv_bias=True,
            init_values=1e-5 if e["layer_scale"] else None, class_token=e["class_token"],
            no_embed_class=True, reg_tokens=e["register_tokens"],
            norm_layer=partial(nn.LayerNorm, eps=1e-6))
        return m.eval()

    def vit_features(self, m, pixels: torch.Tensor, fl: int) -> dict:
        """Block-fl features three ways: forward_intermediates, get_intermediate_layers and the
        timm modules run by hand (patch_embed, _pos_embed, blocks)."""
        out = {}
        x = pixels[None]
        with torch.no_grad():
            try:
                out["forward_intermediates"] = m.forward_intermediates(
                    x, indices=[fl], norm=False, output_fmt="NLC", intermediates_only=True)[0][0]
            except Exception as ex:  # noqa: BLE001 - reported, the others still count
                print(f"  forward_intermediates failed: {ex!r}")
            try:
                out["get_intermediate_layers"] = m.get_intermediate_layers(
                    x, n=[fl], reshape=False, return_prefix_tokens=False, norm=False)[0][0]
            except Exception as ex:  # noqa: BLE001
                print(f"  get_intermediate_layers failed: {ex!r}")
            h = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
            for blk in m.blocks[:fl + 1]:
                h = blk(h)
            out["blocks_by_hand"] = h[0, m.num_prefix_tokens:]
        return out

    def real_model_facts(self) -> list:
        lines = []
        for name in ("vit_so400m_patch14_siglip_384", "vit_large_patch14_reg4_dinov2.lvd142m"):
            try:
                try:
                    with torch.device("meta"):
                        m = self.timm.create_model(name, pretrained=False)
                except Exception:  # noqa: BLE001 - meta construction unsupported: build for real
                    m = self.timm.create_model(name, pretrained=False)
                act = m.blocks[0].mlp.act
                lines.append(
                    f"timm {name}: mlp act {type(act).__module__}.{type(act).__name__}"
                    f"(approximate={getattr(act, 'approximate', 'n/a')!r}), blocks {len(m.blocks)}, "
                    f"dim {m.embed_dim}, fc1 {tuple(m.blocks[0].mlp.fc1.weight.shape)}, "
                    f"prefix {m.num_prefix_tokens}, no_embed_class {m.no_embed_class}, "
                    f"pos_embed {tuple(m.pos_embed.shape)}, ls {type(m.blocks[0].ls1).__name__}, "
                    f"norm eps {m.blocks[0].norm1.eps}, attn_pool {type(m.attn_pool).__name__}")
            except Exception as ex:  # noqa: BLE001 - a fact we could not get is reported, not fatal
                lines.append(f"timm {name}: could not build ({ex!r})")
            print(lines[-1])
        return lines

    # ---- torchvision ----

    def preprocess_tv(self, img, cfg: R.PackageConfig) -> dict:
        from torchvision import transforms as T
        from torchvision.transforms import functional as TF
        img = img.convert("RGB")
        if cfg.resize == "letterbox":
            w, h = img.size
            m = max(w, h)
            pw, ph = (m - w) // 2, (m - h) // 2
            img = TF.pad(img, [pw, ph, pw, ph], fill=R.letterbox_fill(cfg.encoders[0].mean), padding_mode="constant")
            resize = T.Resize((cfg.image_size, cfg.image_size), interpolation=T.InterpolationMode.BICUBIC)
        elif cfg.resize == "resize-naive":
            resize = T.Resize((cfg.image_size, cfg.image_size), interpolation=T.InterpolationMode.BICUBIC)
        else:
            resize = T.Compose([T.Resize(cfg.image_size, interpolation=T.InterpolationMode.BICUBIC),
                                T.CenterCrop(cfg.image_size)])
        out = {}
        for e in cfg.encoders:
            out[e.name] = T.Compose([resize, T.ToTensor(), T.Normalize(e.mean, e.std)])(img)
        return out

    # ---- transformers ----

    def lm(self, cfg: Mamba2LMConfig, sd: dict, problems: list, name: str):
        fields = hf_config_fields(cfg.ngroups)
        fields.update(hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer, vocab_size=cfg.vocab_size,
                      state_size=cfg.d_state, expand=cfg.expand, head_dim=cfg.headdim, num_heads=cfg.nheads,
                      conv_kernel=cfg.d_conv, chunk_size=cfg.chunk_size, layer_norm_epsilon=cfg.norm_eps)
        m = self.Mamba2ForCausalLM(self.Mamba2Config(**fields)).float().eval()
        hf_sd = {k[len("llm_backbone."):].replace("backbone.embedding.", "backbone.embeddings."): v
                 for k, v in sd.items() if k.startswith("llm_backbone.")}
        missing, unexpected = m.load_state_dict(hf_sd, strict=False)
        if unexpected or set(missing) - {"lm_head.weight"}:
            problems.append(f"{name}: transformers load_state_dict missing {missing}, unexpected {unexpected}")
        if not torch.equal(m.lm_head.weight, hf_sd["backbone.embeddings.weight"]):
            problems.append(f"{name}: transformers lm_head not tied after loading")
        return m

    @torch.no_grad()
    def lm_logits(self, m, embeds: torch.Tensor) -> torch.Tensor:
        return m(inputs_embeds=embeds[None].float(), use_cache=False).logits[0].double()


class MiniBPE:
    """Dry-run stand-in when the tokenizers package is absent: byte-level BPE for ASCII text with
    the fixture tokenizer's merges and <|endoftext|> split out (enough for this script's prompts;
    the real run reports whether it agrees with the tokenizers package)."""

    SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"

    def __init__(self, path: str):
        import re
        with open(path) as f:
            t = json.load(f)
        self.re = re
        self.vocab = t["model"]["vocab"]
        self.ranks = {tuple(m.split(" ") if isinstance(m, str) else m): i for i, m in enumerate(t["model"]["merges"])}
        self.special = {a["content"]: a["id"] for a in t["added_tokens"] if a["special"]}
        bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
        cs, n = list(bs), 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        self.byte_char = {b: chr(c) for b, c in zip(bs, cs)}

    def _word(self, w: str) -> list:
        parts = [self.byte_char[b] for b in w.encode("utf-8")]
        while len(parts) > 1:
            pairs = [(self.ranks.get((x, y), math.inf), i) for i, (x, y) in enumerate(zip(parts, parts[1:]))]
            r, i = min(pairs)
            if r == math.inf:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self.vocab[p] for p in parts]

    def encode(self, text, add_special_tokens=False):
        ids = []
        pieces = self.re.split("(" + "|".join(self.re.escape(k) for k in self.special) + ")", text)
        for piece in pieces:
            if piece in self.special:
                ids.append(self.special[piece])
            else:
                for w in self.re.findall(self.SPLIT, piece):
                    ids += self._word(w)

        class E:
            pass
        e = E()
        e.ids = ids
        return e

    def decode(self, ids, skip_special_tokens=False):
        return ""


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

def f32(t: torch.Tensor) -> list:
    """Rounded to float32, then printed with 8 significant digits."""
    return [float(f"{v:.8g}") for v in t.detach().reshape(-1).float().tolist()]


def margin(logits: torch.Tensor) -> float:
    top = torch.topk(logits.double(), 2).values
    return float(top[0] - top[1])


def first_eos(ids: list, eos: int) -> int:
    return ids.index(eos) if eos in ids else -1


class Checks:
    def __init__(self):
        self.problems, self.rows = [], []

    def le(self, what: str, value: float, tol: float, table=True):
        ok = value < tol
        if table:
            self.rows.append((what, value, tol, ok))
        if not ok:
            self.problems.append(f"{what}: {value:.3e} (limit {tol:.0e})")
        return ok

    def true(self, what: str, ok: bool, detail: str = ""):
        self.rows.append((what, float("nan"), None, ok))
        if not ok:
            self.problems.append(f"{what} {detail}".strip())
        return ok

    def guarded(self, what: str, fn, *a):
        """Runs one library comparison; an exception there is a failed check, and the fixtures are
        still written (marked failed by the exit status), so one run shows every problem."""
        try:
            return fn(*a)
        except Exception as ex:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            self.problems.append(f"{what}: raised {ex!r}")
            return None


# --------------------------------------------------------------------------------------------------
# One package
# --------------------------------------------------------------------------------------------------

def make_package(spec: dict, args, libs: Libs | None, ck: Checks, report: list) -> None:
    from PIL import Image
    name = spec["name"]
    folder = os.path.join(args.out, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    cfg_json = package_config(spec)
    cfg = R.PackageConfig.from_dict(cfg_json)
    sd = draw_package(spec, cfg)

    timm_models = {}

    def build_timm():
        # Build each timm ViT first: tensors timm has and the package format does not name (the
        # SigLIP attention-pool head) are drawn to timm's shapes and stored too, unused, as a real
        # checkpoint would hold them; a strict load then proves both sides use the same names.
        dr = Draw(spec["seed"] + 500)
        for e in spec["encoders"]:
            m = libs.vit(e, cfg.image_size)
            pre = f"vision_backbone.{e['name']}."
            mine = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
            theirs = m.state_dict()
            extra = sorted(set(mine) - set(theirs))
            if extra:
                ck.problems.append(f"{name}/{e['name']}: tensors timm does not have: {extra}")
            added = sorted(set(theirs) - set(mine))
            for k in added:
                sd[pre + k] = mine[k] = 0.02 * dr.randn(*theirs[k].shape)
            print(f"  {name}/{e['name']}: {len(theirs)} timm tensors, stored unused: {added or 'none'}")
            m.load_state_dict({k: mine[k] for k in theirs}, strict=True)
            timm_models[e["name"]] = m

    if libs:
        ck.guarded(f"{name}: timm build", build_timm)

    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg_json, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(folder, "model.safetensors"), sd)
    write_pictures(folder)
    have_tok = args.tokenizer_ok
    if os.path.exists(args.tokenizer):
        shutil.copyfile(args.tokenizer, os.path.join(folder, "tokenizer.json"))

    # Everything below reads the files back, so the expected values describe the files.
    saved = read_safetensors(os.path.join(folder, "model.safetensors"))
    ck.true(f"{name}: saved tensors equal drawn", set(saved) == set(sd) and all(torch.equal(saved[k], sd[k]) for k in sd))

    def safetensors_check():
        import safetensors.torch
        lib = safetensors.torch.load_file(os.path.join(folder, "model.safetensors"))
        ck.true(f"{name}: safetensors package == reference reader",
                set(lib) == set(saved) and all(torch.equal(lib[k], saved[k]) for k in lib))

    if libs:
        ck.guarded(f"{name}: safetensors check", safetensors_check)
    ref = R.MLMambaRef.load(folder, torch.float64, with_tokenizer=have_tok)
    if not have_tok:
        ref.tokenizer = MiniBPE(args.tokenizer)
    ref32 = R.MLMambaRef(ref.cfg, saved, torch.float32, ref.tokenizer)
    eos = cfg.eos_token_id
    tf_model = ck.guarded(f"{name}: transformers build", libs.lm, cfg.llm, saved, ck.problems, name) if libs else None
    # transformers' gated norm spans all of d_inner; with ngroups > 1 it is compared against the
    # reference configured the same way (the fixture itself keeps the package's per-group norm).
    ref_tf = ref
    if libs and cfg.llm.ngroups > 1:
        ref_tf = R.MLMambaRef(ref.cfg, saved, torch.float64, ref.tokenizer)
        c2 = Mamba2LMConfig(**{k: getattr(cfg.llm, k) for k in (
            "d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand", "headdim", "ngroups",
            "chunk_size", "norm_eps")})
        c2.norm_group_size = None
        ref_tf.lm = R.VisualMamba2LM(c2, ref.lm.w, torch.float64)

    f32_errs = {}
    pictures_out, visuals = [], []
    for file, q1, q2 in PICTURES:
        img = Image.open(os.path.join(folder, file))
        img.load()
        tag = f"{name}/{file}"
        taps = {}
        visual = ref.encode_image(img, taps)
        visuals.append(visual)
        pre = taps["preprocessed"]
        sq = R.to_square(img.convert("RGB"), cfg.image_size, cfg.resize, R.letterbox_fill(cfg.encoders[0].mean))
        square_rgb = np.asarray(sq, dtype=np.uint8).reshape(-1).tolist()

        # float32 evaluation of the same reference: what a float32 engine can expect to reach.
        t32 = {}
        ref32.encode_image(img, t32)
        for st in ("mlp_out", "msc_out", "projector_out"):
            f32_errs[st] = max(f32_errs.get(st, 0.0), rel_err(t32[st], taps[st]))
        for en in t32["features"]:
            f32_errs["features"] = max(f32_errs.get("features", 0.0), rel_err(t32["features"][en], taps["features"][en]))

        def compare_vision():
            tv = libs.preprocess_tv(img, cfg)
            for en, t in tv.items():
                ck.le(f"{tag}: preprocess {en} torchvision f32 vs ref", rel_err(t, pre[en]), TOL_PRE)
            for e in spec["encoders"]:
                m = timm_models[e["name"]]
                want = taps["features"][e["name"]]
                for dtype, tol in ((torch.float64, TOL_TIMM64), (torch.float32, TOL_TIMM32)):
                    m = m.to(dtype)
                    got = libs.vit_features(m, pre[e["name"]].to(dtype), e["feature_layer"])
                    if "forward_intermediates" not in got and "get_intermediate_layers" not in got:
                        ck.problems.append(f"{tag}/{e['name']}: no timm intermediate-feature API worked")
                    for how, t in got.items():
                        ck.le(f"{tag}: ViT {e['name']} vs timm {how} {str(dtype)[6:]}", rel_err(t, want), tol)
                m.to(torch.float32)

        if libs:
            ck.guarded(f"{tag}: torchvision/timm comparison", compare_vision)

        # MSC: the two scans
        msc_rec = R.msc_forward(cfg.msc, ref.msc, taps["mlp_out"], "recurrent")
        ck.le(f"{tag}: MSC recurrent vs chunked", rel_err(msc_rec, taps["msc_out"]), TOL_EXACT)

        # Turn 1
        p1 = ref.encode_text(R.zephyr_turn(q1, True))
        if have_tok:
            # Facts about the tokenizer, not about the fixture: reported, never fatal.
            back = ref.tokenizer.decode(p1, skip_special_tokens=False)
            report.append(f"{tag}: prompt decodes back exactly: {back == R.zephyr_turn(q1, True)}; "
                          f"dry-run stand-in tokenizer gives the same ids: "
                          f"{MiniBPE(args.tokenizer).encode(R.zephyr_turn(q1, True)).ids == p1}")
        logits_all = ref.logits(visual, p1)
        ck.le(f"{tag}: LM recurrent vs chunked", rel_err(ref.logits(visual, p1, "recurrent"), logits_all), TOL_EXACT)
        g1, chosen1, _ = ref.greedy(visual, p1, N_NEW)
        f32_errs["first_logits"] = max(f32_errs.get("first_logits", 0.0),
                                       rel_err(ref32.logits(t32["projector_out"], p1)[-1], chosen1[0]))
        g1b, _, _ = ref.greedy(visual, p1, N_NEW)
        ck.true(f"{tag}: greedy deterministic", g1 == g1b)
        full = ref.logits(visual, p1 + g1[:-1])
        ck.le(f"{tag}: prefill+steps vs full forward", rel_err(chosen1[-1], full[-1]), TOL_EXACT)
        ck.true(f"{tag}: >= {MIN_DISTINCT} distinct greedy tokens", len(set(g1)) >= MIN_DISTINCT, str(g1))
        m1 = min(margin(x) for x in chosen1)

        def compare_lm():
            e_tf = rel_err(libs.lm_logits(tf_model, ref_tf.inputs(visual, p1)), ref_tf.logits(visual, p1))
            ck.le(f"{tag}: LM vs transformers inputs_embeds (all positions)", e_tf, TOL_TF)
            seq, want_g = list(p1), ref_tf.greedy(visual, p1, N_NEW)[0]
            for _ in range(N_NEW):   # transformers re-run from scratch at every step
                seq.append(int(torch.argmax(libs.lm_logits(tf_model, ref_tf.inputs(visual, seq))[-1])))
            ck.true(f"{tag}: transformers greedy == reference greedy", seq[len(p1):] == want_g,
                    f"\n  tf  {seq[len(p1):]}\n  ref {want_g}")

        if tf_model is not None:
            ck.guarded(f"{tag}: transformers comparison", compare_lm)

        # Turn 2: the whole conversation re-run from empty state
        k = first_eos(g1, eos)
        reply1 = g1 if k < 0 else g1[:k]
        t2 = ref.encode_text(R.zephyr_turn(q2, False))
        p2 = p1 + reply1 + [eos] + t2
        conv = R.Conversation(ref, img)
        r1, pp1 = conv.ask(q1, N_NEW)
        ck.true(f"{tag}: Conversation turn 1 == greedy prefix", r1 == reply1 and pp1 == p1)
        g2, chosen2, _ = ref.greedy(visual, p2, N_NEW)
        r2, pp2 = conv.ask(q2, N_NEW)
        k2 = first_eos(g2, eos)
        ck.true(f"{tag}: Conversation turn 2 == from-scratch greedy",
                pp2 == p2 and r2 == (g2 if k2 < 0 else g2[:k2]))
        ck.true(f"{tag}: turn 2 >= {MIN_DISTINCT} distinct greedy tokens", len(set(g2)) >= MIN_DISTINCT, str(g2))
        # The engine keeps the state instead of re-running: feeding the rest of turn 1's reply, eos
        # and turn 2's text through decode steps must land on the same logits.
        st_logits = None
        _, caches_c = ref.prefill(visual, p1)
        for tok in reply1 + [eos] + t2:
            st_logits = ref.lm.step(tok, caches_c)
        ck.le(f"{tag}: turn 2 carried state vs re-run", rel_err(st_logits, chosen2[0]), TOL_EXACT)
        pictures_out.append({
            "file": file, "width": img.size[0], "height": img.size[1],
            "square_rgb": square_rgb,
            "preprocessed": {en: f32(t) for en, t in pre.items()},
            "features": {en: f32(t) for en, t in taps["features"].items()},
            "mlp_out": f32(taps["mlp_out"]), "msc_out": f32(taps["msc_out"]),
            "projector_out": f32(visual),
            "question": q1, "prompt_ids": p1, "first_logits": f32(chosen1[0]),
            "greedy_ids": g1, "first_eos_index": k, "greedy_min_margin": float(f"{m1:.6g}"),
            "turn1_reply_ids": reply1,
            "turn2": {"message": q2, "turn_ids": t2, "prompt_ids": p2, "first_logits": f32(chosen2[0]),
                      "greedy_ids": g2, "first_eos_index": k2,
                      "greedy_min_margin": float(f"{min(margin(x) for x in chosen2):.6g}")},
        })
        report.append(f"{tag}: greedy {g1} (first eos {k}, margin {m1:.3f}); turn 2 {g2} (first eos {k2})")
        if have_tok:
            report.append(f"{tag}: answer {ref.tokenizer.decode(reply1, skip_special_tokens=False)!r}")

    # The picture must matter: question 1 with the other picture's rows gives other logits.
    p1 = pictures_out[0]["prompt_ids"]
    a, b = ref.logits(visuals[0], p1)[-1], ref.logits(visuals[1], p1)[-1]
    ck.true(f"{name}: picture changes the logits (rel diff {rel_err(a, b):.3f})", rel_err(a, b) > 1e-2)
    same_tokens = ref.greedy(visuals[0], p1, N_NEW)[0] == ref.greedy(visuals[1], p1, N_NEW)[0]
    report.append(f"{name}: same greedy answer for both pictures on question 1: {same_tokens}")

    # Text only (no image) through the same package
    pt = ref.encode_text(R.zephyr_turn(TEXT_ONLY_QUESTION, True))
    gt, chosen_t, _ = ref.greedy(None, pt, N_NEW)
    ck.true(f"{name}: text-only >= {MIN_DISTINCT} distinct greedy tokens", len(set(gt)) >= MIN_DISTINCT, str(gt))
    conv = R.Conversation(ref, None)
    rt, _ = conv.ask(TEXT_ONLY_QUESTION, N_NEW)
    kt = first_eos(gt, eos)
    ck.true(f"{name}: text-only Conversation == greedy", rt == (gt if kt < 0 else gt[:kt]))
    if tf_model is not None:
        ck.guarded(f"{name}: text-only transformers comparison", lambda: ck.le(
            f"{name}: text-only LM vs transformers",
            rel_err(libs.lm_logits(tf_model, ref_tf.inputs(None, pt)), ref_tf.logits(None, pt)), TOL_TF))
    report.append(f"{name}: text-only greedy {gt} (first eos {kt})")

    lcfg = cfg.llm
    expected = {
        "package": name,
        "shapes": {
            "square_rgb": [cfg.image_size, cfg.image_size, 3],
            "preprocessed": {e.name: [3, cfg.image_size, cfg.image_size] for e in cfg.encoders},
            "features": {e.name: [cfg.visual_rows, e.dim] for e in cfg.encoders},
            "mlp_out": [cfg.visual_rows, cfg.mlp_out_dim], "msc_out": [cfg.visual_rows, cfg.mlp_out_dim],
            "projector_out": [cfg.visual_rows, lcfg.d_model], "first_logits": [lcfg.vocab_size],
        },
        "visual_rows": cfg.visual_rows,
        "letterbox_fill": list(R.letterbox_fill(cfg.encoders[0].mean)) if cfg.resize == "letterbox" else None,
        "gated_norm_group_size": {"llm_backbone": lcfg.group_size, "bidirectional_mamba": cfg.msc.group_size},
        "n_new": N_NEW,
        "float32_reference_rel_err": {k: float(f"{v:.3g}") for k, v in sorted(f32_errs.items())},
        "tolerance_note": (
            "All floats come from the float64 reference (tools/reference/mlmamba_ref.py) on the stored "
            "weights and pictures, rounded to float32 and printed with 8 significant digits; tensors are "
            "flattened row-major in the shapes given under 'shapes' (preprocessed is CHW, square_rgb is the "
            "8-bit HWC picture after the square resize, which PIL-exact resizing reproduces bit for bit). "
            "float32_reference_rel_err is ||f32 - f64|| / ||f64|| of the same reference evaluated in "
            "float32 (worst picture): a float32 engine should land near it; 1e-4 is a safe limit for "
            "features, mlp, MSC, projector and logits. greedy_ids are 24 argmax steps that do NOT stop at "
            "eos (id 0); first_eos_index is where the first 0 appears in them (-1: none). The turn-1 "
            "reply is greedy_ids up to that eos (or all 24), and turn 2's prompt_ids are the text ids "
            "of the whole conversation after the visual rows: turn 1 prompt + reply + [0] + turn_ids; "
            "its first_logits and greedy_ids come from re-running all of it (image included) from empty "
            "state. greedy_min_margin is the smallest top-1 minus top-2 logit gap over the steps. "
            "text_only runs the same LM with no visual rows."),
        "pictures": pictures_out,
        "text_only": {"question": TEXT_ONLY_QUESTION, "prompt_ids": pt, "first_logits": f32(chosen_t[0]),
                      "greedy_ids": gt, "first_eos_index": kt,
                      "greedy_min_margin": float(f"{min(margin(x) for x in chosen_t):.6g}")},
    }
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")
    report.append(f"{name}: float32 reference rel err {expected['float32_reference_rel_err']}")
    sizes = {n: os.path.getsize(os.path.join(folder, n)) for n in sorted(os.listdir(folder))}
    report.append(f"{name}: files " + ", ".join(f"{n} {s}" for n, s in sizes.items()) +
                  f" (total {sum(sizes.values())})")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    ap.add_argument("--tokenizer", default="tests/fixtures/tokenizer/tokenizer.json")
    ap.add_argument("--dry-run", action="store_true", help="reference only: no timm/torchvision/transformers")
    ap.add_argument("--only", help="comma-separated package names")
    args = ap.parse_args()
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    args.tokenizer_ok = os.path.exists(args.tokenizer)
    if args.tokenizer_ok:
        try:
            import tokenizers  # noqa: F401
        except ImportError:
            if not args.dry_run:
                raise
            args.tokenizer_ok = False
            print("NOTE: no tokenizers package: prompt ids are stand-ins (dry run)")
    libs = None if args.dry_run else Libs()
    os.makedirs(args.out, exist_ok=True)
    ck, report = Checks(), []
    if libs:
        report += ck.guarded("timm real-model facts", libs.real_model_facts) or []
    for spec in PACKAGES:
        if args.only and spec["name"] not in args.only.split(","):
            continue
        make_package(spec, args, libs, ck, report)

    print()
    print(f"{'check':96} {'value':>10} {'limit':>7}  ok")
    for what, v, tol, ok in ck.rows:
        vs = "" if math.isnan(v) else f"{v:10.2e}"
        ts = "" if tol is None else f"{tol:7.0e}"
        print(f"{what:96} {vs:>10} {ts:>7}  {'ok' if ok else 'FAIL'}")
    print()
    for line in report:
        print(line)
    if ck.problems:
        print(f"\nFAILED ({len(ck.problems)}):")
        for p in ck.problems:
            print("  " + p)
        return 1
    print("\nALL CHECKS PASSED" + (" (dry run: timm/torchvision/transformers not compared)" if args.dry_run else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
