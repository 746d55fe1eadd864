"""Shared pieces of the benchmark scripts: device timing, ``torch.compile``, the environment record and the result
files (one ``<stem>.json`` with the environment, the arguments and every row, one ``<stem>.md`` with the tables)."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
COMPILE_MODES = ("eager", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
Row = Dict[str, Any]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> Tuple[float, float]:
    """``(first call s, median s of iters)``: the first call alone (it holds compilation), ``warmup - 1`` more untimed
    calls, then ``iters`` timed ones, each synchronised."""
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        fn()
    sync(device)
    times = []
    for _ in range(max(1, iters)):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return first, sorted(times)[len(times) // 2]


def compile_model(model: torch.nn.Module, mode: str, fullgraph: bool = False,
                  backend: str = "inductor") -> torch.nn.Module:
    """``model`` as is (``mode='eager'``) or ``torch.compile(model, mode=..., fullgraph=..., dynamic=False)``: static
    shapes, one graph per benchmarked size, as a training run at one resolution gets; fresh compiler caches.
    ``backend='eager'`` runs dynamo alone (with ``fullgraph``: a cheap check that the model traces without a break)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose from {COMPILE_MODES}")
    if mode == "eager":
        return model
    torch.compiler.reset()
    if backend != "inductor":
        return torch.compile(model, backend=backend, fullgraph=fullgraph, dynamic=False)
    return torch.compile(model, mode=None if mode == "default" else mode, fullgraph=fullgraph, dynamic=False)


def step_begin(mode: str) -> None:
    """Tell cudagraph trees that a new iteration starts (modes with CUDA graphs reuse their output buffers)."""
    if mode in CUDAGRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()


def _version(module: str) -> Optional[str]:
    try:
        return getattr(__import__(module), "__version__", "?")
    except Exception:  # an optional peer that is not installed
        return None


def environment(device: torch.device) -> Dict[str, Any]:
    """Date, device, versions and commit: what a result table must say about where it came from."""
    commit = os.environ.get("BENCH_COMMIT")  # where the checkout travels without .git (the device machines)
    try:
        commit = commit or subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                          capture_output=True, text=True, timeout=10).stdout.strip() or None
    except Exception:
        pass
    env = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
               python=platform.python_version(), commit=commit)
    env.update({m: _version(m) for m in ("torch", "triton", "timm", "diffusers", "fla", "lightnet")})
    return env


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``'1.23×'``, ``'—'`` when either is missing (NaN or 0)."""
    return f"{a / b:.2f}×" if a == a and b == b and b else "—"


def num(x: float, fmt: str) -> str:
    """``x`` formatted, ``'—'`` when it is missing (NaN)."""
    return format(x, fmt) if x == x else "—"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-relative error ``‖a − b‖ / ‖b‖`` in fp64 (NaN when ``a`` holds a non-finite value)."""
    if not torch.isfinite(a).all():
        return float("nan")
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def cell(row: Row, key: str, fmt: str) -> str:
    """``row[key]`` formatted, or the row's status when it did not run (``'OOM'``, ``'failed'``)."""
    if row.get("status", "ok") != "ok" or key not in row:
        return str(row.get("status", "—"))
    return format(row[key], fmt) if row[key] == row[key] else "—"


def pick(rows: Sequence[Row], **keys: Any) -> Row:
    """The first row whose fields equal ``keys`` (an empty dict when none does)."""
    return next((r for r in rows if all(r.get(k) == v for k, v in keys.items())), {})


def md_table(header: Sequence[str], lines: Sequence[Sequence[Any]], align: str = "") -> str:
    """A markdown table; ``align`` gives one character per column (``l`` left, anything else right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    return "\n".join(["| " + " | ".join(map(str, header)) + " |", rule]
                     + ["| " + " | ".join(map(str, line)) + " |" for line in lines])


def write_result(out: Optional[str], stem: str, env: Dict[str, Any], args: argparse.Namespace, rows: List[Row],
                 markdown: str) -> None:
    """Print the tables and, with ``out``, write ``<out>/<stem>.json`` (env, args, rows) and ``<out>/<stem>.md``."""
    head = f"{stem}: {env['device']}, torch {env['torch']}, triton {env['triton']}, {env['date']}, commit {env['commit']}"
    text = f"{head}\n\n{markdown}\n"
    print("\n" + text, flush=True)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"{stem}.json"), "w") as f:
            json.dump(dict(env=env, args=vars(args), rows=rows), f, indent=1, default=str)
        with open(os.path.join(out, f"{stem}.md"), "w") as f:
            f.write(text)


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every script shares: ``--out``, ``--device``, ``--smoke``."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    p.add_argument("--out", default=None, help="folder for the JSON and Markdown result")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="a tiny CPU run (seconds) that checks the script works")
    return p


def log(row: Row) -> None:
    """One JSON line per measured row, so a run cut by a time limit still shows what it measured."""
    print(json.dumps(row, default=str), file=sys.stdout, flush=True)
