#!/usr/bin/env python3
"""GPU benchmark of the whole ML-Mamba pipeline: the engine against transformers, both against floors.

One run on one GPU, in parts, each in its own process so that one failing or running out of time
leaves the others' numbers (scripts/gpu_bench.sh runs them in this order, each under a time limit):

  floors    device copy bandwidth (torch copy of 2 GiB) and bf16 GEMM rate (8192^3)
  baseline  transformers Mamba2ForCausalLM (2.7B shape, random bf16) + SiglipVisionModel (SO400M/14
            @384) + Dinov2 (L/14, registers when available) on the same GPU
  ours      mlmamba-cli on a random package (tools/make_random_package.py): `bench` (1024-token
            prefill, decode, picture encode), `chat` (picture + 32-token question + 256 tokens,
            three rounds, the first cold), `generate --json` (the same in a fresh process);
            GPU memory polled through NVML or nvidia-smi while each runs
  report    merges the parts into gpu_bench.json + gpu_bench.md: ours, baseline, floor, target

  python3 tools/bench/gpu_bench.py floors   --out DIR
  python3 tools/bench/gpu_bench.py baseline --preset full --out DIR [--budget-s 170]
  python3 tools/bench/gpu_bench.py ours     --cli BUILD/bin/mlmamba-cli --package DIR --out DIR
  python3 tools/bench/gpu_bench.py report   --preset full --out DIR
  /usr/bin/python3 tools/bench/gpu_bench.py self-test [--cli build/app/mlmamba-cli]   (CPU, tiny sizes)

A number that could not be measured is written as {"value": null, "why": "..."}: never guessed.
"""
import argparse
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))

QUESTION_TOKENS = 32
ANSWER_TOKENS = 256
PREFILL_TOKENS = 1024
# Targets of the specification (docs/PERFORMANCE.md); memory is relative to the weights.
TARGETS = {"decode_tokens_per_s": 650.0, "ttft_image_question_ms": 12.0, "image_256_tokens_ms": 450.0,
           "gpu_memory_over_weights_bytes": 1.5e9}


def missing(why):
    return {"value": None, "why": why}


def got(value, how):
    return {"value": value, "how": how}


def median(v):
    return statistics.median(v) if v else None


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------
# The two numbers of each workload, from the package's own tensor layout.

def load_config(preset=None, package=None, overrides=()):
    if package and os.path.exists(os.path.join(package, "config.json")):
        with open(os.path.join(package, "config.json")) as f:
            return json.load(f)
    import make_random_package as mrp
    return mrp.build_spec(preset or "full", list(overrides))


def model_costs(cfg, question_tokens=QUESTION_TOKENS):
    """FLOPs and bf16 bytes of each workload. Products only: norms, scans and elementwise work are
    small next to them at these sizes, so the floors are slightly optimistic, never pessimistic."""
    import make_random_package as mrp
    layout = mrp.package_layout(cfg)
    size = lambda shape: int(math.prod(shape))
    llm = cfg["llm_backbone"]
    lm = [(n, s) for n, s, _ in layout if n.startswith("llm_backbone.")]
    lm_params = sum(size(s) for _, s in lm)
    lm_mat = sum(size(s) for n, s in lm if n.endswith("in_proj.weight") or n.endswith("out_proj.weight"))
    head = llm["vocab_size"] * llm["d_model"]  # logits of the last row only, as the engine does
    c = {"parameters": sum(size(s) for _, s, _ in layout), "lm_parameters": lm_params,
         "lm_bytes": 2 * lm_params, "question_tokens": question_tokens}
    c["weights_bytes"] = 2 * c["parameters"]
    c["prefill_flops"] = lambda rows: 2 * lm_mat * rows + 2 * head
    enc_flops, rows = 0, 0
    if "vision_backbone" in cfg:
        grid = cfg["image"]["size"] // cfg["vision_backbone"]["encoders"][0]["patch_size"]
        rows = grid * grid
        for e in cfg["vision_backbone"]["encoders"]:
            p = "vision_backbone." + e["name"] + "."
            t = rows + int(bool(e["class_token"])) + e["register_tokens"]
            mats = sum(size(s) for n, s, _ in layout if n.startswith(p) and n.endswith(".weight") and len(s) >= 2)
            blocks = e["feature_layer"] + 1
            enc_flops += 2 * mats * t + blocks * 4 * t * t * e["dim"]  # + QK^T and PV
        conn = sum(size(s) for n, s, _ in layout if n.split(".")[0] in ("mlp", "bidirectional_mamba", "projector")
                   and len(s) == 2)
        enc_flops += 2 * conn * rows
    c["image_rows"] = rows
    c["encode_flops"] = enc_flops
    c["vision_bytes"] = c["weights_bytes"] - c["lm_bytes"]
    return c


def floors_ms(costs, bw, gemm):
    """Each floor is the larger of bytes / bandwidth and FLOPs / GEMM rate (bytes/s, FLOP/s)."""
    t = lambda flops, nbytes: 1e3 * max(flops / gemm, nbytes / bw)
    f = {"decode_ms_per_token": t(0, costs["lm_bytes"]),
         "prefill_1024_ms": t(costs["prefill_flops"](PREFILL_TOKENS), costs["lm_bytes"]),
         "image_encode_ms": t(costs["encode_flops"], costs["vision_bytes"])}
    f["ttft_image_question_ms"] = f["image_encode_ms"] + t(
        costs["prefill_flops"](costs["image_rows"] + costs["question_tokens"]), costs["lm_bytes"])
    f["image_256_tokens_ms"] = f["ttft_image_question_ms"] + (ANSWER_TOKENS - 1) * f["decode_ms_per_token"]
    return f


# ------------------------------------------------------------------------------------------------
# floors: the two ceilings of this device, measured in the same run

