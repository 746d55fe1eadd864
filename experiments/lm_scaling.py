"""LM scaling: LightNet's causal LM vs a GPT of the same shape at several sizes, bits per byte vs training compute.

For each size ``DIMxDEPTHxHEADS`` both families (``lightnet.lm.LightNetForCausalLM`` and
``benchmarks/gpt_baseline.py``'s GPT: same width / depth / heads / GLU / byte vocabulary) train on the same byte
windows of the Python-docs corpus for ``--tokens-per-param`` × (LightNet's non-embedding parameters) tokens, with the
optimizer and schedule of :mod:`experiments.lm_quality`; held-out bits per byte are measured on the same validation
windows. ``--families`` adds LightNet variants (``'lightnet[use_tpe=false]'``, ``'lightnet[lr=0.004]'``) for
ablations at the same budget. Training compute is ``C = 6 · N · T`` (N: the family's own non-embedding parameters, T: tokens seen; the
attention's own FLOPs are left out, as in Kaplan et al.). A power law ``bpb = a · C^(−b)`` is fitted per family in
log-log space.

Writes to ``--out``: ``runs.csv`` (one row per size × family × seed, appended as runs finish; finished rows are skipped
when the command is run again), ``table.md`` (mean ± std over seeds, the fits) and ``scaling.png`` (both families and
their fitted laws)::

    python -m experiments.lm_scaling --sizes 64x2x2 96x3x3 128x4x4 192x4x3 --seeds 0 1 --out runs/lm_scaling
    python -m experiments.lm_scaling --tiny --out /tmp/lm_scaling                 # smoke test (seconds)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks.gpt_baseline import GPTBaseline, GPTConfig
from experiments.lm_quality import eval_bpb, train
from experiments.short_conv import add_short_conv
from lightnet.lm import LightNetForCausalLM, LightNetLMConfig
from lightnet.lm.corpus import load_corpus

FIELDS = ["size", "family", "seed", "params", "non_embedding_params", "steps", "tokens", "flops", "train_seconds",
          "last_loss", "val_bpb"]
FAMILIES = ("lightnet", "gpt")
#: optimizer settings a variant may change (everything else is a LightNetLMConfig field)
_OPTIM_KEYS = ("lr", "warmup")
#: model changes a variant may make that are not LightNetLMConfig fields (studied here before the library has them)
_STUDY_KEYS = ("short_conv",)  # kernel of a causal depthwise convolution on q / k / v (experiments.short_conv)


def parse_variant(text: str) -> Dict[str, object]:
    """``'use_tpe=false,lr=4e-3'`` → ``{'use_tpe': False, 'lr': 0.004}`` (values read as JSON, else kept as text);
    every key must be a :class:`~lightnet.lm.LightNetLMConfig` field, one of :data:`_OPTIM_KEYS` (optimiser settings)
    or one of :data:`_STUDY_KEYS` (model changes made outside the config, e.g. ``short_conv=4``)."""
    from dataclasses import fields

    known = {f.name for f in fields(LightNetLMConfig)} | set(_OPTIM_KEYS) | set(_STUDY_KEYS)
    out: Dict[str, object] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"variant item {item!r}: expected key=value with key a LightNetLMConfig field or one of "
                             f"{_OPTIM_KEYS + _STUDY_KEYS}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    if not out:
        raise ValueError(f"empty variant {text!r}")
    return out


def parse_size(text: str) -> Tuple[int, int, int]:
    """``'128x4x4'`` → ``(dim, depth, heads)``; a ValueError names a malformed size."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"size must be DIMxDEPTHxHEADS (positive ints), got {text!r}")
    dim, depth, heads = (int(p) for p in parts)
    if dim % heads:
        raise ValueError(f"size {text!r}: dim {dim} is not divisible by heads {heads}")
    return dim, depth, heads


def non_embedding_params(model: torch.nn.Module) -> int:
    """Parameters outside the token embedding and the output head (the ``N`` of ``C = 6 N T``)."""
    return sum(p.numel() for n, p in model.named_parameters() if not any(k in n for k in ("embed", "lm_head")))


