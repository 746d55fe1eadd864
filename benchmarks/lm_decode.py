"""LM decoding: LightNet's causal LM (constant-size recurrent state) vs a GPT with a KV cache, in one process.

Both models have the same width / depth / heads / GLU / RMSNorm / byte vocabulary (``benchmarks/gpt_baseline.py``:
RoPE softmax attention, SDPA, decode attention pinned to the flash / memory-efficient kernels). For each context
length L: prefill L random bytes for a batch, run 3 untimed then ``--steps`` timed greedy single-token steps; report
tokens/s, ms per step, the peak memory during the timed steps (weights + state or cache + temporaries) and the size
of the recurrent state / KV cache. Decoding speed and memory do not depend on the weights' values, so both models
are freshly initialised (bf16 weights on a GPU).

``--cuda-graph`` (default on CUDA) adds a ``graph`` row per model and context next to the ``eager`` one: LightNet
decodes with :class:`lightnet.lm.GraphedDecoder` (one captured step over its fixed-size state, greedy argmax on the
device); the GPT gets the same treatment in the form a static KV cache allows (Hugging Face's static cache does the
same): one captured step that writes k, v at a device position and attends over the whole pre-allocated cache of
``L + steps + 8`` positions with the later keys masked (``GPTBaseline.static_decode_step``). Each graph row says
whether its greedy tokens equal the eager loop's (``tokens_match``: the fraction of equal tokens). On the CPU the
same static-buffer steps run eagerly (mode ``static``: the plumbing, no graph).

    python benchmarks/lm_decode.py --out $OUT/lm                       # GPU: dim 384, depth 6, batch 16, L = 1K, 8K, 64K
    python benchmarks/lm_decode.py --contexts 1024 4096 16384 65536 --out $OUT/lm-graph   # eager + CUDA-graph rows
    python benchmarks/lm_decode.py --smoke --out /tmp/lm                # CPU, seconds
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

import torch

if not __package__:  # run as a file: the repository root replaces this folder on the path (no shadowed packages)
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from benchmarks.common import Row, environment, log, md_table, num, parser, pick, ratio, sync, write_result  # noqa: E402
from benchmarks.gpt_baseline import GPTBaseline, GPTConfig  # noqa: E402


class _GraphedGPTStep:
    """The GPT's decode step captured as a CUDA graph (or run eagerly on the CPU): static token, position, logits."""

    def __init__(self, model: torch.nn.Module, cache, token: torch.Tensor, capture: bool) -> None:
        self.model, self.cache = model, cache
        self.token = token.clone()
        self.position = torch.tensor(cache.length, device=token.device)
        self.graph = None
        if capture:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up writes cache rows >= length, rewritten by the timed steps
                for _ in range(3):
                    self._step()
            torch.cuda.current_stream().wait_stream(stream)
            self.position.fill_(cache.length)
            self.token.copy_(token)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._step()

    def _step(self) -> None:
        logits = self.model.static_decode_step(self.token, self.cache, self.position)
        self.position.add_(1)
        self.token.copy_(logits.argmax(-1))

    def __call__(self) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()
        return self.token


