#!/usr/bin/env python3
"""CPU benchmark of the engine against a PyTorch baseline, in one run on one machine.

Both run the same random Mamba-2 model (tools/make_random_model.py) in float32 with the same thread
count: the engine through `mlmamba-cli bench`, the baseline as the eager PyTorch reference
(tools/reference/mamba2_ref.py, chunked SSD for the prompt, recurrent steps for decoding; only the
last position's logits are computed at prefill, as the engine does). Writes JSON and a markdown table.

  /usr/bin/python3 tools/bench/cpu_bench.py --cli build/app/mlmamba-cli --out /tmp/bench [--preset 130m]
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))


def engine_numbers(cli, model, prompt_tokens, gen_tokens, repeat, threads):
    out = subprocess.run([cli, "bench", "--model", model, "--prompt-tokens", str(prompt_tokens), "--gen-tokens",
                          str(gen_tokens), "--repeat", str(repeat), "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def torch_numbers(model, prompt_tokens, gen_tokens, repeat, threads):
    import torch
    import mamba2_ref as ref

    torch.set_num_threads(threads)
    with open(os.path.join(model, "config.json")) as f:
        cfg = ref.Mamba2LMConfig.from_mamba_ssm(json.load(f))
    lm = ref.Mamba2LM.from_state_dict(cfg, ref.read_safetensors(os.path.join(model, "model.safetensors")),
                                      torch.float32)
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(1, cfg.vocab_size, (prompt_tokens,), generator=g).tolist()

    def prefill_last(ids):
        t = torch.as_tensor(ids)
        hidden = lm.w.embedding[t]
        residual = torch.zeros_like(hidden)
        caches = []
        for i in range(cfg.n_layer):
            residual = hidden + residual
            x = ref.rms_norm(residual, lm.w.layer_norm[i], cfg.norm_eps)
            hidden, cache = lm.mixer_forward(i, x, "chunked")
            caches.append(cache)
        final = ref.rms_norm((hidden + residual)[-1:], lm.w.norm_f, cfg.norm_eps)
        return (final @ lm.w.lm_head.t())[0], caches

    prefill, decode = [], []
    with torch.inference_mode():
        for r in range(repeat + 1):
            t0 = time.perf_counter()
            logits, caches = prefill_last(ids)
            t1 = time.perf_counter()
            tok = int(torch.argmax(logits))
            t2 = time.perf_counter()
            for _ in range(gen_tokens - 1):
                logits = lm.step(tok, caches)
                tok = int(torch.argmax(logits))
            t3 = time.perf_counter()
            if r == 0:
                continue  # warm-up
            prefill.append(prompt_tokens / (t1 - t0))
            decode.append((gen_tokens - 1) / (t3 - t2))
    med = lambda v: sorted(v)[len(v) // 2]
    return {"prefill_tokens_per_s": med(prefill), "decode_tokens_per_s": med(decode), "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="130m")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    model = os.path.join(a.out, f"mamba2-{a.preset}-random")
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_random_model.py"), "--preset", a.preset,
                        "--out", model], check=True)
    eng = engine_numbers(a.cli, model, a.prompt_tokens, a.gen_tokens, a.repeat, a.threads)
    base = torch_numbers(model, a.prompt_tokens, a.gen_tokens, a.repeat, a.threads)
    result = {
        "model": f"Mamba-2 {a.preset} (random weights, f32)",
        "parameters": eng["model"]["parameters"],
        "threads": a.threads,
        "prompt_tokens": a.prompt_tokens,
        "generated_tokens": a.gen_tokens,
        "engine": {k: eng[k] for k in ("prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_ms",
                                       "peak_memory_bytes")},
        "baseline_pytorch_eager_f32": base,
        "ratio_prefill": eng["prefill_tokens_per_s"] / base["prefill_tokens_per_s"],
        "ratio_decode": eng["decode_tokens_per_s"] / base["decode_tokens_per_s"],
    }
    with open(os.path.join(a.out, "cpu_bench.json"), "w") as f:
        json.dump(result, f, indent=2)
    table = (
        f"| {result['model']}, {a.threads} threads | engine | PyTorch {base['torch']} eager | ratio |\n"
        f"|---|---|---|---|\n"
        f"| prefill, {a.prompt_tokens} tokens (tokens/s) | {eng['prefill_tokens_per_s']:.0f} | "
        f"{base['prefill_tokens_per_s']:.0f} | {result['ratio_prefill']:.2f}x |\n"
        f"| decode (tokens/s) | {eng['decode_tokens_per_s']:.1f} | {base['decode_tokens_per_s']:.1f} | "
        f"{result['ratio_decode']:.2f}x |\n"
        f"| time to first token ({a.prompt_tokens}-token prompt) | {eng['time_to_first_token_ms']:.0f} ms | | |\n"
        f"| peak resident memory | {eng['peak_memory_bytes'] / 2**20:.0f} MiB | | |\n")
    with open(os.path.join(a.out, "cpu_bench.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
