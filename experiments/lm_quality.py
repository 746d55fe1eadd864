"""LM quality: LightNet's causal LM vs a GPT softmax-attention baseline, trained side by side in one process.

Both models (same width / depth / heads / GLU / tokenizer, ``benchmarks/gpt_baseline.py``; same steps × batch ×
length, optimizer and schedule) train on the Python-docs byte corpus; validation bits per byte on the same held-out
windows. The step count is set by timing LightNet against ``--max-train-seconds`` (at most ``--steps``). Decoding
speed is ``benchmarks/lm_decode.py``'s. Writes ``lm_compare.json`` + ``lm_compare.md`` to ``--out`` (one seed; mean
± std over seeds: ``python -m experiments.aggregate_seeds lm <out>/*/lm_compare.json``).

    python -m experiments.lm_quality --data .data/pydoc --seed 0 --steps 1250 --max-train-seconds 100000 --out $OUT
    python -m experiments.lm_quality --tiny --out /tmp/lmc                                   # CPU smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch.nn import functional as F

from benchmarks.gpt_baseline import GPTBaseline, GPTConfig
from lightnet.lm import LightNetForCausalLM, LightNetLMConfig
from lightnet.lm.corpus import eval_windows, load_corpus

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
    if result.get("ratios"):
        lines += ["", "ratios (LightNet / GPT): " + json.dumps(result["ratios"])]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="CPU smoke-test sizes")
    args = p.parse_args(argv)
    if args.tiny:
        args.dim, args.depth, args.heads, args.seq_len, args.batch = 32, 2, 2, 64, 4
        args.steps, args.max_train_seconds, args.eval_bytes, args.warmup = 6, 60, 2000, 2
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
        "args": vars(args), "quality": {},
    }
    if device.type == "cuda":
        from lightnet.kernels import available_backends

        result["lightnet_backends"] = list(available_backends("cuda"))
    ln_loss = lambda m, ids: m(ids, labels=ids).loss  # noqa: E731
    steps = plan_steps(lightnet, ln_loss, corpus.train, args, device)
    result["planned_steps"] = steps
    for name, model, loss, logits in (("lightnet", lightnet, ln_loss, lambda m, ids: m(ids).logits),
                                      ("gpt", gpt, lambda m, ids: m.loss(ids), lambda m, ids: m(ids))):
        r = train(name, model, loss, corpus.train, args, device, steps, float("inf"))
        r["val_bpb"] = eval_bpb(model, logits, corpus.val, args, device)
        r["params"] = model.num_parameters()
        result["quality"][name] = r
        print(f"[{name}] val bits/byte {r['val_bpb']:.4f}", flush=True)
    q = result["quality"]
    result["ratios"] = {"val_bpb": round(q["lightnet"]["val_bpb"] / q["gpt"]["val_bpb"], 4)}
    (out / "lm_compare.json").write_text(json.dumps(result, indent=1))
    (out / "lm_compare.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