@torch.no_grad()
def decode(kind: str, model: torch.nn.Module, L: int, args, device: torch.device, graph: bool) -> Tuple[Row, torch.Tensor]:
    """Prefill ``L`` tokens, then time ``args.steps`` greedy decode steps of ``args.batch`` sequences (eager loop, or
    the captured step with ``graph``); returns the row and the tokens ``[steps, B]`` the timed steps produced."""
    prompt = torch.randint(0, 256, (args.batch, L), generator=torch.Generator().manual_seed(L)).to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    capture = device.type == "cuda"
    if kind == "lightnet":
        logits, cache = model.prefill(prompt, chunk_size=args.prefill_chunk)
        if graph:
            from lightnet.lm import GraphedDecoder

            decoder = GraphedDecoder(model, args.batch, capture=capture)
            decoder.start(logits, cache)
            step = decoder.step
        else:
            state = dict(token=logits.argmax(-1), cache=cache)

            def step() -> torch.Tensor:
                out, state["cache"] = model.decode_step(state["token"], state["cache"])
                state["token"] = out.argmax(-1)
                return state["token"]
    else:
        cache = model.new_cache(args.batch, L + args.steps + 8, device, next(model.parameters()).dtype)
        logits = model.prefill(prompt, cache, chunk_size=args.prefill_chunk)
        if graph:
            step = _GraphedGPTStep(model, cache, logits.argmax(-1), capture)
        else:
            state = dict(token=logits.argmax(-1))

            def step() -> torch.Tensor:
                state["token"] = model.decode_step(state["token"], cache).argmax(-1)
                return state["token"]
    for _ in range(3):  # warm-up: kernel compilation and autotuning (the graph was warmed up before its capture)
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokens = torch.empty(args.steps, args.batch, dtype=torch.long, device=device)
    sync(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        tokens[i].copy_(step())
    sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    mode = ("graph" if capture else "static") if graph else "eager"
    row = dict(model=kind, mode=mode, context=L, batch=args.batch, tokens_per_s=args.batch * args.steps / dt,
               ms_per_step=1e3 * dt / args.steps, decode_peak_mib=peak, state_mib=cache.memory_bytes() / 2**20,
               status="ok")
    return row, tokens


def run_context(kind: str, model: torch.nn.Module, L: int, args, device: torch.device) -> List[Row]:
    """The eager row and, with ``--cuda-graph``, the graph row (with ``tokens_match`` against the eager tokens)."""
    rows = []
    eager_tokens = None
    for graph in ([False, True] if args.cuda_graph else [False]):
        try:
            row, tokens = decode(kind, model, L, args, device, graph)
        except torch.OutOfMemoryError:
            row, tokens = dict(model=kind, mode="graph" if graph else "eager", context=L, batch=args.batch,
                               status="OOM"), None
        if graph and tokens is not None and eager_tokens is not None:
            row["tokens_match"] = float((tokens == eager_tokens).float().mean())
        eager_tokens = tokens if not graph else eager_tokens
        log(row)
        rows.append(row)
    return rows


def render(rows: List[Row]) -> str:
    lines = []
    get = lambda r, k: r.get(k, float("nan"))  # noqa: E731
    for mode in dict.fromkeys(r.get("mode", "eager") for r in rows):
        for L in dict.fromkeys(r["context"] for r in rows):
            a, b = (pick(rows, model=m, context=L, mode=mode) for m in ("lightnet", "gpt"))
            lines.append((mode, L, num(get(a, "tokens_per_s"), ".0f"), num(get(b, "tokens_per_s"), ".0f"),
                          ratio(get(a, "tokens_per_s"), get(b, "tokens_per_s")), num(get(a, "ms_per_step"), ".3f"),
                          num(get(a, "decode_peak_mib"), ".0f"), num(get(b, "decode_peak_mib"), ".0f"),
                          ratio(get(a, "decode_peak_mib"), get(b, "decode_peak_mib")),
                          num(get(a, "state_mib"), ".1f"), num(get(b, "state_mib"), ".1f"),
                          num(get(a, "tokens_match"), ".3f"), num(get(b, "tokens_match"), ".3f")))
    return md_table(["mode", "context L", "LightNet tok/s", "GPT tok/s", "speed ratio", "LightNet ms/step",
                     "LightNet decode peak MiB", "GPT decode peak MiB", "memory ratio", "LightNet state MiB",
                     "GPT KV cache MiB", "LightNet tokens = eager", "GPT tokens = eager"], lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = parser(__doc__)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--contexts", type=int, nargs="+", default=[1024, 8192, 65536])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--prefill-chunk", type=int, default=8192)
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the captured decode step of each model (default: on with CUDA, and with --smoke, "
                        "where the static step runs eagerly)")
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.dim, args.depth, args.heads, args.contexts = "cpu", 32, 2, 2, [16, 64]
        args.batch, args.steps, args.prefill_chunk = 2, 4, 32
    device = torch.device(args.device)
    if args.cuda_graph is None:
        args.cuda_graph = device.type == "cuda" or args.smoke
    from lightnet.lm import LightNetForCausalLM, LightNetLMConfig

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    models = dict(lightnet=LightNetForCausalLM(LightNetLMConfig(dim=args.dim, depth=args.depth, num_heads=args.heads)),
                  gpt=GPTBaseline(GPTConfig(dim=args.dim, depth=args.depth, num_heads=args.heads)))
    rows = []
    for kind, model in models.items():
        model = model.to(device, dtype).eval()
        for L in args.contexts:
            rows += run_context(kind, model, L, args, device)
        models[kind] = model.cpu()  # free the GPU for the other model
    write_result(args.out, "lm_decode", environment(device), args, rows, render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