def build(family: str, size: Tuple[int, int, int], seed: int, device: torch.device):
    """``(model, loss_fn, logits_fn)`` of ``family`` at ``size``, initialised from ``seed``: ``'gpt'``,
    ``'lightnet'`` or a LightNet variant ``'lightnet[key=value,...]'`` (config fields; optimizer keys are the
    trainer's)."""
    dim, depth, heads = size
    torch.manual_seed(seed)
    if family.startswith("lightnet"):
        variant = variant_of(family)
        overrides = {k: v for k, v in variant.items() if k not in _OPTIM_KEYS + _STUDY_KEYS}
        config = LightNetLMConfig(**{"dim": dim, "depth": depth, "num_heads": heads, **overrides})
        model = LightNetForCausalLM(config)
        if variant.get("short_conv"):
            add_short_conv(model, int(variant["short_conv"]))
        model = model.to(device)
        return model, (lambda m, ids: m(ids, labels=ids).loss), (lambda m, ids: m(ids).logits)
    model = GPTBaseline(GPTConfig(dim=dim, depth=depth, num_heads=heads)).to(device)
    return model, (lambda m, ids: m.loss(ids)), (lambda m, ids: m(ids))


def variant_of(family: str) -> Dict[str, object]:
    """The overrides of ``'lightnet[...]'`` (``{}`` for the plain families)."""
    if family.startswith("lightnet[") and family.endswith("]"):
        return parse_variant(family[len("lightnet["):-1])
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: 'lightnet', 'gpt' or 'lightnet[key=value,...]'")
    return {}


def fit_power_law(flops: Sequence[float], bpb: Sequence[float]) -> Tuple[float, float]:
    """Least-squares fit of ``log bpb = log a − b log C``: returns ``(a, b)``; needs two distinct compute values."""
    xs, ys = [math.log(c) for c in flops], [math.log(v) for v in bpb]
    if len(set(xs)) < 2:
        raise ValueError("a power-law fit needs runs at two or more compute budgets")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return math.exp(my - slope * mx), -slope


