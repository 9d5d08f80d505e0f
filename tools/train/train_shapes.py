#!/usr/bin/env python3
"""Trains the bundled Shapes demo model: a small ML-Mamba of the released architecture
(docs/demo-model.md says what it is and why these sizes).

    PYTHONUNBUFFERED=1 python3 tools/train/train_shapes.py --out OUT [--preset demo]
        [--train-seconds 480] [--max-steps N] [--resume checkpoint.pt] [--seed 1]

Steps, all seeded:
1. A byte-level BPE tokenizer (GPT-NeoX layout: NFC, ByteLevel, <|endoftext|> = 0, <|padding|> = 1)
   trained with Hugging Face `tokenizers` on generated questions and answers, the Zephyr template
   and some generic text. Without `tokenizers` (CPU smoke tests) a byte-only tokenizer of the same
   layout stands in. A resumed run reuses the checkpoint's tokenizer.
2. Training data generated on the fly by DataLoader workers from tools/shapes (world + the PIL
   renderer): scene seeds below 10^9 only (10^9 and up are the evaluation's), picture sides 96-1024
   (log-uniform), brought to image.size by exactly the engine's preprocessing (PIL bicubic,
   resize-naive). Each picture carries several questions, so the vision half runs once for them;
   about 10% are two-turn conversations about the same picture. The loss covers answer tokens and
   each answer's closing <|endoftext|> only, each answer weighted 1/sqrt(its length) so that long
   descriptions do not drown the one-word answers.
3. AdamW (decay on matrices only), linear warm-up then cosine decay, gradient clipping, bf16
   autocast. The schedule's progress is max(step / max_steps, elapsed / train_seconds): with a step
   count that fits the time it is step-exact (reproducible); if the machine is slower than planned,
   the decay still finishes at the deadline.
4. Held-out accuracy per family with greedy decoding on fresh scenes (seeds >= 10^9), with every
   renderer that imports (render.py; render_cv.py where OpenCV is present), periodically and at the end.
5. Writes into --out: the package (config.json, tokenizer.json, f16 weights in shards + index; or into
   --package-dir), loss.png, train_log.json and the checkpoint (checkpoint.pt plus f32 weights in
   parts of at most 15 MB, without the AdamW state) so that a later run can continue with --resume;
   with --state-dir also the full checkpoint with the AdamW state. A run continued with --resume
   keeps the schedule (--max-steps and --schedule-seconds count over all runs) and the curves.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import unicodedata

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))

import model as M                                                          # noqa: E402

EOS, PAD = 0, 1
EVAL_SEED_BASE = 10 ** 9
TRAIN_SEED_LIMIT = 10 ** 9
FAMILIES = ("count", "exist", "colour", "shape", "size", "where", "relation", "describe", "other")
# Sampling weights of the families in training: the ones that need counting, comparing or listing
# every object get more; "other" is one fixed sentence and needs little.
FAMILY_WEIGHTS = {"count": 1.4, "exist": 0.8, "colour": 0.9, "shape": 0.9, "size": 0.6, "where": 1.4,
                  "relation": 1.5, "describe": 1.5, "other": 0.3}

PRESETS = {
    # The bundled model. 144 px with 16 px patches: a 9x9 grid (81 visual rows), so the 3x3 position
    # grid falls on patch boundaries (3x3 patches per cell) and a small object (10% of the side,
    # 14 px) is about one patch. Fewer rows than 12 px patches (144) leave the language model less
    # to carry through its recurrent state before the question, and halve the cost of a step.
    "demo": dict(image_size=144, patch=16, enc_dims=(192, 160), enc_heads=(3, 4), enc_mlp=(576, 480),
                 enc_depth=(5, 5), mlp_out=256,
                 msc=dict(n_layer=2, d_state=16, headdim=32, ngroups=1, expand=2, d_conv=4, chunk_size=64),
                 projector_hidden=512,
                 llm=dict(d_model=256, n_layer=6, d_state=32, headdim=32, ngroups=1, expand=2, d_conv=4,
                          chunk_size=64)),
    # For CPU experiments on the training recipe (a few hundred steps on two cores).
    "cpu": dict(image_size=96, patch=12, enc_dims=(64, 48), enc_heads=(2, 2), enc_mlp=(128, 96),
                enc_depth=(2, 2), mlp_out=64,
                msc=dict(n_layer=1, d_state=8, headdim=16, ngroups=1, expand=2, d_conv=4, chunk_size=32),
                projector_hidden=96,
                llm=dict(d_model=64, n_layer=2, d_state=16, headdim=16, ngroups=1, expand=2, d_conv=4,
                         chunk_size=32)),
    # For CPU smoke tests of the whole script.
    "tiny": dict(image_size=48, patch=12, enc_dims=(32, 24), enc_heads=(2, 2), enc_mlp=(64, 48),
                 enc_depth=(2, 2), mlp_out=32,
                 msc=dict(n_layer=1, d_state=8, headdim=8, ngroups=1, expand=2, d_conv=4, chunk_size=16),
                 projector_hidden=48,
                 llm=dict(d_model=32, n_layer=2, d_state=8, headdim=8, ngroups=1, expand=2, d_conv=4,
                          chunk_size=16)),
}

# Off-topic questions of our own, beside the world's list, so that "other" means "not about the
# shapes" rather than "one of 84 memorised sentences".
OTHER_SUBJECTS = ["the moon", "my car", "the stock market", "cats", "the ocean", "football", "pizza",
                  "the internet", "history", "music", "a computer", "trees", "the weather", "Paris",
                  "my phone", "breakfast", "the election", "dinosaurs", "coffee", "winter"]
OTHER_FORMS = ["Tell me about {s}.", "What do you think of {s}?", "Write a short story about {s}.",
               "Why is {s} important?", "Can you explain {s}?", "What is the history of {s}?",
               "Give me a fact about {s}.", "How does {s} work?", "Is {s} good for me?",
               "Write a sentence about {s}"]

GENERIC_TEXT = """\
A small model answers questions about pictures of coloured shapes on a plain background.
Ask it how many shapes there are, which colour an object has, or where it is in the picture.
The weather was fine, so we walked along the river and talked about books, music and films.
Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 100 and 2024 appear in many texts.
Please write clearly: short sentences, simple words and correct punctuation help every reader.
She asked: "Is it far?" He answered: "No, it's just around the corner, next to the station."
"""


# --------------------------------------------------------------------------------------------------
# Shapes world access (tools/shapes; imported lazily so workers and tests can point elsewhere)
# --------------------------------------------------------------------------------------------------

def shapes_modules(shapes_dir: str):
    if shapes_dir not in sys.path:
        sys.path.insert(0, shapes_dir)
    import world as W                                                      # noqa: E402
    import render as R                                                     # noqa: E402
    renderers = {"pil": R.render}
    try:
        import render_cv as RC                                             # noqa: E402
        renderers["cv"] = RC.render
    except Exception:                                                      # noqa: BLE001
        pass                                                               # OpenCV or the module missing
    return W, renderers


def zephyr_turn(message: str, first: bool) -> str:
    # Same text as the engine and mlmamba_ref.zephyr_turn: only the first message is stripped.
    if first:
        return "<|user|>\n" + message.strip() + "<|endoftext|>\n<|assistant|>\n"
    return "\n<|user|>\n" + message + "<|endoftext|>\n<|assistant|>\n"


def to_square(img, size: int):
    """The engine's resize-naive preprocessing: PIL bicubic (antialiased) straight to size x size."""
    from PIL import Image
    bicubic = getattr(Image, "Resampling", Image).BICUBIC
    return np.asarray(img.convert("RGB").resize((size, size), bicubic), dtype=np.uint8)


