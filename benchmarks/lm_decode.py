"""LM decoding: LightNet's causal LM (constant-size recurrent state) vs a GPT with a KV cache, in one process.

Both models have the same width / depth / heads / GLU / RMSNorm / byte vocabulary (``benchmarks/gpt_baseline.py``:
RoPE softmax attention, SDPA, decode attention pinned to the flash / memory-efficient kernels). For each context
length L: prefill L random bytes for a batch, run 3 untimed then ``--steps`` timed greedy single-token steps; report
tokens/s, ms per step, the peak memory during the timed steps (weights + state or cache + temporaries) and the size
of the recurrent state / KV cache. Decoding speed and memory do not depend on the weights' values, so both models
are freshly initialised (bf16 weights on a GPU).

    python benchmarks/lm_decode.py --out $OUT/lm                       # GPU: dim 384, depth 6, batch 16, L = 1K, 8K, 64K
    python benchmarks/lm_decode.py --smoke --out /tmp/lm                # CPU, seconds
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

if not __package__:  # run as a file: the repository root replaces this folder on the path (no shadowed packages)
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from benchmarks.common import Row, environment, log, md_table, num, parser, ratio, sync, write_result  # noqa: E402
from benchmarks.gpt_baseline import GPTBaseline, GPTConfig  # noqa: E402


@torch.no_grad()
def decode(kind: str, model: torch.nn.Module, L: int, args, device: torch.device) -> Row:
    """Prefill ``L`` tokens, then time ``args.steps`` greedy decode steps of ``args.batch`` sequences."""
    prompt = torch.randint(0, 256, (args.batch, L), generator=torch.Generator().manual_seed(L)).to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if kind == "lightnet":
        logits, cache = model.prefill(prompt, chunk_size=args.prefill_chunk)
        step = lambda tok, c: model.decode_step(tok, c)  # noqa: E731
    else:
        cache = model.new_cache(args.batch, L + args.steps + 8, device, next(model.parameters()).dtype)
        logits = model.prefill(prompt, cache, chunk_size=args.prefill_chunk)
        step = lambda tok, c: (model.decode_step(tok, c), c)  # noqa: E731
    token = logits.argmax(-1)
    for _ in range(3):  # warm-up: kernel compilation and autotuning
        logits, cache = step(token, cache)
        token = logits.argmax(-1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        logits, cache = step(token, cache)
        token = logits.argmax(-1)
    sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    row = dict(model=kind, context=L, batch=args.batch, tokens_per_s=args.batch * args.steps / dt,
               ms_per_step=1e3 * dt / args.steps, decode_peak_mib=peak, state_mib=cache.memory_bytes() / 2**20,
               status="ok")
    log(row)
    return row


def render(rows: List[Row]) -> str:
    lines = []
    for L in dict.fromkeys(r["context"] for r in rows):
        a, b = (next((r for r in rows if r["model"] == m and r["context"] == L), {}) for m in ("lightnet", "gpt"))
        get = lambda r, k: r.get(k, float("nan"))  # noqa: E731
        lines.append((L, num(get(a, "tokens_per_s"), ".0f"), num(get(b, "tokens_per_s"), ".0f"),
                      ratio(get(a, "tokens_per_s"), get(b, "tokens_per_s")), num(get(a, "decode_peak_mib"), ".0f"),
                      num(get(b, "decode_peak_mib"), ".0f"), ratio(get(a, "decode_peak_mib"), get(b, "decode_peak_mib")),
                      num(get(a, "state_mib"), ".1f"), num(get(b, "state_mib"), ".1f")))
    return md_table(["context L", "LightNet tok/s", "GPT tok/s", "speed ratio", "LightNet decode peak MiB",
                     "GPT decode peak MiB", "memory ratio", "LightNet state MiB", "GPT KV cache MiB"], lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = parser(__doc__)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--contexts", type=int, nargs="+", default=[1024, 8192, 65536])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--prefill-chunk", type=int, default=8192)
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.dim, args.depth, args.heads, args.contexts = "cpu", 32, 2, 2, [16, 64]
        args.batch, args.steps, args.prefill_chunk = 2, 4, 32
    device = torch.device(args.device)
    from lightnet.lm import LightNetForCausalLM, LightNetLMConfig

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    models = dict(lightnet=LightNetForCausalLM(LightNetLMConfig(dim=args.dim, depth=args.depth, num_heads=args.heads)),
                  gpt=GPTBaseline(GPTConfig(dim=args.dim, depth=args.depth, num_heads=args.heads)))
    rows = []
    for kind, model in models.items():
        model = model.to(device, dtype).eval()
        for L in args.contexts:
            try:
                rows.append(decode(kind, model, L, args, device))
            except torch.OutOfMemoryError:
                rows.append(dict(model=kind, context=L, batch=args.batch, status="OOM"))
        models[kind] = model.cpu()  # free the GPU for the other model
    write_result(args.out, "lm_decode", environment(device), args, rows, render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