def part_floors(out, device="cuda", copy_bytes=2 << 30, gemm_n=8192, repeat=10):
    import torch
    res = {"device": device, "torch": torch.__version__}
    if device == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)

    def timed(fn):
        for _ in range(3):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(repeat):
                fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b) / 1e3 / repeat
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - t0) / repeat

    src = torch.randn(copy_bytes // 4, device=device)
    dst = torch.empty_like(src)
    s = timed(lambda: dst.copy_(src))
    res["copy_bytes"] = 2 * copy_bytes  # read + written
    res["bandwidth_bytes_per_s"] = 2 * copy_bytes / s
    del src, dst
    dt = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(gemm_n, gemm_n, device=device).to(dt)  # random data: zeros run faster
    b = torch.randn(gemm_n, gemm_n, device=device).to(dt)
    s = timed(lambda: a @ b)
    res["gemm_n"] = gemm_n
    res["gemm_dtype"] = str(dt).replace("torch.", "")
    res["gemm_flops_per_s"] = 2 * gemm_n ** 3 / s
    write_json(os.path.join(out, "floors.json"), res)
    print(f"floors: copy {res['bandwidth_bytes_per_s'] / 1e9:.0f} GB/s, GEMM {res['gemm_flops_per_s'] / 1e12:.1f} "
          f"TFLOP/s ({res['gemm_dtype']}, {gemm_n}^3)")
    return res


# ------------------------------------------------------------------------------------------------
# baseline: transformers on the same GPU (or a tiny stand-in for the self-test)

def mamba2_config_kwargs(llm):
    d_inner = llm["expand"] * llm["d_model"]
    return dict(vocab_size=llm["vocab_size"], hidden_size=llm["d_model"], state_size=llm["d_state"],
                num_hidden_layers=llm["n_layer"], expand=llm["expand"], head_dim=llm["headdim"],
                n_groups=llm["ngroups"], num_heads=d_inner // llm["headdim"], conv_kernel=llm["d_conv"],
                chunk_size=llm["chunk_size"], tie_word_embeddings=True, layer_norm_epsilon=llm.get("norm_eps", 1e-5),
                pad_token_id=0, bos_token_id=0, eos_token_id=0)


def vit_config_kwargs(cfg, e):
    # Only the blocks the model reads (0..feature_layer) are built, as in the package.
    k = dict(hidden_size=e["dim"], num_hidden_layers=e["feature_layer"] + 1, num_attention_heads=e["heads"],
             image_size=cfg["image"]["size"], patch_size=e["patch_size"])
    if e["class_token"]:  # DINOv2 style
        k.update(mlp_ratio=e["mlp_hidden"] / e["dim"], layerscale_value=1.0, num_register_tokens=e["register_tokens"])
    else:  # SigLIP style
        k.update(intermediate_size=e["mlp_hidden"], vision_use_head=False)
    return k


def init_random_(module, torch):
    """Explicit random values everywhere: whether a constructor initialises is version-dependent,
    and uninitialised memory could hold NaN."""
    gens = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            # Drawn on the parameter's own device: 3.6 G normals on one CPU core would take a minute.
            g = gens.setdefault(str(p.device), torch.Generator(device=p.device).manual_seed(0))
            r = torch.empty(p.shape, dtype=torch.float32, device=p.device)
            if name.endswith("A_log"):
                r.uniform_(1.0, 16.0, generator=g).log_()
            elif name.endswith("dt_bias"):
                dt = torch.empty(p.shape, device=p.device).uniform_(math.log(1e-3), math.log(1e-1), generator=g).exp_()
                r = dt + torch.log(-torch.expm1(-dt))
            elif p.dim() >= 2:
                fan_in = p[0].numel() if "embed" not in name else 2500
                r.normal_(0.0, fan_in ** -0.5, generator=g)
            elif name.endswith("bias"):
                r.normal_(0.0, 0.02, generator=g)
            else:  # norm weights, D, layer scales
                r.normal_(1.0, 0.05, generator=g)
            p.copy_(r.to(p.device, p.dtype))


class TransformersPipeline:
    """The baseline's three pieces; the connector and projector have no transformers counterpart, so
    random rows of the language model's width stand for their output (their work is about a tenth
    of the encoders', see model_costs)."""

    def __init__(self, cfg, device, torch):
        import transformers
        from transformers import Mamba2Config, Mamba2ForCausalLM
        self.torch, self.device, self.dtype = torch, device, torch.bfloat16
        self.info = {"transformers": transformers.__version__, "torch": torch.__version__}
        try:
            from transformers.models.mamba2 import modeling_mamba2 as mm
            self.info["fast_path_available"] = bool(getattr(mm, "is_fast_path_available", False))
        except Exception as e:  # noqa: BLE001
            self.info["fast_path_available"] = f"unknown: {e}"
        for mod in ("mamba_ssm", "causal_conv1d"):
            try:
                __import__(mod)
                self.info[mod] = "installed"
            except Exception:  # noqa: BLE001
                self.info[mod] = "not installed"
        with torch.device(device):
            self.lm = Mamba2ForCausalLM(Mamba2Config(**mamba2_config_kwargs(cfg["llm_backbone"])))
        self.lm.to(self.dtype).eval()
        init_random_(self.lm, torch)
        emb, head = self.lm.get_input_embeddings().weight, self.lm.get_output_embeddings().weight
        self.info["lm_head_tied"] = emb.data_ptr() == head.data_ptr()
        self.encoders, self.vision_error = [], None
        try:  # the language model's numbers stay measurable if an encoder cannot be built
            for e in cfg.get("vision_backbone", {}).get("encoders", []):
                self.encoders.append(self._encoder(cfg, e, device, torch))
        except Exception as ex:  # noqa: BLE001
            self.vision_error = f"building the vision encoders failed: {type(ex).__name__}: {str(ex)[:300]}"
            self.info["vision_error"] = self.vision_error
        self.lm_params = sum(p.numel() for p in self.lm.parameters())

    def _encoder(self, cfg, e, device, torch):
        kw = vit_config_kwargs(cfg, e)
        if e["class_token"]:
            try:
                from transformers import Dinov2WithRegistersConfig as C, Dinov2WithRegistersModel as M
            except ImportError:
                from transformers import Dinov2Config as C, Dinov2Model as M
                kw.pop("num_register_tokens")
                self.info["dinov2_registers"] = "Dinov2WithRegistersModel missing: Dinov2Model without registers"
        else:
            from transformers import SiglipVisionConfig as C, SiglipVisionModel as M
        with torch.device(device):
            m = M(C(**kw))
        m.to(self.dtype).eval()
        init_random_(m, torch)
        self.info[f"encoder_{e['name']}"] = (f"{type(m).__name__}, {kw['num_hidden_layers']} blocks, attention "
                                             f"{getattr(m.config, '_attn_implementation', '?')}")
        return m

    def embed(self, ids):
        return self.lm.get_input_embeddings()(ids)

    def encode(self, pixels):
        if self.vision_error:
            raise RuntimeError(self.vision_error)
        return [m(pixel_values=pixels).last_hidden_state for m in self.encoders]

    def prefill_last(self, ids):
        # Versions that ignore logits_to_keep compute every position's logits: 0.26 TFLOP more, a
        # few percent of the prompt's products.
        return self.lm(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]

    def first_token(self, embeds):
        try:
            return self.lm(inputs_embeds=embeds, use_cache=True).logits[:, -1].argmax(-1)
        except Exception:  # noqa: BLE001  (a version that wants cache positions: the same work without)
            self.info["ttft_forward"] = "use_cache=False (the cached forward failed)"
            return self.lm(inputs_embeds=embeds, use_cache=False).logits[:, -1].argmax(-1)

    def generate(self, ids=None, embeds=None, n=1):
        kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        if embeds is not None:
            return self.lm.generate(inputs_embeds=embeds, **kw)
        return self.lm.generate(input_ids=ids, **kw)


class StandInPipeline:
    """Tiny torch stand-in with the same calls, so the self-test runs the timing code on the CPU."""

    def __init__(self, cfg, device, torch):
        self.torch, self.device, self.dtype = torch, device, torch.float32
        llm = cfg["llm_backbone"]
        d, v = llm["d_model"], llm["vocab_size"]
        self.emb = torch.randn(v, d) * 0.02
        self.w = [torch.randn(d, d) * d ** -0.5 for _ in range(llm["n_layer"])]
        self.enc = [torch.randn(3 * e["patch_size"] ** 2, e["dim"]) for e in cfg["vision_backbone"]["encoders"]]
        self.patch = cfg["vision_backbone"]["encoders"][0]["patch_size"]
        self.lm_params = v * d + llm["n_layer"] * d * d
        self.info = {"stand_in": "tiny torch stand-in (transformers not installed)", "torch": torch.__version__}

    def embed(self, ids):
        return self.emb[ids]

    def _run(self, x):
        for w in self.w:
            x = x + self.torch.tanh(x @ w)
        return x @ self.emb.t()

    def encode(self, pixels):
        p = self.patch
        cols = pixels.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(1, -1, 3 * p * p)
        return [cols @ w for w in self.enc]

    def prefill_last(self, ids):
        return self._run(self.embed(ids))[:, -1]

    def first_token(self, embeds):
        return self._run(embeds)[:, -1].argmax(-1)

    def generate(self, ids=None, embeds=None, n=1):
        x = self.embed(ids) if embeds is None else embeds
        tok = self._run(x)[:, -1].argmax(-1)
        out = [tok]
        for _ in range(n - 1):
            tok = self._run(self.embed(tok)[:, None])[:, -1].argmax(-1)
            out.append(tok)
        return self.torch.stack(out, 1)


def part_baseline(cfg, out, device="cuda", budget_s=170.0, stand_in=False):
    import torch
    t_start = time.perf_counter()
    left = lambda: budget_s - (time.perf_counter() - t_start)
    res = {"device": device}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def clock(fn, warm=1, reps=3):
        for _ in range(warm):
            fn()
        ts = []
        for _ in range(reps):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(1e3 * (time.perf_counter() - t0))
        return median(ts)

    def save():
        res["seconds"] = time.perf_counter() - t_start
        write_json(os.path.join(out, "baseline.json"), res)

    try:
        if not stand_in:
            try:
                import transformers  # noqa: F401
            except ImportError:
                res["error"] = "transformers is not installed"
                save()
                return res
        t0 = time.perf_counter()
        with torch.inference_mode():
            pipe = (StandInPipeline if stand_in else TransformersPipeline)(cfg, device, torch)
        res["info"] = pipe.info
        res["build_s"] = time.perf_counter() - t0
        res["lm_parameters"] = pipe.lm_params
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        g = torch.Generator(device="cpu").manual_seed(1)
        vocab = cfg["llm_backbone"]["vocab_size"]
        ids = lambda n: torch.randint(1, vocab, (1, n), generator=g).to(device)
        size = cfg["image"]["size"]
        pixels = torch.randn(1, 3, size, size, generator=g).to(device, pipe.dtype)
        rows = (size // cfg["vision_backbone"]["encoders"][0]["patch_size"]) ** 2
        image_rows = (torch.randn(1, rows, cfg["llm_backbone"]["d_model"], generator=g) * 0.5).to(device, pipe.dtype)
        question = ids(QUESTION_TOKENS)

        def attempt(key, fn, need_s):
            """One measurement: its failure or the time running out is written as its reason."""
            if left() < need_s:
                res[key + "_why"] = f"skipped: {left():.0f} s of the baseline's budget left, about {need_s} s needed"
                return None
            try:
                with torch.inference_mode():
                    res[key] = fn()
            except Exception as ex:  # noqa: BLE001  (the next measurement may still work)
                res[key + "_why"] = f"{type(ex).__name__}: {str(ex)[:300]}"
            save()
            return res.get(key)

        attempt("image_encode_ms", lambda: clock(lambda: pipe.encode(pixels), warm=2, reps=5), 5)
        p = ids(PREFILL_TOKENS)
        attempt("prefill_1024_ms", lambda: clock(lambda: pipe.prefill_last(p), warm=1, reps=3), 15)

        # Decode rate with the cache: two generate calls differing only in the number of new
        # tokens, so the prompt's cost cancels out.
        def decode():
            short, k = ids(16), 32
            t1 = clock(lambda: pipe.generate(ids=short, n=1), warm=1, reps=2)
            tk = clock(lambda: pipe.generate(ids=short, n=1 + k), warm=0, reps=2)
            res["decode_how"] = f"generate(16-token prompt, {1 + k} new) - generate(same, 1 new), medians of 2"
            if tk <= t1:
                raise RuntimeError(f"{1 + k} new tokens took no longer than 1 ({tk:.1f} ms, {t1:.1f} ms)")
            return k / ((tk - t1) / 1e3)
        attempt("decode_tokens_per_s", decode, 15)

        def rows_and_question():
            return torch.cat([image_rows, pipe.embed(question)], 1)

        def ttft():
            pipe.encode(pixels)
            return pipe.first_token(rows_and_question())
        res["ttft_rows"] = rows + QUESTION_TOKENS
        attempt("ttft_image_question_ms", lambda: clock(ttft, warm=1, reps=3), 15)

        def e2e():
            pipe.encode(pixels)
            return pipe.generate(embeds=rows_and_question(), n=ANSWER_TOKENS)
        derived = None
        if res.get("ttft_image_question_ms") and res.get("decode_tokens_per_s"):
            derived = res["ttft_image_question_ms"] + (ANSWER_TOKENS - 1) * 1e3 / res["decode_tokens_per_s"]
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        need = 5 + (derived / 1e3 * 1.5 if derived else 30)
        if attempt("image_256_tokens_ms", lambda: clock(e2e, warm=0, reps=1), need) is not None:
            res["image_256_how"] = "measured once: encode + generate(inputs_embeds, 256 new tokens)"
        elif derived is not None:
            res["image_256_tokens_ms"] = derived
            res["image_256_how"] = (f"derived: TTFT + {ANSWER_TOKENS - 1} tokens at the decode rate (measured run: "
                                    f"{res.pop('image_256_tokens_ms_why')})")
        if device != "cuda":
            res["peak_memory_image_256_bytes_why"] = f"device {device}: no CUDA memory statistics"
        elif res.get("image_256_tokens_ms") is not None or res.get("ttft_image_question_ms") is not None:
            res["peak_memory_image_256_bytes"] = torch.cuda.max_memory_allocated()
            res["peak_memory_how"] = ("torch.cuda.max_memory_allocated during " +
                                      ("image + 256 tokens" if "measured" in res.get("image_256_how", "") else
                                       "the measurements after TTFT") + " (weights of both halves resident)")
    except Exception as ex:  # noqa: BLE001  (whatever was measured before stays in the file)
        res["error"] = f"{type(ex).__name__}: {str(ex)[:500]}"
    save()
    print("baseline:", json.dumps({k: v for k, v in res.items() if k != "info"}, default=str)[:800])
    return res


# ------------------------------------------------------------------------------------------------
# ours: mlmamba-cli

class MemoryPoller:
    """Peak GPU memory while a process runs: that process's own use when NVML lists it, else the
    device's used memory minus what was used before it started."""

    def __init__(self, period=0.05):
        self.period, self.kind = period, None
        try:
            import pynvml
            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._dev = lambda: pynvml.nvmlDeviceGetMemoryInfo(h).used
            self._proc = lambda pid: next((p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                                           if p.pid == pid and p.usedGpuMemory), None)
            self.kind = "NVML"
        except Exception:  # noqa: BLE001
            if subprocess.run(["sh", "-c", "command -v nvidia-smi"], capture_output=True).returncode == 0:
                q = lambda a: subprocess.run(["nvidia-smi", a, "--format=csv,noheader,nounits", "-i", "0"],
                                             capture_output=True, text=True, timeout=10).stdout
                self._dev = lambda: int(q("--query-gpu=memory.used").split()[0]) * 2 ** 20
                self._proc = lambda pid: next((int(l.split(",")[1]) * 2 ** 20 for l in
                                               q("--query-compute-apps=pid,used_memory").splitlines()
                                               if l.split(",")[0].strip() == str(pid)), None)
                self.kind = "nvidia-smi"

    def run(self, cmd, timeout, env=None, stdin=None):
        """Runs cmd; returns (CompletedProcess-like dict, memory dict)."""
        mem = {"device_peak_delta_bytes": None, "process_peak_bytes": None, "polled_with": self.kind}
        before = self._dev() if self.kind else None
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
        stop = threading.Event()

        def poll():
            while not stop.is_set():
                try:
                    d = self._dev() - before
                    mem["device_peak_delta_bytes"] = max(mem["device_peak_delta_bytes"] or 0, d)
                    pp = self._proc(p.pid)
                    if pp:
                        mem["process_peak_bytes"] = max(mem["process_peak_bytes"] or 0, pp)
                except Exception:  # noqa: BLE001
                    pass
                stop.wait(self.period)
        th = threading.Thread(target=poll, daemon=True)
        if self.kind:
            th.start()
        try:
            so, se = p.communicate(stdin, timeout=timeout)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            p.kill()
            so, se = p.communicate()
            rc = "timeout"
        stop.set()
        if self.kind:
            th.join()
        return {"rc": rc, "stdout": so, "stderr": se}, mem


def write_picture(path, size):
    """A size x size picture: binary PPM for the GPU machine's engine, built without OpenCV, which
    reads nothing else; BMP (.bmp) for a build with OpenCV, which does not read PPM."""
    px = bytearray()
    for y in range(size):
        for x in range(size):
            px += bytes((x * 255 // size, y * 255 // size, 220 if (x // 48 + y // 48) % 2 else 40))
    with open(path, "wb") as f:
        if not path.endswith(".bmp"):
            f.write(b"P6\n%d %d\n255\n" % (size, size) + bytes(px))
            return
        import struct
        row = size * 3
        pad = (-row) % 4
        f.write(b"BM" + struct.pack("<IHHI", 54 + (row + pad) * size, 0, 0, 54))
        f.write(struct.pack("<IiiHHIIiiII", 40, size, size, 1, 24, 0, (row + pad) * size, 2835, 2835, 0, 0))
        for y in range(size - 1, -1, -1):  # bottom-up rows, BGR
            line = px[y * row:(y + 1) * row]
            for x in range(0, row, 3):
                line[x], line[x + 2] = line[x + 2], line[x]
            f.write(bytes(line) + b"\0" * pad)


def question_text(package, n=QUESTION_TOKENS):
    """A question of n tokens by the package's tokenizer when `tokenizers` is importable; otherwise
    a fixed question whose real length is read back from the engine's prompt ids."""
    words = ("what colour is the large shape near the top left corner of the picture and how many "
             "smaller shapes of the same kind can be seen around it in the lower half").split()
    try:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(os.path.join(package, "tokenizer.json"))
        text = ""
        for i in range(1000):
            cand = (text + " " + words[i % len(words)]).strip()
            if len(tok.encode(cand).ids) > n:
                break
            text = cand
        return text, len(tok.encode(text).ids)
    except Exception:  # noqa: BLE001
        return " ".join(words), None


STATS_RE = re.compile(r"image ([\d.e+-]+) ms \((\d+) rows\), prompt (\d+) rows in ([\d.e+-]+) ms, first token after "
                      r"([\d.e+-]+) ms, (\d+) tokens at ([\d.e+-]+) tokens/s, peak memory (\d+) MiB")


def parse_chat_stats(text):
    out = []
    for m in STATS_RE.finditer(text):
        enc, rows, prompt, pre, ttft, gen, rate, mib = m.groups()
        s = {"image_encode_ms": float(enc), "image_rows": int(rows), "prefill_tokens": int(prompt),
             "prefill_ms": float(pre), "time_to_first_token_ms": float(ttft), "generated_tokens": int(gen),
             "decode_tokens_per_s": float(rate), "host_peak_rss_mib": int(mib)}
        # The decode rate counts the tokens after the first: the answer's end is TTFT + those.
        s["total_ms"] = s["time_to_first_token_ms"] + (
            (s["generated_tokens"] - 1) * 1e3 / s["decode_tokens_per_s"] if s["decode_tokens_per_s"] > 0 else 0)
        out.append(s)
    return out


def first_json(text):
    start = text.find("{")
    try:
        return json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        return None


def part_ours(cli, package, out, device="cuda", budget_s=200.0, gen_tokens=256, repeat=3, picture_format="ppm",
              work=None):
    t_start = time.perf_counter()
    left = lambda: budget_s - (time.perf_counter() - t_start)
    cli = shlex.split(cli) if isinstance(cli, str) else list(cli)
    res = {"device": device, "cli": " ".join(cli), "package": package, "steps": {}}
    poller = MemoryPoller()
    env = dict(os.environ, MLMAMBA_GPU_VISION=os.environ.get("MLMAMBA_GPU_VISION", "1"))
    res["MLMAMBA_GPU_VISION"] = env["MLMAMBA_GPU_VISION"]
    logf = open(os.path.join(out, "ours.log"), "w")

    def save():
        res["seconds"] = time.perf_counter() - t_start
        write_json(os.path.join(out, "ours.json"), res)

    def call(name, args, share, stdin=None, env_=None):
        limit = max(5.0, min(left() - 5, share))
        r, mem = poller.run(cli + args, limit, env=env_ or env, stdin=stdin)
        logf.write(f"== {name}: {' '.join(cli + args)}\n-- status {r['rc']}\n-- stderr\n{r['stderr'][-4000:]}\n"
                   f"-- stdout (last 4000)\n{r['stdout'][-4000:]}\n")
        logf.flush()
        step = {"status": r["rc"], "limit_s": round(limit), "memory": mem}
        if r["rc"] != 0:
            step["why"] = f"exit status {r['rc']}: {(r['stderr'] or r['stdout']).strip()[-300:]}"
        res["steps"][name] = step
        return r, step

    # The picture outside $OUT: only eight files come back from the GPU machine.
    picture = os.path.join(work or out, "picture_384." + picture_format)
    try:
        write_picture(picture, 384)
        question, qtok = question_text(package)
        res["question"], res["question_tokens_by_tokenizer"] = question, qtok

        # 1. bench: 1024-token prefill, decode, and the picture conversation (warm medians).
        args = ["bench", "--model", package, "--device", device, "--prompt-tokens", str(PREFILL_TOKENS),
                "--gen-tokens", str(gen_tokens), "--repeat", str(repeat)]
        r, step = call("bench", args, 0.45 * budget_s)
        if r["rc"] != 0 and env["MLMAMBA_GPU_VISION"] == "1" and left() > 30:
            # The vision half on the GPU is new: keep the language model's numbers if it fails.
            r, step = call("bench_cpu_vision", args, 0.45 * budget_s,
                           env_=dict(env, MLMAMBA_GPU_VISION="0"))
        b = first_json(r["stdout"]) if r["rc"] == 0 else None
        if b:
            step["result"] = b
        save()

        # 2. chat: picture + question + 256 tokens, three rounds in one process (the first cold).
        turn = f"/image {picture}\n{question}\n/stats\n/reset\n"
        r, step = call("chat", ["chat", "--model", package, "--device", device, "--max-tokens", str(ANSWER_TOKENS),
                                "--ignore-eos"], 0.6 * left(), stdin=turn * repeat + "/quit\n")
        rounds = parse_chat_stats(r["stdout"])
        step["rounds"] = rounds
        if not rounds and "why" not in step:
            step["why"] = "no /stats line in the chat output (see ours.log)"
        save()

        # 3. generate --json: the same request in a fresh process (load excluded, first call cold).
        r, step = call("generate", ["generate", "--model", package, "--device", device, "--image", picture,
                                    "--prompt", question, "--max-tokens", str(ANSWER_TOKENS), "--ignore-eos",
                                    "--json"], left() - 5)
        g = first_json(r["stdout"]) if r["rc"] == 0 else None
        if g:
            step["result"] = {k: g.get(k) for k in ("stats", "device", "fallback_reason", "stop")}
            step["result"]["prompt_ids"] = len(g.get("prompt_ids", []))
            step["result"]["generated_ids"] = len(g.get("generated_ids", []))
    except Exception as ex:  # noqa: BLE001
        res["error"] = f"{type(ex).__name__}: {str(ex)[:500]}"
    save()
    logf.close()
    print("ours:", json.dumps({k: (v.get("status") if isinstance(v, dict) else v)
                               for k, v in res["steps"].items()}))
    return res


# ------------------------------------------------------------------------------------------------
# report

def summarise(cfg, floors, ours, base, package_info=None):
    costs = model_costs(cfg)
    res = {"model": cfg.get("name"), "parameters": costs["parameters"], "weights_bytes_bf16": costs["weights_bytes"],
           "lm_bytes_bf16": costs["lm_bytes"], "image_rows": costs["image_rows"], "package": package_info,
           "floors": floors, "metrics": {}, "not_done": []}
    flo = None
    if floors and floors.get("bandwidth_bytes_per_s") and floors.get("gemm_flops_per_s"):
        flo = floors_ms(costs, floors["bandwidth_bytes_per_s"], floors["gemm_flops_per_s"])
        res["floor_ms"] = flo
    steps = (ours or {}).get("steps", {})
    why_ours = (ours or {}).get("error") or ("the engine part did not run" if not ours else None)

    def step_why(name):
        s = steps.get(name)
        if s is None:
            return why_ours or f"`{name}` did not run (time limit reached before it)"
        return s.get("why", "no result")
    bench = next((steps[n] for n in ("bench", "bench_cpu_vision") if steps.get(n, {}).get("result")), None)
    bench_name = next((n for n in ("bench", "bench_cpu_vision") if steps.get(n, {}).get("result")), "bench")
    b = bench["result"] if bench else None
    rounds = steps.get("chat", {}).get("rounds") or []
    warm = rounds[1:] or []
    gen = (steps.get("generate", {}).get("result") or {}).get("stats")
    vision_note = (" (pictures on the CPU: the GPU vision run failed)" if bench_name == "bench_cpu_vision" else "")

    def our(key):
        if key == "image_encode_ms":
            if b and b.get("conversation"):
                return got(b["conversation"]["image_encode_ms"], f"bench conversation, median of {b['repeat']}"
                           + vision_note)
            if warm:
                return got(median([r["image_encode_ms"] for r in warm]), "chat, warm rounds")
            return missing(step_why(bench_name))
        if key == "ttft_image_question_ms":
            if warm:
                return got(median([r["time_to_first_token_ms"] for r in warm]),
                           f"chat, median of {len(warm)} warm rounds, {warm[0]['prefill_tokens']} prompt rows")
            if gen:
                return got(gen["time_to_first_token_ms"], "generate --json in a fresh process (cold: first call)")
            return missing(step_why("chat"))
        if key == "prefill_1024_ms":
            if b and b.get("prefill_tokens_per_s"):
                return got(PREFILL_TOKENS * 1e3 / b["prefill_tokens_per_s"],
                           f"bench --prompt-tokens {PREFILL_TOKENS}: 1024 / median prefill tokens/s")
            return missing(step_why(bench_name))
        if key == "decode_tokens_per_s":
            if b and b.get("decode_tokens_per_s"):
                return got(b["decode_tokens_per_s"], f"bench, {b['generated_tokens']} tokens, median of {b['repeat']}")
            return missing(step_why(bench_name))
        if key == "image_256_tokens_ms":
            if warm:
                return got(median([r["total_ms"] for r in warm]), "chat, warm rounds: TTFT + 255 tokens at the "
                           "round's decode rate (the CLI prints no total in chat)")
            if gen:
                return got(gen["total_ms"], "generate --json, fresh process (cold)")
            return missing(step_why("chat"))
        if key == "gpu_memory_bytes":
            for name in ("chat", "generate"):
                m = steps.get(name, {}).get("memory") or {}
                v = m.get("process_peak_bytes") or m.get("device_peak_delta_bytes")
                if v:
                    how = "that process's own use" if m.get("process_peak_bytes") else "device used minus before"
                    return got(v, f"peak while `{name}` ran (picture + 256 tokens), {m['polled_with']}, {how}; "
                               "includes the CUDA context")
            return missing("no NVML or nvidia-smi reading" if steps else step_why("chat"))

    def their(key):
        if base is None:
            return missing("the baseline part did not run")
        k = {"gpu_memory_bytes": "peak_memory_image_256_bytes"}.get(key, key)
        if base.get(k) is None:
            return missing(base.get(k + "_why") or base.get("error")
                           or "not reached within the baseline's time limit")
        how = {"image_256_tokens_ms": base.get("image_256_how"), "decode_tokens_per_s": base.get("decode_how"),
               "gpu_memory_bytes": base.get("peak_memory_how"),
               "ttft_image_question_ms": "encode + one forward over the rows and the 32 question tokens "
                                         "(connector not included)"}.get(key, "median after warm-up")
        return got(base[k], how)

    rows = [("image_encode_ms", "image encode, 384 px (ms)", "time", "image_encode_ms"),
            ("ttft_image_question_ms", "time to first token, picture + 32-token question (ms)", "time",
             "ttft_image_question_ms"),
            ("prefill_1024_ms", "prefill, 1024 tokens (ms)", "time", "prefill_1024_ms"),
            ("decode_tokens_per_s", "decode, batch 1 (tokens/s)", "rate", "decode_ms_per_token"),
            ("image_256_tokens_ms", "picture + question + 256 tokens, end to end (ms)", "time",
             "image_256_tokens_ms"),
            ("gpu_memory_bytes", "peak GPU memory (GB)", "bytes", None)]
    for key, label, kind, fkey in rows:
        o, t = our(key), their(key)
        if kind == "bytes":
            fl = costs["weights_bytes"]
        elif flo is None:
            fl = None
        else:
            fl = 1e3 / flo[fkey] if kind == "rate" else flo[fkey]
        m = {"label": label, "kind": kind, "ours": o, "baseline": t, "floor": fl}
        ov, tv = o["value"], t["value"]
        # Both ratios read "higher is better": speed-up over the baseline, share of the floor's speed.
        if ov and tv:
            m["vs_baseline"] = ov / tv if kind == "rate" else tv / ov
        if ov and fl:
            m["vs_floor"] = ov / fl if kind == "rate" else fl / ov
        if key == "gpu_memory_bytes":
            m["target"] = costs["weights_bytes"] + TARGETS["gpu_memory_over_weights_bytes"]
        else:
            m["target"] = TARGETS.get(key)
        if m["target"] is not None:
            m["meets_target"] = None if ov is None else (ov >= m["target"] if kind == "rate" else ov <= m["target"])
        res["metrics"][key] = m
    if b:
        res["engine_bench"] = {k: b.get(k) for k in ("time_to_first_token_ms", "prefill_tokens_per_s",
                                                     "decode_tokens_per_s", "conversation")}
        res["engine_device"] = b.get("model", {}).get("device")
        res["engine_fallback_reason"] = b.get("model", {}).get("fallback_reason")
    if rounds:
        res["chat_first_round_cold"] = rounds[0]
    if gen:
        res["generate_fresh_process"] = gen
    res["not_done"] = [
        "the CLI does not say where a picture was encoded (GPU or CPU fallback); "
        "an encode of hundreds of ms or more means the CPU",
        "the CLI reports host memory only: GPU memory is polled from outside (50 ms period, CUDA context included)",
        "the baseline has no connector / projector (no transformers counterpart): random rows stand for them",
    ]
    return res


def fmt(v, kind):
    if v is None:
        return ""
    if kind == "bytes":
        return f"{v / 1e9:.2f}"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}"


def markdown(s):
    f = s.get("floors") or {}
    head = (f"# GPU benchmark: {s['model']} ({s['parameters']:,} parameters, {s['weights_bytes_bf16'] / 1e9:.2f} GB "
            f"bf16)\n\nDevice: {f.get('gpu', f.get('device', '?'))}; copy bandwidth "
            f"{f.get('bandwidth_bytes_per_s', 0) / 1e9:.0f} GB/s, {f.get('gemm_dtype', '')} GEMM "
            f"{f.get('gemm_flops_per_s', 0) / 1e12:.0f} TFLOP/s (measured in this run).\n"
            "vs baseline: times faster than the baseline; vs floor: share of the floor's speed (1 = the floor).\n\n")
    t = "| metric | ours | baseline | vs baseline | floor | vs floor | target | meets |\n|---|---|---|---|---|---|---|---|\n"
    notes = []
    for key, m in s["metrics"].items():
        cell = []
        for who in ("ours", "baseline"):
            x = m[who]
            if x["value"] is None:
                cell.append("not measured*")
                notes.append(f"- {m['label']}, {who}: not measured: {x['why']}")
            else:
                cell.append(fmt(x["value"], m["kind"]))
        tgt = m.get("target")
        tgt_s = "" if tgt is None else (f">= {fmt(tgt, m['kind'])}" if m["kind"] == "rate" else f"<= {fmt(tgt, m['kind'])}")
        meets = {True: "yes", False: "no", None: "?"}[m.get("meets_target")] if "meets_target" in m else ""
        vb = f"{m['vs_baseline']:.2f}x" if m.get("vs_baseline") else ""
        vf = f"{m['vs_floor']:.2f}" if m.get("vs_floor") else ""
        t += (f"| {m['label']} | {cell[0]} | {cell[1]} | {vb} | {fmt(m['floor'], m['kind'])} | {vf} | {tgt_s} | "
              f"{meets} |\n")
    hows = [f"- {m['label']}: ours: {m['ours'].get('how')}; baseline: {m['baseline'].get('how')}"
            for m in s["metrics"].values() if m["ours"]["value"] is not None or m["baseline"]["value"] is not None]
    tail = "\n" + ("\n".join(notes) + "\n\n" if notes else "")
    tail += "How each number was taken:\n" + "\n".join(hows) + "\n\nNot done:\n" + \
        "\n".join(f"- {n}" for n in s["not_done"]) + "\n"
    return head + t + tail


def part_report(cfg, out, work=None):
    floors, ours, base = (read_json(os.path.join(out, n)) for n in ("floors.json", "ours.json", "baseline.json"))
    s = summarise(cfg, floors, ours, base, read_json(os.path.join(work or out, "package.json")))
    if base and base.get("info"):
        s["baseline_info"] = base["info"]
    write_json(os.path.join(out, "gpu_bench.json"), s)
    md = markdown(s)
    with open(os.path.join(out, "gpu_bench.md"), "w") as f:
        f.write(md)
    print(md)
    return s


# ------------------------------------------------------------------------------------------------
# self-test: the logic above on the CPU with tiny sizes and stand-ins

FAKE_CHAT_STATS = ("image {e} ms (9 rows), prompt {p} rows in 1.5 ms, first token after {t} ms, 256 tokens at "
                   "{r} tokens/s, peak memory 120 MiB")


def fake_cli(args):
    """Prints what mlmamba-cli prints (docs/cli.md), for the self-test without a GPU build."""
    cmd = args[0]
    if cmd == "bench":
        print(json.dumps({"model": {"device": "cuda:0", "fallback_reason": ""}, "prompt_tokens": 1024,
                          "generated_tokens": 256, "repeat": 3, "prefill_tokens_per_s": 12144.0,
                          "decode_tokens_per_s": 237.0, "time_to_first_token_ms": 84.3, "peak_memory_bytes": 1 << 30,
                          "conversation": {"image_rows": 729, "image_encode_ms": 20.0, "first_question_ttft_ms": 90.0,
                                           "follow_up_ttft_ms": 5.0, "follow_up_rereading_everything_ttft_ms": 95.0,
                                           "follow_up_saving": 19.0}}, indent=2))
    elif cmd == "chat":
        for i, line in enumerate(l for l in sys.stdin.read().splitlines() if l == "/stats"):
            print("> some answer text\n> " + FAKE_CHAT_STATS.format(e=30 - 10 * (i > 0), p=770, t=100 - 20 * (i > 0),
                                                                    r=240.0))
    elif cmd == "generate":
        print(json.dumps({"prompt_ids": list(range(41)), "generated_ids": list(range(256)), "text": "x",
                          "stop": "max_tokens", "device": "cuda:0", "fallback_reason": "",
                          "stats": {"prefill_tokens": 770, "prefill_ms": 80.0, "time_to_first_token_ms": 110.0,
                                    "generated_tokens": 256, "decode_ms": 1070.0, "decode_tokens_per_s": 238.0,
                                    "total_ms": 1180.0, "peak_memory_bytes": 1 << 30, "image_encode_ms": 30.0}}))
    return 0


def self_test(cli=None):
    ok = True

    def check(cond, what):
        nonlocal ok
        print(("ok   " if cond else "FAIL ") + what)
        ok = ok and bool(cond)

    with tempfile.TemporaryDirectory() as d:
        import make_random_package as mrp
        # The floors of the full model: what the specification says (decode ~770 tok/s, TTFT ~7 ms).
        full = mrp.build_spec("full", [])
        c = model_costs(full)
        check(c["parameters"] == 3_575_865_568, f"full preset parameters {c['parameters']:,}")
        f = floors_ms(c, 4.2e12, 788e12)
        check(740 < 1e3 / f["decode_ms_per_token"] < 800, f"decode floor {1e3 / f['decode_ms_per_token']:.0f} tok/s")
        check(5 < f["ttft_image_question_ms"] < 9, f"TTFT floor {f['ttft_image_question_ms']:.2f} ms")
        check(1.0e12 < c["encode_flops"] < 1.6e12, f"encode {c['encode_flops'] / 1e12:.2f} TFLOP")
        check(300 < f["image_256_tokens_ms"] < 360, f"picture + 256 tokens floor {f['image_256_tokens_ms']:.0f} ms")
        kw = mamba2_config_kwargs(full["llm_backbone"])
        check(kw["num_heads"] == 80 and kw["hidden_size"] == 2560 and kw["state_size"] == 128,
              "Mamba2Config arguments of the 2.7B shape")
        check(vit_config_kwargs(full, full["vision_backbone"]["encoders"][1])["num_hidden_layers"] == 26,
              "SigLIP: blocks 0..25")

        # Parts on the CPU, tiny sizes.
        tiny = mrp.build_spec("tiny", [])
        fl = part_floors(d, device="cpu", copy_bytes=8 << 20, gemm_n=128, repeat=3)
        check(fl["bandwidth_bytes_per_s"] > 0 and fl["gemm_flops_per_s"] > 0, "floors part on the CPU")
        try:
            import transformers  # noqa: F401
            have_tf = True
        except ImportError:
            have_tf = False
        base = part_baseline(tiny, d, device="cpu", budget_s=60, stand_in=not have_tf)
        check("error" not in base and base.get("image_256_tokens_ms"), "baseline part (stand-in)" if not have_tf
              else "baseline part (transformers, tiny config)")
        check(base.get("decode_tokens_per_s"), "baseline decode rate from two generate lengths")
        d0 = os.path.join(d, "no-time")
        os.makedirs(d0)
        late = part_baseline(tiny, d0, device="cpu", budget_s=0, stand_in=True)
        sl = summarise(tiny, None, None, late)["metrics"]
        check(all(sl[k]["baseline"]["value"] is None and "skipped" in sl[k]["baseline"]["why"]
                  for k in ("image_encode_ms", "prefill_1024_ms", "decode_tokens_per_s")),
              "baseline out of time: each number says it was skipped")
        fake = [sys.executable, os.path.abspath(__file__), "fake-cli"]
        pkg = os.path.join(d, "pkg")
        os.makedirs(pkg)
        with open(os.path.join(pkg, "config.json"), "w") as fh:
            fh.write(mrp.config_json(tiny))
        ours = part_ours(fake, pkg, d, device="cuda", budget_s=60)
        check(all(ours["steps"][n]["status"] == 0 for n in ("bench", "chat", "generate")), "ours part (stand-in CLI)")
        check(len(ours["steps"]["chat"]["rounds"]) == 3, "three chat rounds parsed")
        s = part_report(tiny, d)
        m = s["metrics"]
        check(abs(m["decode_tokens_per_s"]["ours"]["value"] - 237.0) < 1e-9, "decode from bench")
        check(abs(m["prefill_1024_ms"]["ours"]["value"] - 1024e3 / 12144.0) < 1e-9, "prefill 1024 ms from tok/s")
        check(m["ttft_image_question_ms"]["ours"]["value"] == 80.0, "TTFT: warm chat rounds only")
        check(abs(m["image_256_tokens_ms"]["ours"]["value"] - (80 + 255e3 / 240.0)) < 1e-6, "end to end from stats")
        check(m["decode_tokens_per_s"]["meets_target"] is False, "237 tok/s misses 650")
        check(m["gpu_memory_bytes"]["ours"]["value"] is None and "not measured" in open(
            os.path.join(d, "gpu_bench.md")).read(), "no GPU reading: written as not measured")
        bv = m["decode_tokens_per_s"]["baseline"]["value"]
        check(abs(m["decode_tokens_per_s"]["vs_baseline"] - 237.0 / bv) < 1e-9, "rate ratio: ours / baseline")
        tb = m["prefill_1024_ms"]["baseline"]["value"]
        check(abs(m["prefill_1024_ms"]["vs_baseline"] - tb / (1024e3 / 12144.0)) < 1e-9, "time ratio: baseline / ours")
        # Missing parts: every metric says why, nothing invented.
        os.remove(os.path.join(d, "ours.json"))
        s2 = summarise(tiny, None, None, None)
        check(all(x["ours"]["value"] is None and x["ours"]["why"] and x["baseline"]["why"]
                  for x in s2["metrics"].values()), "nothing measured: every cell says why")
        check("not measured*" in markdown(s2), "markdown of an empty run")
        check(parse_chat_stats("> xx " + FAKE_CHAT_STATS.format(e=1.5, p=40, t=2.25, r=1e3))[0]["total_ms"] == 257.25,
              "chat /stats line parsed")

        if cli:  # the real program on the tiny package, on this CPU
            real = os.path.join(d, "real")
            os.makedirs(real)
            subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_package.py"), "--preset", "tiny",
                            "--out", os.path.join(real, "pkg")], check=True, capture_output=True)
            r = part_ours(cli, os.path.join(real, "pkg"), real, device="cpu", budget_s=120, gen_tokens=16,
                          picture_format="bmp")
            check(all(r["steps"][n]["status"] == 0 for n in r["steps"]), "ours part with " + cli)
            check(len(r["steps"]["chat"]["rounds"]) == 3, "real chat /stats parsed")
            check(r["steps"]["generate"].get("result", {}).get("generated_ids") == ANSWER_TOKENS, "real generate --json")
            rs = summarise(tiny, fl, r, base)
            check(all(rs["metrics"][k]["ours"]["value"] for k in ("image_encode_ms", "ttft_image_question_ms",
                                                                  "prefill_1024_ms", "decode_tokens_per_s",
                                                                  "image_256_tokens_ms")), "real CLI: every timing")
    print("self-test", "passed" if ok else "FAILED")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["floors", "baseline", "ours", "report", "self-test", "fake-cli"])
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    if a.part == "fake-cli":
        return fake_cli(a.rest)
    p = argparse.ArgumentParser(prog=f"gpu_bench.py {a.part}")
    p.add_argument("--out", default="/tmp/gpu-bench")
    p.add_argument("--preset", default="full")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--package")
    p.add_argument("--cli")
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget-s", type=float, default=170.0)
    p.add_argument("--work", help="folder for the picture and package.json (default: --out)")
    p.add_argument("--picture-format", choices=["ppm", "bmp"], default="ppm",
                   help="ppm for an engine built without OpenCV (the GPU machine's), bmp for one with it")
    o = p.parse_args(a.rest)
    if a.part == "self-test":
        return self_test(o.cli)
    os.makedirs(o.out, exist_ok=True)
    if o.work:
        os.makedirs(o.work, exist_ok=True)
    cfg = load_config(o.preset, o.package, o.overrides)
    if a.part == "floors":
        part_floors(o.out, o.device)
    elif a.part == "baseline":
        part_baseline(cfg, o.out, o.device, o.budget_s)
    elif a.part == "ours":
        if not (o.cli and o.package):
            p.error("ours needs --cli and --package")
        part_ours(o.cli, o.package, o.out, o.device, o.budget_s, picture_format=o.picture_format, work=o.work)
    elif a.part == "report":
        part_report(cfg, o.out, o.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