def read_rows(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: Dict[str, object]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def summarise(rows: List[Dict[str, str]]) -> Tuple[str, Dict[str, Tuple[float, float]]]:
    """Markdown table (mean ± std over seeds per size and family) and the per-family fits ``{family: (a, b)}``."""
    lines = ["| size | family | params | tokens | training FLOPs | seeds | val bits/byte |", "|---|---|---:|---:|---:|---:|---|"]
    fits: Dict[str, Tuple[float, float]] = {}
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    families = list(dict.fromkeys(r["family"] for r in rows))
    for size in sizes:
        for family in families:
            rs = [r for r in rows if r["size"] == size and r["family"] == family]
            if not rs:
                continue
            vals = [float(r["val_bpb"]) for r in rs]
            spread = f" ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else ""
            lines.append(f"| {size} | {family} | {int(rs[0]['params']):,} | {int(rs[0]['tokens']):,} | "
                         f"{float(rs[0]['flops']):.2e} | {len(rs)} | {statistics.fmean(vals):.4f}{spread} |")
    for family in families:
        rs = [r for r in rows if r["family"] == family]
        if len({r["size"] for r in rs}) >= 2:
            fits[family] = fit_power_law([float(r["flops"]) for r in rs], [float(r["val_bpb"]) for r in rs])
    if fits:
        lines += ["", "Fits `bpb = a · C^(−b)` over every run: " + "; ".join(
            f"{f}: a = {a:.3g}, b = {b:.4f}" for f, (a, b) in fits.items())]
    return "\n".join(lines) + "\n", fits


def plot(rows: List[Dict[str, str]], fits: Dict[str, Tuple[float, float]], path: Path) -> None:
    """Scatter of every run (bits per byte vs training FLOPs, log-log) with each family's fitted law."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    families = list(dict.fromkeys(r["family"] for r in rows))
    for family, color in zip(families, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        rs = [r for r in rows if r["family"] == family]
        if not rs:
            continue
        c = [float(r["flops"]) for r in rs]
        ax.scatter(c, [float(r["val_bpb"]) for r in rs], color=color, label=family, s=18)
        if family in fits:
            a, b = fits[family]
            grid = [min(c) * (max(c) / min(c)) ** (i / 49) for i in range(50)]
            ax.plot(grid, [a * g ** (-b) for g in grid], color=color, lw=1,
                    label=f"{family} fit: {a:.3g}·C^(−{b:.3f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs (6 · non-embedding params · tokens)")
    ax.set_ylabel("held-out bits per byte")
    ax.set_title("LightNet LM vs GPT, Python-docs bytes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> List[Dict[str, str]]:
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "runs.csv"
    done = {(r["size"], r["family"], r["seed"]) for r in read_rows(csv_path)}
    corpus = load_corpus(args.data)
    print(corpus.describe(), flush=True)
    for size_text in args.sizes:
        size = parse_size(size_text)
        reference, _, _ = build("lightnet", size, 0, device)
        steps = max(1, round(args.tokens_per_param * non_embedding_params(reference) / (args.batch * args.seq_len)))
        del reference
        for seed in args.seeds:
            for family in args.families:
                if (size_text, family, str(seed)) in done:
                    print(f"[{size_text} {family} seed {seed}] done, skipped", flush=True)
                    continue
                model, loss_fn, logits_fn = build(family, size, seed, device)
                optim = {k: v for k, v in variant_of(family).items() if k in _OPTIM_KEYS}
                run_args = argparse.Namespace(**{**vars(args), "seed": seed, **optim})
                t0 = time.time()
                r = train(f"{size_text} {family} s{seed}", model, loss_fn, corpus.train, run_args, device, steps,
                          float("inf"))
                bpb = eval_bpb(model, logits_fn, corpus.val, run_args, device)
                tokens = r["steps"] * args.batch * args.seq_len
                n = non_embedding_params(model)
                append_row(csv_path, dict(size=size_text, family=family, seed=seed, params=model.num_parameters(),
                                          non_embedding_params=n, steps=r["steps"], tokens=tokens,
                                          flops=6.0 * n * tokens, train_seconds=round(time.time() - t0, 1),
                                          last_loss=round(r["last_loss"], 4), val_bpb=round(bpb, 5)))
                print(f"[{size_text} {family} seed {seed}] {r['steps']} steps, val bits/byte {bpb:.4f}", flush=True)
    rows = read_rows(csv_path)
    table, fits = summarise(rows)
    header = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {device.type}, torch {torch.__version__}; "
              f"batch {args.batch} × {args.seq_len} bytes, {args.tokens_per_param} tokens per non-embedding "
              f"LightNet parameter, lr {args.lr}\n\n")
    (out / "table.md").write_text(header + table)
    (out / "fits.json").write_text(json.dumps({f: {"a": a, "b": b} for f, (a, b) in fits.items()}, indent=1))
    plot(rows, fits, out / "scaling.png")
    print(header + table, flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="prepared corpus folder (train.bin/val.bin) or text path; default pydoc")
    p.add_argument("--out", default="runs/lm_scaling")
    p.add_argument("--sizes", nargs="+", default=["64x2x2", "96x3x3", "128x4x4", "192x4x3"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--families", nargs="+", default=list(FAMILIES),
                   help="'lightnet', 'gpt' and LightNet variants 'lightnet[key=value,...]' (LightNetLMConfig fields, "
                        "lr, warmup), e.g. 'lightnet[use_tpe=false]' 'lightnet[lr=0.004]'")
    p.add_argument("--tokens-per-param", type=float, default=4.0,
                   help="training tokens per non-embedding LightNet parameter (the same tokens for both families)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--eval-bytes", type=int, default=100_000)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds)")
    args = p.parse_args(argv)
    if args.tiny:
        args.sizes, args.seeds, args.tokens_per_param = ["16x1x2", "32x1x2"], [0], 0.5
        args.seq_len, args.batch, args.eval_bytes, args.warmup = 32, 4, 2000, 2
    for s in args.sizes:
        parse_size(s)
    for f in args.families:
        variant_of(f)
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
