"""LightNet causal LM vs a GPT softmax-attention baseline, side by side in one process.

1. Quality: both models (same width/depth/heads/GLU/tokenizer, same steps × batch × length, same optimizer and
   schedule) are trained on the Python-docs byte corpus; validation bits per byte on the same held-out windows.
2. Decoding: for each context length L, prefill L tokens, then time ``--decode-steps`` single-token steps; report
   tokens/s, the decode-time peak GPU memory, and the size of the recurrent state / KV cache.

Prints ratios and writes ``lm_compare.json`` + ``lm_compare.md`` to ``--out``.

    PYTHONPATH=. python benchmarks/lm_compare.py --data .data/pydoc --out $OUT              # GPU defaults
    PYTHONPATH=. python benchmarks/lm_compare.py --tiny --out /tmp/lmc                      # CPU smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpt_baseline import GPTBaseline, GPTConfig  # noqa: E402

from lightnet.lm import LightNetForCausalLM, LightNetLMConfig  # noqa: E402
from lightnet.lm.corpus import eval_windows, load_corpus  # noqa: E402

BOS = 257


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def batches(data: torch.Tensor, batch: int, seq_len: int, steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    body = seq_len - 1
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - body, (batch,), generator=g)
        rows = torch.stack([data[s:s + body] for s in starts.tolist()]).long()
        yield torch.cat([torch.full((batch, 1), BOS), rows], dim=1)


def train(name: str, model: torch.nn.Module, loss_fn: Callable, data: torch.Tensor, args, device, max_steps: int,
          max_seconds: float) -> Dict[str, float]:
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=device.type == "cuda")
    model.train()
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    t0 = time.time()
    steps, losses = 0, []
    for step, ids in enumerate(batches(data, args.batch, args.seq_len, max_steps, args.seed)):
        for gparam in opt.param_groups:
            gparam["lr"] = lr_at(step, max_steps, args.lr, args.warmup)
        ids = ids.to(device, non_blocking=True)
        with amp:
            loss = loss_fn(model, ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
        if step % 50 == 0 or step == max_steps - 1:
            losses.append(float(loss.detach()))
            print(f"[{name}] step {step} loss {losses[-1]:.4f} ({time.time() - t0:.1f}s)", flush=True)
        if time.time() - t0 > max_seconds:
            print(f"[{name}] time budget reached after {steps} steps", flush=True)
            break
    sync(device)
    return {"steps": steps, "train_seconds": time.time() - t0, "last_loss": losses[-1] if losses else float("nan")}


def plan_steps(model: torch.nn.Module, loss_fn: Callable, data: torch.Tensor, args, device) -> int:
    """Time a few LightNet steps (after warm-up/compilation), restore the initial weights, and return the number of
    steps that fits ``--max-train-seconds`` (at most ``--steps``). Both models then train that many steps with the
    same full learning-rate schedule."""
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    probe = argparse.Namespace(**{**vars(args), "seed": args.seed + 999})
    train("probe", model, loss_fn, data, probe, device, 3, float("inf"))
    t = train("probe", model, loss_fn, data, probe, device, 8, float("inf"))
    model.load_state_dict(init)
    per_step = t["train_seconds"] / t["steps"]
    steps = int(min(args.steps, args.max_train_seconds / per_step))
    print(f"[plan] LightNet {per_step * 1000:.0f} ms/step -> {steps} steps for both models", flush=True)
    return max(steps, 1)


@torch.no_grad()
def eval_bpb(model: torch.nn.Module, logits_fn: Callable, val: torch.Tensor, args, device) -> float:
    model.eval()
    windows = eval_windows(val, args.seq_len - 1, args.eval_bytes)
    nats, count = 0.0, 0
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for s in range(0, windows.shape[0], args.batch):
        w = windows[s:s + args.batch]
        ids = torch.cat([torch.full((w.shape[0], 1), BOS), w], dim=1).to(device)
        with amp:
            logits = logits_fn(model, ids).float()
        nats += float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"))
        count += ids[:, 1:].numel()
    return nats / count / math.log(2)


@torch.no_grad()
def decode_bench(kind: str, model, contexts: List[int], args, device) -> List[Dict[str, float]]:
    rows = []
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = model.to(dtype).eval()
    for L in contexts:
        g = torch.Generator().manual_seed(L)
        prompt = torch.randint(0, 256, (args.decode_batch, L), generator=g).to(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        t0 = time.time()
        if kind == "lightnet":
            logits, cache = model.prefill(prompt, chunk_size=args.prefill_chunk)
        else:
            cache = model.new_cache(args.decode_batch, L + args.decode_steps + 8, device, dtype)
            logits = model.prefill(prompt, cache, chunk_size=L)
        sync(device)
        prefill_s = time.time() - t0
        prefill_peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
        cache_bytes = cache.memory_bytes()
        token = logits.argmax(-1)
        # warm-up steps (kernel compilation / autotune), then timed steps
        for _ in range(3):
            if kind == "lightnet":
                logits, cache = model.decode_step(token, cache)
            else:
                logits = model.decode_step(token, cache)
            token = logits.argmax(-1)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        t0 = time.time()
        for _ in range(args.decode_steps):
            if kind == "lightnet":
                logits, cache = model.decode_step(token, cache)
            else:
                logits = model.decode_step(token, cache)
            token = logits.argmax(-1)
        sync(device)
        dt = time.time() - t0
        row = {
            "model": kind, "context": L, "batch": args.decode_batch,
            "decode_tokens_per_s": args.decode_batch * args.decode_steps / dt,
            "ms_per_step": 1000 * dt / args.decode_steps,
            "decode_peak_mem_MB": (torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else float("nan"),
            "prefill_peak_mem_MB": prefill_peak / 2**20 if device.type == "cuda" else float("nan"),
            "state_or_cache_MB": cache_bytes / 2**20,
            "prefill_tokens_per_s": args.decode_batch * L / prefill_s,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
        del cache, prompt
    return rows


def markdown(result: Dict) -> str:
    q = result["quality"]
    lines = [
        f"device: {result['device']}; torch {result['torch']}; {result['date']}",
        "",
        "| model | params | steps × batch × len | train s | val bits/byte |",
        "|---|---|---|---|---|",
    ]
    for k in ("lightnet", "gpt"):
        r = q[k]
        lines.append(f"| {k} | {r['params'] / 1e6:.2f} M | {r['steps']} × {result['args']['batch']} × "
                     f"{result['args']['seq_len']} | {r['train_seconds']:.0f} | {r['val_bpb']:.4f} |")
    lines += ["", "| model | context | batch | decode tok/s | ms/step | decode peak MB | state/KV MB | prefill tok/s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in result["decode"]:
        lines.append(f"| {r['model']} | {r['context']} | {r['batch']} | {r['decode_tokens_per_s']:.0f} | "
                     f"{r['ms_per_step']:.2f} | {r['decode_peak_mem_MB']:.0f} | {r['state_or_cache_MB']:.2f} | "
                     f"{r['prefill_tokens_per_s']:.0f} |")
    if result.get("ratios"):
        lines += ["", "ratios (LightNet / GPT): " + json.dumps(result["ratios"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="prepared corpus folder (train.bin/val.bin) or text path; default pydoc")
    p.add_argument("--out", default="lm_compare_out")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--max-train-seconds", type=float, default=60.0, help="LightNet time budget (sets the step count for both)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--eval-bytes", type=int, default=400_000)
    p.add_argument("--contexts", default="1024,8192,65536")
    p.add_argument("--decode-batch", type=int, default=16)
    p.add_argument("--decode-steps", type=int, default=64)
    p.add_argument("--prefill-chunk", type=int, default=8192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--tiny", action="store_true", help="CPU smoke-test sizes")
    args = p.parse_args()
    if args.tiny:
        args.dim, args.depth, args.heads, args.seq_len, args.batch = 32, 2, 2, 64, 4
        args.steps, args.max_train_seconds, args.eval_bytes, args.warmup = 6, 60, 2000, 2
        args.contexts, args.decode_batch, args.decode_steps, args.prefill_chunk = "64,256", 1, 4, 128
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(args.data)
    print(corpus.describe(), flush=True)
    torch.manual_seed(args.seed)
    ln_cfg = LightNetLMConfig(dim=args.dim, depth=args.depth, num_heads=args.heads)
    lightnet = LightNetForCausalLM(ln_cfg).to(device)
    torch.manual_seed(args.seed)
    gpt = GPTBaseline(GPTConfig(dim=args.dim, depth=args.depth, num_heads=args.heads)).to(device)
    result: Dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": vars(args), "quality": {}, "decode": [],
    }
    if device.type == "cuda":
        from lightnet.kernels import available_backends

        result["lightnet_backends"] = list(available_backends("cuda"))
    if not args.skip_train:
        ln_loss = lambda m, ids: m(ids, labels=ids).loss  # noqa: E731
        ln_logits = lambda m, ids: m(ids).logits  # noqa: E731
        steps = plan_steps(lightnet, ln_loss, corpus.train, args, device)
        result["planned_steps"] = steps
        r = train("lightnet", lightnet, ln_loss, corpus.train, args, device, steps, float("inf"))
        r["val_bpb"] = eval_bpb(lightnet, ln_logits, corpus.val, args, device)
        r["params"] = lightnet.num_parameters()
        result["quality"]["lightnet"] = r
        print(f"[lightnet] val bits/byte {r['val_bpb']:.4f}", flush=True)
        g = train("gpt", gpt, lambda m, ids: m.loss(ids), corpus.train, args, device, r["steps"], float("inf"))
        g["val_bpb"] = eval_bpb(gpt, lambda m, ids: m(ids), corpus.val, args, device)
        g["params"] = gpt.num_parameters()
        result["quality"]["gpt"] = g
        print(f"[gpt] val bits/byte {g['val_bpb']:.4f}", flush=True)
        (out / "lm_compare.json").write_text(json.dumps(result, indent=1))
    contexts = [int(c) for c in args.contexts.split(",")]
    for kind, model in (("lightnet", lightnet), ("gpt", gpt)):
        try:
            result["decode"] += decode_bench(kind, model, contexts, args, device)
        except torch.cuda.OutOfMemoryError as e:  # record and go on
            result.setdefault("errors", []).append(f"{kind}: OOM {e}")
        (out / "lm_compare.json").write_text(json.dumps(result, indent=1))
    ratios = {}
    for L in contexts:
        a = next((r for r in result["decode"] if r["model"] == "lightnet" and r["context"] == L), None)
        b = next((r for r in result["decode"] if r["model"] == "gpt" and r["context"] == L), None)
        if a and b:
            ratios[f"decode_speed@{L}"] = round(a["decode_tokens_per_s"] / b["decode_tokens_per_s"], 3)
            if device.type == "cuda":
                ratios[f"decode_peak_mem@{L}"] = round(a["decode_peak_mem_MB"] / b["decode_peak_mem_MB"], 3)
    if result["quality"]:
        ratios["val_bpb"] = round(result["quality"]["lightnet"]["val_bpb"] / result["quality"]["gpt"]["val_bpb"], 4)
    result["ratios"] = ratios
    (out / "lm_compare.json").write_text(json.dumps(result, indent=1))
    if result["quality"]:
        (out / "lm_compare.md").write_text(markdown(result))
        print(markdown(result))
    print("ratios (LightNet / GPT):", json.dumps(ratios))


if __name__ == "__main__":
    main()