def picture_side(rng) -> int:
    return int(round(math.exp(rng.uniform(math.log(96), math.log(1024)))))


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------

def _byte_to_unicode() -> dict:
    """The byte -> printable character table of byte-level BPE (GPT-2's convention)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _tokenizer_json(vocab: dict, merges: list) -> str:
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t, i in (("<|endoftext|>", EOS), ("<|padding|>", PAD))]
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"}, "pre_tokenizer": bl, "post_processor": bl, "decoder": bl,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": merges}}, ensure_ascii=False)


class Tok:
    """encode / decode with the HF library when present, else the byte-only stand-in (exact for a
    tokenizer without merges)."""

    SPECIAL = {"<|endoftext|>": EOS, "<|padding|>": PAD}

    def __init__(self, json_text: str):
        self.json_text = json_text
        spec = json.loads(json_text)
        self.n_ids = max(list(spec["model"]["vocab"].values()) + [EOS, PAD]) + 1
        self._hf = None
        try:
            from tokenizers import Tokenizer
            self._hf = Tokenizer.from_str(json_text)
        except ImportError:
            if spec["model"]["merges"]:
                raise RuntimeError("a tokenizer with merges needs the tokenizers package")
            b2u = _byte_to_unicode()
            vocab = spec["model"]["vocab"]
            self._byte_id = [vocab[b2u[b]] for b in range(256)]
            self._id_byte = {i: b for b, i in enumerate(self._byte_id)}

    def encode(self, text: str) -> list:
        if self._hf is not None:
            return self._hf.encode(text, add_special_tokens=False).ids
        out = []
        rest = text
        while rest:
            hits = [(rest.find(s), s) for s in self.SPECIAL if rest.find(s) >= 0]
            if not hits:
                out += [self._byte_id[b] for b in unicodedata.normalize("NFC", rest).encode()]
                break
            pos, s = min(hits)
            out += [self._byte_id[b] for b in unicodedata.normalize("NFC", rest[:pos]).encode()]
            out.append(self.SPECIAL[s])
            rest = rest[pos + len(s):]
        return out

    def decode(self, ids) -> str:
        if self._hf is not None:
            return self._hf.decode(list(ids), skip_special_tokens=False)
        inv = {v: k for k, v in self.SPECIAL.items()}
        out, buf = [], bytearray()
        for i in ids:
            if i in inv:
                out.append(buf.decode("utf-8", "replace"))
                buf = bytearray()
                out.append(inv[i])
            elif i in self._id_byte:
                buf.append(self._id_byte[i])
        out.append(buf.decode("utf-8", "replace"))
        return "".join(out)


def byte_tokenizer_json() -> str:
    b2u = _byte_to_unicode()
    return _tokenizer_json({b2u[b]: 2 + b for b in range(256)}, [])


def train_tokenizer(corpus: list, vocab_size: int) -> str:
    """HF byte-level BPE in the GPT-NeoX layout. Deterministic: the trainer breaks ties by pair order."""
    from tokenizers import (AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                            processors, trainers)
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=[AddedToken("<|endoftext|>", special=True, normalized=False),
                        AddedToken("<|padding|>", special=True, normalized=False)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    assert tok.token_to_id("<|endoftext|>") == EOS and tok.token_to_id("<|padding|>") == PAD
    return tok.to_str()


def _corpus_item(seed: int, shapes_dir: str) -> list:
    W, _ = shapes_modules(shapes_dir)
    rng = np.random.default_rng(seed)
    scene = W.sample_scene(rng)
    out = []
    for fam in FAMILIES:
        qa = W.sample_qa(scene, rng, fam)
        if qa is not None:
            out += [zephyr_turn(qa[1], True) + qa[2] + "<|endoftext|>", qa[1], qa[2]]
    return out


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------

class ShapesData(torch.utils.data.Dataset):
    """Item i = one scene (seed `seed_base + i`), its picture at image.size and `questions`
    conversations about it, tokenised with loss targets."""

    def __init__(self, shapes_dir, tok_json, image_size, questions, seed_base, two_turn=0.1, length=10 ** 8,
                 grid=12, families=None):
        assert seed_base + length <= TRAIN_SEED_LIMIT, "training seeds must stay below 10^9"
        self.grid, self.families = grid, families
        self.shapes_dir, self.tok_json = shapes_dir, tok_json
        self.image_size, self.questions, self.seed_base = image_size, questions, seed_base
        self.two_turn, self.length = two_turn, length
        self._tok = None

    def __len__(self):
        return self.length

    def _setup(self):
        if self._tok is None:
            self._tok = Tok(self.tok_json)
            self._W, self._renderers = shapes_modules(self.shapes_dir)

    def _qa(self, scene, rng):
        W = self._W
        fams = [f for f in FAMILY_WEIGHTS if self.families is None or f in self.families]
        p = np.array([FAMILY_WEIGHTS[f] for f in fams])
        for _ in range(6):
            fam = fams[int(rng.choice(len(fams), p=p / p.sum()))]
            if fam == "other" and rng.random() < 0.3:
                q = OTHER_FORMS[int(rng.integers(len(OTHER_FORMS)))].format(
                    s=OTHER_SUBJECTS[int(rng.integers(len(OTHER_SUBJECTS)))])
                q = q.lower() if rng.random() < 0.1 else q
                return "other", q, W.OTHER_ANSWER
            qa = W.sample_qa(scene, rng, fam)
            if qa is not None:
                return qa
        return W.sample_qa(scene, rng)

    def __getitem__(self, i):
        self._setup()
        W = self._W
        rng = np.random.default_rng(self.seed_base + int(i))
        scene = W.sample_scene(rng)
        img = self._renderers["pil"](scene, rng, picture_side(rng))   # training sees one renderer only
        pix = to_square(img, self.image_size)
        convs = []
        for _ in range(self.questions):
            turns = [self._qa(scene, rng)]
            if rng.random() < self.two_turn:
                turns.append(self._qa(scene, rng))
            convs.append(encode_conversation(self._tok, [(q, a) for _, q, a in turns], [f for f, _, _ in turns]))
        return pix, convs, patch_labels(W, scene, self.grid)


def patch_labels(W, scene, grid):
    """[grid*grid, len(PROBE_CLASSES)] int64 targets of the training-only probe, for the object whose
    box holds the patch centre (the nearest box centre, relative to its size, where boxes overlap);
    0 = no object:
    colour (1..8), shape (1..4), size (1..2); the object's 3x3 cell (1..9); the grid column and row
    of its centre (1..grid); its place in the description's order (1..6); and, on every patch, the
    number of objects in the picture (1..6).
    The last four ask each row to carry where its object is, where it comes in the description and
    how many there are, so that positions, relations, lists and counts can be read from the rows
    rather than worked out by the language model from the order of the rows."""
    c = (np.arange(grid) + 0.5) / grid
    u, v = np.meshgrid(c, c)                                               # u = x (column), v = y (row)
    best = np.full((grid, grid), np.inf)
    assert grid < PROBE_CLASSES[4], "the probe's centre classes hold grids of up to 12 patches"
    lab = np.zeros((grid, grid, len(PROBE_CLASSES)), np.int64)
    order = sorted(range(len(scene.objects)), key=lambda k: W._describe_key(scene.objects[k]))
    for o_index, o in enumerate(scene.objects):
        d = np.maximum(np.abs(u - o.cx) / (o.w / 2), np.abs(v - o.cy) / (o.h / 2))
        hit = (d <= 1.0) & (d < best)
        best[hit] = d[hit]
        r, cc = W.cell(o)
        lab[hit] = (1 + W.COLOUR_NAMES.index(o.colour), 1 + W.SHAPES.index(o.shape), 1 + W.SIZES.index(o.size),
                    1 + 3 * r + cc, 1 + min(grid - 1, int(o.cx * grid)), 1 + min(grid - 1, int(o.cy * grid)),
                    1 + order.index(o_index), 0)
    lab[..., 7] = len(scene.objects)
    return lab.reshape(grid * grid, len(PROBE_CLASSES))


def encode_conversation(tok, turns, families):
    """ids of [turn prompt, answer, eos]... with targets on answer + eos tokens. Each piece is
    tokenised on its own, as the engine does (prompt text, then generated ids, then eos)."""
    ids, tgt, wts = [], [], []
    for k, (q, a) in enumerate(turns):
        prompt = tok.encode(zephyr_turn(q, k == 0))
        ans = tok.encode(a) + [EOS]
        ids += prompt
        tgt += [-100] * len(prompt)
        wts += [0.0] * len(prompt)
        ids += ans
        tgt += ans
        wts += [1.0 / math.sqrt(len(ans))] * len(ans)
    # Position j predicts token j + 1.
    return {"ids": ids, "tgt": tgt[1:] + [-100], "wts": wts[1:] + [0.0], "family": families[0]}


# colour, shape, size, cell, centre column, centre row, description rank, objects in the picture
# (each with 0 = none); the centre column and row classes hold grids of up to 12 patches a side.
PROBE_CLASSES = (9, 5, 3, 10, 13, 13, 7, 7)


def probe_loss(probe, visual, labels):
    """Mean cross-entropy of the probe on RMS-normalised visual rows: the picture must be a large
    part of each row, not a small change on a constant, to be read from the normalised row."""
    v = visual.float()
    v = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6)
    out = probe(v).float()
    loss, k = 0.0, 0
    for j, n in enumerate(PROBE_CLASSES):
        loss = loss + F.cross_entropy(out[..., k:k + n].reshape(-1, n), labels[..., j].reshape(-1))
        k += n
    return loss / len(PROBE_CLASSES)


def collate(batch):
    pix = torch.from_numpy(np.stack([b[0] for b in batch]))                 # [B, S, S, 3] uint8
    convs = [(i, c) for i, b in enumerate(batch) for c in b[1]]
    L = max(len(c["ids"]) for _, c in convs)
    N = len(convs)
    ids = torch.full((N, L), PAD, dtype=torch.long)
    tgt = torch.full((N, L), -100, dtype=torch.long)
    wts = torch.zeros(N, L)
    for n, (_, c) in enumerate(convs):
        k = len(c["ids"])
        ids[n, :k] = torch.tensor(c["ids"])
        tgt[n, :k] = torch.tensor(c["tgt"])
        wts[n, :k] = torch.tensor(c["wts"])
    img_index = torch.tensor([i for i, _ in convs])
    labels = torch.from_numpy(np.stack([b[2] for b in batch]))            # [B, grid*grid, 3]
    return pix, ids, tgt, wts, img_index, labels


class RangeSampler(torch.utils.data.Sampler):
    def __init__(self, start, n):
        self.start, self.n = start, n

    def __iter__(self):
        return iter(range(self.start, self.start + self.n))

    def __len__(self):
        return self.n


def _worker_init(_):
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------

def _eval_item(args):
    """One held-out question: (renderer, family, k) -> dict with the picture at image.size.
    k % 5 == 4 items are two-turn (a second question about the same picture), scored on the second."""
    renderer, family, k, shapes_dir, image_size = args
    W, renderers = shapes_modules(shapes_dir)
    seed = EVAL_SEED_BASE + {"pil": 0, "cv": 1}.get(renderer, 2) * 10 ** 7 + FAMILIES.index(family) * 10 ** 6 + k
    rng = np.random.default_rng(seed)
    while True:
        scene = W.sample_scene(rng)
        qa = W.sample_qa(scene, rng, family)
        if qa is not None:
            break
    first = None
    if k % 5 == 4:
        first = W.sample_qa(scene, rng)
    img = renderers[renderer](scene, rng, picture_side(rng))
    return {"renderer": renderer, "family": family, "question": qa[1], "answer": qa[2],
            "first": None if first is None else [first[1], first[2]], "pix": to_square(img, image_size)}


def make_eval_set(pool, shapes_dir, image_size, renderers, per_family):
    jobs = [(r, f, k, shapes_dir, image_size) for r in renderers for f in FAMILIES for k in range(per_family)]
    return list(pool.map(_eval_item, jobs, chunksize=4)) if pool is not None else [_eval_item(j) for j in jobs]


@torch.no_grad()
def greedy(model, visual, prompts, max_new, device, batch=256):
    """Greedy answers for `prompts` (id lists), prompt n reading visual[n]. Full recompute at each
    step (answers are short; the describe ones a few dozen tokens), in bf16 autocast on CUDA."""
    V = visual.shape[1]
    outs = [[] for _ in prompts]
    for s in range(0, len(prompts), batch):
        idx = list(range(s, min(len(prompts), s + batch)))
        active = idx[:]
        for _ in range(max_new):
            if not active:
                break
            seqs = [prompts[n] + outs[n] for n in active]
            L = max(len(q) for q in seqs)
            ids = torch.full((len(seqs), L), PAD, dtype=torch.long)
            for j, q in enumerate(seqs):
                ids[j, :len(q)] = torch.tensor(q)
            ids = ids.to(device)
            last = torch.tensor([V + len(q) - 1 for q in seqs], device=device)
            with autocast(device):
                h = model.hidden(visual[active], ids)
                logits = model.llm_backbone.head(h[torch.arange(len(seqs), device=device), last])
            nxt = logits.float().argmax(-1).tolist()
            still = []
            for n, t in zip(active, nxt):
                if t == EOS:
                    continue
                outs[n].append(t)
                if len(outs[n]) < max_new:
                    still.append(n)
            active = still
    return outs


@torch.no_grad()
def evaluate(model, tok, items, device, max_new, W):
    model.eval()
    pix = torch.from_numpy(np.stack([it["pix"] for it in items])).to(device)
    visual = []
    for s in range(0, len(items), 256):
        with autocast(device):
            visual.append(model.encode_images(pix[s:s + 256].permute(0, 3, 1, 2).float() / 255.0).float())
    visual = torch.cat(visual)
    # Two-turn items: answer the first question, keep the model's own reply in the history (as the
    # engine does), then ask the scored one.
    firsts = [n for n, it in enumerate(items) if it["first"] is not None]
    first_replies = greedy(model, visual[firsts], [tok.encode(zephyr_turn(items[n]["first"][0], True))
                                                   for n in firsts], max_new, device) if firsts else []
    history = {n: tok.encode(zephyr_turn(items[n]["first"][0], True)) + r + [EOS]
               for n, r in zip(firsts, first_replies)}
    prompts = [history[n] + tok.encode(zephyr_turn(it["question"], False)) if n in history
               else tok.encode(zephyr_turn(it["question"], True)) for n, it in enumerate(items)]
    replies = greedy(model, visual, prompts, max_new, device)
    res = {}
    examples = []
    for it, r in zip(items, replies):
        pred = tok.decode(r)
        ok = bool(W.is_correct(pred, it["answer"]))
        for key in ("overall", it["family"], f"{it['renderer']}/{it['family']}", f"{it['renderer']}/overall") + \
                (("two_turn",) if it["first"] is not None else ()):
            c = res.setdefault(key, [0, 0])
            c[0] += ok
            c[1] += 1
        if not ok and len(examples) < 24:
            examples.append({"family": it["family"], "renderer": it["renderer"], "question": it["question"],
                             "answer": it["answer"], "prediction": pred})
    model.train()
    acc = {k: {"correct": v[0], "total": v[1], "accuracy": round(v[0] / v[1], 4)} for k, v in sorted(res.items())}
    return acc, examples


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------

def long_memory_init(model):
    """Starts the language model's heads with slow decays: softplus(dt_bias) log-uniform in
    [1e-4, 1e-2] and A = -exp(A_log) in [-4, -1] instead of mamba_ssm's [1e-3, 1e-1] and [-16, -1].
    The picture enters before the question, so its content has to survive some 20 prompt tokens in
    the recurrent state; with the usual init most heads forget it within a few tokens. On oracle
    visual rows (a CPU experiment) this init learnt colour and shape questions within a few hundred
    steps where the usual one stayed near chance."""
    with torch.no_grad():
        for layer in model.llm_backbone.backbone.layers:
            mx = layer.mixer
            mx.dt_bias.copy_(M._dt_bias_init(mx.nheads, 1e-4, 1e-2))
            mx.A_log.copy_(torch.log(torch.empty(mx.nheads).uniform_(1.0, 4.0)))


CHECKPOINT_PART_BYTES = 15 * 10 ** 6


def save_checkpoint(folder: str, ck: dict, with_optimizer: bool) -> list:
    """Writes `checkpoint.pt` (everything but the weights) and the f32 weights split into
    `checkpoint-weights-K.pt` parts of at most 15 MB each, so that every file stays under the size a
    file copied off the GPU machine may have. The AdamW state goes in only with `with_optimizer`
    (three times the weights: for a folder that stays on the machine). Returns the file names."""
    os.makedirs(folder, exist_ok=True)
    meta = {k: v for k, v in ck.items() if k != "model"}
    if not with_optimizer:
        meta["optimizer"] = None
    parts, cur, size = [], {}, 0
    for k, v in ck["model"].items():
        n = v.numel() * v.element_size()
        if cur and size + n > CHECKPOINT_PART_BYTES:
            parts.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += n
    parts.append(cur)
    names = []
    for j, part in enumerate(parts):
        names.append(f"checkpoint-weights-{j}.pt")
        torch.save(part, os.path.join(folder, names[-1] + ".tmp"))
    meta["weight_parts"] = names
    torch.save(meta, os.path.join(folder, "checkpoint.pt.tmp"))
    # Renamed only once all are written: a folder never holds a half-written checkpoint under the
    # final names.
    for name in names + ["checkpoint.pt"]:
        os.replace(os.path.join(folder, name + ".tmp"), os.path.join(folder, name))
    return ["checkpoint.pt"] + names


def load_checkpoint(path: str) -> dict:
    def load(f):
        try:
            return torch.load(f, map_location="cpu", weights_only=False)
        except TypeError:                                                # torch < 2.0 has no weights_only
            return torch.load(f, map_location="cpu")
    ck = load(path)
    if "model" not in ck:
        ck["model"] = {}
        for name in ck["weight_parts"]:
            ck["model"].update(load(os.path.join(os.path.dirname(os.path.abspath(path)), name)))
    return ck


def autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def lr_at(progress, step, peak, warmup, floor=0.05):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, progress)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def plot_loss(path, steps, losses, evals):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
        ax.plot(steps, losses, lw=0.6, alpha=0.35, color="tab:blue", label="loss (per step)")
        if len(losses) >= 20:
            k = max(5, len(losses) // 60)
            sm = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], sm, color="tab:blue", label=f"loss ({k}-step mean)")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("answer-token cross-entropy")
        if evals:
            ax2 = ax.twinx()
            ax2.plot([e["step"] for e in evals], [e["accuracy"]["overall"]["accuracy"] for e in evals],
                     "o-", color="tab:green", label="held-out accuracy")
            ax2.set_ylim(0, 1)
            ax2.set_ylabel("held-out accuracy")
            ax2.legend(loc="center right")
        ax.legend(loc="upper right")
        ax.set_title("Shapes demo model training")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return
    except ImportError:
        pass
    # Without matplotlib: a plain PIL line chart of log loss.
    from PIL import Image, ImageDraw
    W_, H_ = 800, 450
    im = Image.new("RGB", (W_, H_), "white")
    d = ImageDraw.Draw(im)
    if losses:
        lo, hi = math.log(max(1e-4, min(losses))), math.log(max(losses) + 1e-9)
        hi = hi if hi > lo else lo + 1
        n = max(1, len(losses) - 1)
        pts = [(40 + 740 * i / n, 420 - 380 * (math.log(max(1e-4, v)) - lo) / (hi - lo)) for i, v in enumerate(losses)]
        d.line(pts, fill=(31, 119, 180), width=1)
    d.text((45, 10), "answer-token cross-entropy (log scale) per step", fill="black")
    im.save(path)


def build_corpus(pool, shapes_dir, n_scenes, seed_base):
    items = [(seed_base + k, shapes_dir) for k in range(n_scenes)]
    if pool is not None:
        parts = pool.starmap(_corpus_item, items, chunksize=32)
    else:
        parts = [_corpus_item(*it) for it in items]
    W, _ = shapes_modules(shapes_dir)
    text = [line for p in parts for line in p]
    text += list(W.OTHER_QUESTIONS) + [W.OTHER_ANSWER]
    text += [f.format(s=s) for f in OTHER_FORMS for s in OTHER_SUBJECTS]
    text += GENERIC_TEXT.splitlines()
    text += ["<|user|>\n", "<|endoftext|>\n<|assistant|>\n", "\n<|user|>\n"]
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    ap.add_argument("--shapes-dir", default=os.path.join(ROOT, "tools", "shapes"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--train-seconds", type=float, default=480.0,
                    help="wall-clock second (from the script's start) at which training stops")
    ap.add_argument("--max-steps", type=int, default=4200,
                    help="the schedule's length in steps, counted over resumed runs too; training stops there")
    ap.add_argument("--schedule-seconds", type=float, default=None,
                    help="training seconds (summed over resumed runs) the learning-rate decay spans; "
                         "default: this run's training time")
    ap.add_argument("--state-dir", default=None,
                    help="also write the full checkpoint (with the AdamW state) here, for a run that continues "
                         "on the same machine")
    ap.add_argument("--package-dir", default=None, help="where the package goes (default: --out)")
    ap.add_argument("--export-only", action="store_true",
                    help="with --resume: write the package of the checkpoint into --out and stop")
    ap.add_argument("--batch-images", type=int, default=48)
    ap.add_argument("--questions", type=int, default=8, help="conversations per picture")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--vocab", type=int, default=1024, help="BPE vocabulary (ids) to train")
    ap.add_argument("--corpus-scenes", type=int, default=3000)
    ap.add_argument("--eval-every", type=float, default=90.0, help="seconds between held-out evaluations")
    ap.add_argument("--eval-per-family", type=int, default=10, help="periodic: per family and renderer")
    ap.add_argument("--final-eval-per-family", type=int, default=60)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--shard-mb", type=float, default=8.0)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--aux-weight", type=float, default=0.5, help="weight of the visual-row probe loss")
    ap.add_argument("--lm-memory-init", type=int, default=1, help="1: slow-decay init of the LM's heads")
    ap.add_argument("--families", default=None, help="comma-separated families to train on (default: all)")
    ap.add_argument("--bench-steps", type=int, default=0,
                    help="first time this many forward+backward passes on one batch (GPU speed without data waits)")
    ap.add_argument("--picture-once", type=int, default=1,
                    help="1: each picture's rows go through the language model once and their state is shared by "
                         "its questions (same arithmetic, fewer rows); 0: every sequence reads them itself")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    t0 = time.time()

    def elapsed():
        return time.time() - t0

    def log(msg):
        print(f"[{elapsed():7.1f}s] {msg}", flush=True)

    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    W, renderers = shapes_modules(a.shapes_dir)
    log(f"renderers: {sorted(renderers)}; device {device}")

    import multiprocessing as mp
    pool = mp.get_context("fork").Pool(a.workers) if a.workers > 0 else None

    # ---- tokenizer and configuration -------------------------------------------------------------
    ckpt = None
    if a.resume:
        ckpt = load_checkpoint(a.resume)
        tok_json, cfg = ckpt["tokenizer_json"], ckpt["config"]
        log(f"resuming from {a.resume} at step {ckpt['step']}" +
            ("" if ckpt.get("optimizer") else " (without the optimizer state: AdamW starts afresh)"))
        if a.export_only:
            model = M.MLMamba(cfg)
            model.load_state_dict(ckpt["model"])
            with open(os.path.join(a.out, "tokenizer.json.tmp"), "w", encoding="utf-8") as f:
                f.write(tok_json)
            files = M.export_package(model.float().eval(), a.out, dtype="f16",
                                     shard_bytes=int(a.shard_mb * 10 ** 6),
                                     tokenizer_json=os.path.join(a.out, "tokenizer.json.tmp"))
            os.remove(os.path.join(a.out, "tokenizer.json.tmp"))
            log(f"package of step {ckpt['step']}: {', '.join(files)}")
            return 0
    elif a.export_only:
        ap.error("--export-only needs --resume")
    else:
        try:
            import tokenizers  # noqa: F401
            corpus = build_corpus(pool, a.shapes_dir, a.corpus_scenes, TRAIN_SEED_LIMIT - 10 ** 7)
            tok_json = train_tokenizer(corpus, a.vocab)
            log(f"tokenizer trained on {len(corpus)} lines")
        except ImportError:
            tok_json = byte_tokenizer_json()
            log("tokenizers not installed: byte-only tokenizer (smoke test only)")
        tok = Tok(tok_json)
        vocab = ((tok.n_ids + 63) // 64) * 64
        p = PRESETS[a.preset]
        cfg = M.make_config("Shapes demo (ML-Mamba)", p["image_size"], p["patch"], p["enc_dims"], p["enc_heads"],
                            p["enc_mlp"], p["enc_depth"], p["mlp_out"], p["msc"], p["projector_hidden"], p["llm"],
                            vocab, max_sequence_length=2048, max_new_tokens=a.max_new_tokens)
    tok = Tok(tok_json)
    tok_path = os.path.join(a.out, "tokenizer.json")
    with open(tok_path, "w", encoding="utf-8") as f:
        f.write(tok_json)
    S = cfg["image"]["size"]

    # Longest description (6 objects) in tokens: max_new_tokens must hold it with room to spare.
    desc_len = []
    for k in range(200):
        rng = np.random.default_rng(TRAIN_SEED_LIMIT - 2 * 10 ** 7 + k)
        desc_len.append(len(tok.encode(W.describe(W.sample_scene(rng, n=6)))) + 1)
    log(f"tokenizer: {tok.n_ids} ids (vocab rows {cfg['llm_backbone']['vocab_size']}); "
        f"6-object description {min(desc_len)}-{max(desc_len)} tokens incl. eos")
    if max(desc_len) + 8 > cfg["generation"]["max_new_tokens"]:
        # Only the byte-only stand-in gets here: the default answer length must hold a description.
        cfg["generation"]["max_new_tokens"] = max(desc_len) + 16
        log(f"generation.max_new_tokens raised to {cfg['generation']['max_new_tokens']}")

    # ---- held-out sets (fixed, seeds >= 10^9) ----------------------------------------------------
    eval_items = make_eval_set(pool, a.shapes_dir, S, sorted(renderers), a.final_eval_per_family)
    per = {}
    periodic_items = []
    for it in eval_items:
        key = (it["renderer"], it["family"])
        if per.get(key, 0) < a.eval_per_family:
            periodic_items.append(it)
            per[key] = per.get(key, 0) + 1
    if pool is not None:
        pool.close()
        pool.join()
    log(f"held-out set: {len(eval_items)} questions ({len(periodic_items)} in the periodic check)")

    # ---- data ------------------------------------------------------------------------------------
    start_index = int(ckpt["next_index"]) if ckpt else 0
    seed_base = (a.seed % 90) * 10 ** 7                   # distinct seeds per --seed, all below 10^9
    grid = S // cfg["vision_backbone"]["encoders"][0]["patch_size"]
    data = ShapesData(a.shapes_dir, tok_json, S, a.questions, seed_base, length=10 ** 7, grid=grid,
                      families=a.families.split(",") if a.families else None)
    n_items = min(10 ** 7 - start_index, max(1, a.max_steps - (int(ckpt["step"]) if ckpt else 0)) * a.batch_images
                  + a.batch_images * 8)
    loader = torch.utils.data.DataLoader(
        data, batch_size=a.batch_images, sampler=RangeSampler(start_index, n_items), collate_fn=collate,
        num_workers=a.workers, pin_memory=device.type == "cuda", drop_last=True,
        persistent_workers=False, prefetch_factor=6 if a.workers > 0 else None, worker_init_fn=_worker_init)
    it_loader = iter(loader)                              # workers fork before CUDA starts

    # ---- model -----------------------------------------------------------------------------------
    model = M.MLMamba(cfg)
    if a.lm_memory_init and not ckpt:
        long_memory_init(model)
    if ckpt:
        model.load_state_dict(ckpt["model"])
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters; image {S}px, grid {model.grid}x{model.grid}")
    # Training-only probe on the visual rows (never exported): it asks every row to tell the colour,
    # shape and size of the object under its patch, so the rows the language model reads carry the
    # picture from the first steps on. Without it the run collapsed: the language model learnt the
    # answer priors, the rows became a large picture-independent constant and never recovered.
    probe = torch.nn.Linear(cfg["llm_backbone"]["d_model"], sum(PROBE_CLASSES))
    torch.nn.init.zeros_(probe.weight)                                   # no jolt to the rows at the start
    if ckpt and ckpt.get("probe"):
        probe.load_state_dict(ckpt["probe"])
    probe.to(device)
    decay = [p for n, p in model.named_parameters() if not M.no_decay(n, p)] + [probe.weight]
    no_dec = [p for n, p in model.named_parameters() if M.no_decay(n, p)] + [probe.bias]
    groups = [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_dec, "weight_decay": 0.0}]
    try:
        opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda")
    except (TypeError, RuntimeError):
        opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    if ckpt and ckpt.get("optimizer"):
        opt.load_state_dict(ckpt["optimizer"])
    step0 = int(ckpt["step"]) if ckpt else 0

    # ---- loop ------------------------------------------------------------------------------------
    V = model.grid ** 2
    # The curves of earlier runs continue in this run's log and plot.
    hist = (ckpt or {}).get("history") or {}
    steps, losses, aux_losses, evals = (list(hist.get(k, [])) for k in ("steps", "losses", "aux_losses", "evals"))
    trained_before = float((ckpt or {}).get("trained_seconds", 0.0))
    step = 0
    t_train = elapsed()
    schedule_span = max(1.0, a.schedule_seconds if a.schedule_seconds else a.train_seconds - t_train)
    last_eval = elapsed()
    data_wait = 0.0
    tokens_seen = 0
    if a.bench_steps:
        pix, ids, tgt, wts, img_index, _ = next(it_loader)
        pix = pix.to(device).permute(0, 3, 1, 2).float().div_(255.0)
        ids, tgt, wts, img_index = (t.to(device) for t in (ids, tgt, wts, img_index))
        for k in range(a.bench_steps + 2):
            if k == 2:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                tb = time.time()
            with autocast(device):
                vis = model.encode_images(pix)
                h = model.hidden_text(vis, ids, img_index) if a.picture_once else model.hidden(vis, ids, img_index)[:, V:]
                lg = model.llm_backbone.head(h[tgt >= 0])
            F.cross_entropy(lg.float(), tgt[tgt >= 0]).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        opt.zero_grad(set_to_none=True)
        mem = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else 0.0
        log(f"bench: {(time.time() - tb) / a.bench_steps * 1000:.1f} ms per forward+backward on "
            f"{ids.shape[0]}x{ids.shape[1] + V} tokens, peak {mem:.1f} GiB")
    log(f"training: up to {a.max_steps} steps or until {a.train_seconds:.0f}s")
    while step0 + step < a.max_steps and elapsed() < a.train_seconds:
        tw = time.time()
        try:
            pix, ids, tgt, wts, img_index, labels = next(it_loader)
        except StopIteration:
            break
        data_wait += time.time() - tw
        progress = max((step0 + step) / a.max_steps, (trained_before + elapsed() - t_train) / schedule_span)
        # A resumed run without the AdamW state warms up again (its moment estimates start at zero).
        warm_step = step0 + step if (ckpt is None or ckpt.get("optimizer")) else step
        lr = lr_at(progress, warm_step, a.lr, a.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        pix = pix.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        ids, tgt, wts, img_index, labels = (t.to(device, non_blocking=True)
                                            for t in (ids, tgt, wts, img_index, labels))
        with autocast(device):
            visual = model.encode_images(pix)
            if a.picture_once:                                         # text positions
                h = model.hidden_text(visual, ids, img_index)
            else:
                h = model.hidden(visual, ids, img_index)[:, V:]
            sel = tgt >= 0
            logits = model.llm_backbone.head(h[sel])
        ce = F.cross_entropy(logits.float(), tgt[sel], reduction="none")
        w = wts[sel]
        loss = (ce * w).sum() / w.sum()
        aux = probe_loss(probe, visual, labels)
        opt.zero_grad(set_to_none=True)
        (loss + a.aux_weight * aux).backward()
        gn = torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(probe.parameters()), a.clip)
        opt.step()
        step += 1
        tokens_seen += int(sel.sum())
        lv = float(loss.detach())
        steps.append(step0 + step)
        losses.append(lv)
        aux_losses.append(float(aux.detach()))
        if step % 25 == 0 or step <= 3:
            rate = step / max(1e-9, elapsed() - t_train)
            log(f"step {step0 + step} loss {lv:.4f} probe {aux_losses[-1]:.3f} lr {lr:.2e} gnorm {float(gn):.2f} {rate:.2f} steps/s "
                f"data-wait {data_wait:.1f}s seqs {ids.shape[0]}x{ids.shape[1] + V}")
        if elapsed() - last_eval >= a.eval_every and elapsed() < a.train_seconds - 20:
            acc, _ = evaluate(model, tok, periodic_items, device, cfg["generation"]["max_new_tokens"], W)
            evals.append({"step": step0 + step, "seconds": round(elapsed(), 1), "accuracy": acc})
            log("eval " + " ".join(f"{k}={v['accuracy']:.2f}" for k, v in acc.items() if "/" not in k))
            last_eval = elapsed()
    train_time = elapsed() - t_train
    log(f"trained {step} steps in {train_time:.1f}s ({step / max(1e-9, train_time):.2f} steps/s), "
        f"data wait {data_wait:.1f}s" + (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB"
                                         if device.type == "cuda" else ""))
    del it_loader

    # ---- export and checkpoint first (an evaluation failure must not cost the trained weights) ---
    import copy
    model_cpu = copy.deepcopy(model).float().cpu().eval()
    package_dir = a.package_dir or a.out
    files = M.export_package(model_cpu, package_dir, dtype="f16", shard_bytes=int(a.shard_mb * 10 ** 6),
                             tokenizer_json=tok_path)
    pkg_bytes = sum(os.path.getsize(os.path.join(package_dir, f)) for f in files)
    log(f"package: {', '.join(files)} ({pkg_bytes / 1e6:.2f} MB)")

    # The f16 package must answer like the f32 model: logits of a few held-out prompts compared.
    check = M.MLMamba(cfg)
    sd = {k: v.half().float() for k, v in model_cpu.state_dict().items()}
    check.load_state_dict(sd)
    check.eval()
    with torch.no_grad():
        few = eval_items[:4]
        px = torch.from_numpy(np.stack([it["pix"] for it in few])).permute(0, 3, 1, 2).float() / 255.0
        pr = [tok.encode(zephyr_turn(it["question"], True)) for it in few]
        L = max(map(len, pr))
        ids = torch.full((len(pr), L), PAD, dtype=torch.long)
        for j, q in enumerate(pr):
            ids[j, :len(q)] = torch.tensor(q)
        l32 = model_cpu.logits(model_cpu.encode_images(px), ids)
        l16 = check.logits(check.encode_images(px), ids)
        f16_err = float((l32 - l16).norm() / l32.norm())
    log(f"f16 storage: logits rel err {f16_err:.2e}")

    ck = {"model": {k: v.detach().float().cpu() for k, v in model_cpu.state_dict().items()},
          "probe": {k: v.detach().float().cpu() for k, v in probe.state_dict().items()},
          "optimizer": opt.state_dict(), "config": cfg, "tokenizer_json": tok_json,
          "step": step0 + step, "next_index": start_index + step * a.batch_images, "seed": a.seed,
          "trained_seconds": trained_before + train_time, "args": vars(a),
          "history": {"steps": steps, "losses": losses, "aux_losses": aux_losses, "evals": evals}}
    if a.state_dir:
        save_checkpoint(a.state_dir, ck, with_optimizer=True)
        log(f"full checkpoint (with the AdamW state) in {a.state_dir}")
    ck_files = save_checkpoint(a.out, ck, with_optimizer=False)
    log(f"checkpoint: {', '.join(ck_files)} (f32 weights, without the AdamW state)")

    # ---- final evaluation --------------------------------------------------------------------------
    acc, examples = {}, []
    try:
        acc, examples = evaluate(model, tok, eval_items, device, cfg["generation"]["max_new_tokens"], W)
        evals.append({"step": step0 + step, "seconds": round(elapsed(), 1), "accuracy": acc, "final": True})
        log("final eval " + " ".join(f"{k}={v['accuracy']:.3f}" for k, v in acc.items()))
        # The history inside the checkpoints gets the final evaluation too (weights unchanged).
        for folder, full in ((a.state_dir, True), (a.out, False)):
            if folder:
                save_checkpoint(folder, ck, with_optimizer=full)
    except Exception as e:                                                 # noqa: BLE001
        log(f"final evaluation failed: {e!r}")
        examples = [{"error": repr(e)}]

    plot_loss(os.path.join(a.out, "loss.png"), steps, losses, evals)
    log_obj = {
        "config": cfg, "preset": a.preset, "args": vars(a), "seed": a.seed, "parameters": n_params,
        "resumed_from_step": step0, "steps": step0 + step, "steps_this_run": step,
        "train_seconds": round(train_time, 1), "steps_per_second": round(step / max(1e-9, train_time), 3),
        "data_wait_seconds": round(data_wait, 1), "answer_tokens_seen": tokens_seen,
        "pictures_seen": step * a.batch_images, "total_seconds": round(elapsed(), 1),
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "loss_curve": {"step": steps[::max(1, len(steps) // 400)],
                       "loss": [round(v, 5) for v in losses[::max(1, len(losses) // 400)]],
                       "probe_loss": [round(v, 5) for v in aux_losses[::max(1, len(aux_losses) // 400)]]},
        "evaluations": evals, "final_accuracy": acc, "final_errors": examples,
        "package_bytes": pkg_bytes, "package_files": files, "f16_logits_rel_err": f16_err,
        "tokenizer_ids": tok.n_ids, "description_tokens_max": max(desc_len),
        "renderers": sorted(renderers), "torch": torch.__version__,
    }
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump(log_obj, f, indent=1)
        f.write("\n")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
