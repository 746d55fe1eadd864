"""Numerical stability of mixed-precision training on CPU: bf16 autocast and fp16 autocast with loss scaling.

Runs ``--steps`` optimizer updates (default 1,000) of

* ``vision``: ``timm.create_model("lightnet_tiny", img_size=32, patch_size=8, in_chans=1, num_classes=10)`` (width
  192, depth 12, 3 heads; 16 tokens) on real Fashion-MNIST images padded to 32x32 (Debian ``dataset-fashion-mnist``;
  falls back to scikit-learn digits upsampled to 32x32 when the package is missing), and
* ``lm``: a causal :class:`lightnet.lm.LightNetForCausalLM` (byte level) on the Debian Python 3.11 docs (falls back
  to the Python standard library's own ``.py`` sources as text when ``python3.11-doc`` is missing),

each under ``torch.autocast("cpu", dtype=bf16)`` and under ``torch.autocast("cpu", dtype=fp16)`` with
``torch.amp.GradScaler("cpu")``. Every step checks that the loss and the (unscaled) global gradient norm are finite;
for fp16 a non-finite gradient is only allowed as a GradScaler-skipped step (the scale is lowered and the update
is not applied) and the run fails if more than 5 % of the steps are skipped. At the end the weights must be finite,
the training loss must have dropped, and a held-out metric is reported (top-1 for vision, bits per byte for LM).

It also reports which dtypes CPU autocast actually produces for the model's building blocks (linear layers,
RMSNorm, the recurrence output) so that "fp16 on CPU" is not mistaken for full fp16 training.

Usage::

    python experiments/stability.py                                  # 1,000 steps, both tasks, bf16 and fp16
    python experiments/stability.py --tasks lm --precisions bf16 --steps 100
    python experiments/stability.py --out runs/stability --threads 1

Writes ``<out>/<task>_<precision>.csv`` (step, loss, grad_norm, scale, skipped) and ``<out>/summary.json``.
Exit code 1 if any run fails a check.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}
MAX_SKIP_FRACTION = 0.05


# ----------------------------------------------------------------------------------------------- data
def vision_data(seed: int = 0) -> Tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(source, x_train [N,1,32,32], y_train [N], x_test, y_test)`` normalised fp32 images."""
    from lightnet.train.datasets import FASHION_MNIST_DIR, read_idx

    try:
        xs = [torch.from_numpy(read_idx(FASHION_MNIST_DIR / f"{p}-images-idx3-ubyte.gz").copy()) for p in ("train", "t10k")]
        ys = [torch.from_numpy(read_idx(FASHION_MNIST_DIR / f"{p}-labels-idx1-ubyte.gz").astype("int64")) for p in ("train", "t10k")]
        source = "fashion_mnist (28x28 padded to 32x32)"
        xs = [F.pad(x.float()[:, None] / 255.0, (2, 2, 2, 2)) for x in xs]
    except Exception:  # package missing: scikit-learn digits, 8x8 upsampled
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
        x = F.interpolate(x, size=32, mode="bilinear", align_corners=False)
        y = torch.tensor(d.target, dtype=torch.int64)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        x, y = x[perm], y[perm]
        xs, ys = [x[:1400], x[1400:]], [y[:1400], y[1400:]]
        source = "sklearn digits (8x8 upsampled to 32x32)"
    mean, std = xs[0].mean(), xs[0].std()
    xs = [(x - mean) / std for x in xs]
    return source, xs[0], ys[0], xs[1][:1000], ys[1][:1000]


def text_data() -> Tuple[str, torch.Tensor, torch.Tensor]:
    """``(source, train bytes [T] uint8, val bytes [V] uint8)``."""
    from lightnet.lm.corpus import load_corpus

    try:
        c = load_corpus(None, val_fraction=0.05)
        return "python3.11-doc sources", c.train, c.val
    except (FileNotFoundError, ValueError):
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(stdlib.glob("*.py"))[:200]
        data = b"\n".join(f.read_bytes() for f in files)
        t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        cut = int(0.95 * t.numel())
        return f"python stdlib sources ({len(files)} files)", t[:cut].clone(), t[cut:].clone()


# ----------------------------------------------------------------------------------------------- tasks
@dataclass
class Task:
    """A model, a batch sampler ``step -> batch`` and a loss; ``evaluate(model) -> {metric: value}``."""

    name: str
    source: str
    model: torch.nn.Module
    batch: Callable[[torch.Generator], Tuple[torch.Tensor, ...]]
    loss: Callable[[torch.nn.Module, Tuple[torch.Tensor, ...]], torch.Tensor]
    evaluate: Callable[[torch.nn.Module, torch.dtype], Dict[str, float]]
    lr: float


def make_vision_task(batch_size: int, seed: int = 0) -> Task:
    import timm

    import lightnet  # noqa: F401  (registers lightnet_* with timm)

    source, xtr, ytr, xte, yte = vision_data(seed)
    torch.manual_seed(seed)
    model = timm.create_model("lightnet_tiny", img_size=32, patch_size=8, in_chans=1, num_classes=10)

    def batch(g: torch.Generator):
        idx = torch.randint(0, len(ytr), (batch_size,), generator=g)
        return xtr[idx], ytr[idx]

    def loss(m, b):
        return F.cross_entropy(m(b[0]).float(), b[1])

    @torch.no_grad()
    def evaluate(m, dtype):
        m.eval()
        with torch.autocast("cpu", dtype=dtype):
            logits = torch.cat([m(xte[i:i + 250]).float() for i in range(0, len(xte), 250)])
        m.train()
        return {"eval_top1": 100.0 * (logits.argmax(-1) == yte).float().mean().item(),
                "eval_loss": F.cross_entropy(logits, yte).item()}

    return Task("vision", source, model, batch, loss, evaluate, lr=1e-3)


def make_lm_task(batch_size: int, seq_len: int = 128, seed: int = 0) -> Task:
    from lightnet.lm import LightNetForCausalLM, LightNetLMConfig

    source, train, val = text_data()
    torch.manual_seed(seed)
    config = LightNetLMConfig(dim=128, depth=2, num_heads=2, causal=True, attn_backend="torch")
    model = LightNetForCausalLM(config)
    bos = config.bos_token_id

    def windows(data: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        ids = torch.stack([data[s:s + seq_len - 1].long() for s in starts.tolist()])
        return torch.cat([torch.full((len(starts), 1), bos), ids], dim=1)

    def batch(g: torch.Generator):
        starts = torch.randint(0, train.numel() - seq_len, (batch_size,), generator=g)
        return (windows(train, starts),)

    def loss(m, b):
        ids = b[0]
        logits = m(input_ids=ids).logits.float()
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    @torch.no_grad()
    def evaluate(m, dtype):
        m.eval()
        starts = torch.arange(0, min(val.numel() - seq_len, 64 * (seq_len - 1)), seq_len - 1)
        ids = windows(val, starts)
        with torch.autocast("cpu", dtype=dtype):
            logits = torch.cat([m(input_ids=ids[i:i + 16]).logits.float() for i in range(0, len(ids), 16)])
        m.train()
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        return {"eval_bpb": nll.item() / math.log(2)}

    return Task("lm", source, model, batch, loss, evaluate, lr=2e-3)


# ----------------------------------------------------------------------------------------------- autocast audit
def autocast_dtypes(model: torch.nn.Module, sample: Tuple[torch.Tensor, ...], dtype: torch.dtype, lm: bool) -> Dict[str, str]:
    """Output dtype per module class under CPU autocast (first module of each class)."""
    seen: Dict[str, str] = {}
    hooks = []
    for mod in model.modules():
        name = type(mod).__name__
        if name in ("Linear", "RMSNorm", "LayerNorm", "LightNetAttention", "GLU", "MDTPE", "Embedding", "Conv2d"):
            def hook(m, inp, out, name=name):
                o = out[0] if isinstance(out, tuple) else out
                if isinstance(o, torch.Tensor) and name not in seen:
                    seen[name] = str(o.dtype).replace("torch.", "")
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        model(input_ids=sample[0][:2]) if lm else model(sample[0][:2])
    for h in hooks:
        h.remove()
    return dict(sorted(seen.items()))


# ----------------------------------------------------------------------------------------------- the loop
@dataclass
class RunResult:
    task: str
    precision: str
    source: str
    steps: int
    params_m: float
    ok: bool
    failures: List[str] = field(default_factory=list)
    loss_first50: float = float("nan")
    loss_last50: float = float("nan")
    max_grad_norm: float = float("nan")
    skipped_steps: int = 0
    final_scale: Optional[float] = None
    min_scale: Optional[float] = None
    eval: Dict[str, float] = field(default_factory=dict)
    autocast_dtypes: Dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def train_run(task: Task, precision: str, steps: int, out: Optional[Path] = None, clip_grad: float = 1.0,
              seed: int = 0, progress: bool = True) -> RunResult:
    """``steps`` AdamW updates under CPU autocast; returns the checks (``ok``) and statistics."""
    dtype = PRECISIONS[precision]
    model = task.model
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=task.lr, weight_decay=0.05, betas=(0.9, 0.95))
    warmup = max(1, min(50, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    scaler = torch.amp.GradScaler("cpu") if precision == "fp16" else None
    g = torch.Generator().manual_seed(seed)
    res = RunResult(task.name, precision, task.source, steps, sum(p.numel() for p in model.parameters()) / 1e6, True)
    res.autocast_dtypes = autocast_dtypes(model, task.batch(torch.Generator().manual_seed(1)), dtype, task.name == "lm")
    rows, losses, norms, scales = [], [], [], []
    t0 = time.time()
    for step in range(1, steps + 1):
        b = task.batch(g)
        with torch.autocast("cpu", dtype=dtype):
            loss = task.loss(model, b)
        if not torch.isfinite(loss):
            res.failures.append(f"step {step}: non-finite loss {loss.item()}")
            break
        skipped = False
        if scaler is None:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            if not torch.isfinite(norm):
                res.failures.append(f"step {step}: non-finite gradient norm {norm.item()}")
                break
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            before = scaler.get_scale()
            scaler.step(opt)  # skipped by the scaler when the unscaled grads hold inf/NaN
            scaler.update()
            skipped = scaler.get_scale() < before
            if skipped and torch.isfinite(norm):
                res.failures.append(f"step {step}: scaler skipped a step with a finite gradient norm")
            scales.append(scaler.get_scale())
        opt.zero_grad(set_to_none=True)
        sched.step()
        res.skipped_steps += int(skipped)
        losses.append(loss.item())
        if torch.isfinite(norm):
            norms.append(norm.item())
        rows.append((step, loss.item(), norm.item(), scales[-1] if scales else "", int(skipped)))
        if progress and (step % 100 == 0 or step == steps):
            print(f"  [{task.name} {precision}] step {step}/{steps} loss {loss.item():.4f} grad_norm {norm.item():.3f}"
                  + (f" scale {scales[-1]:.0f} skipped {res.skipped_steps}" if scales else "")
                  + f" ({time.time() - t0:.0f}s)", flush=True)
    res.seconds = time.time() - t0
    if len(losses) < steps:
        res.failures.append(f"stopped after {len(losses)} of {steps} steps")
    if losses:
        k = min(50, max(1, len(losses) // 4))
        res.loss_first50 = sum(losses[:k]) / k
        res.loss_last50 = sum(losses[-k:]) / k
        if not res.loss_last50 < res.loss_first50:
            res.failures.append(f"training loss did not drop ({res.loss_first50:.4f} -> {res.loss_last50:.4f})")
    res.max_grad_norm = max(norms) if norms else float("nan")
    if scales:
        res.final_scale, res.min_scale = scales[-1], min(scales)
    if res.skipped_steps > MAX_SKIP_FRACTION * steps:
        res.failures.append(f"{res.skipped_steps} of {steps} steps skipped by the GradScaler (> {MAX_SKIP_FRACTION:.0%})")
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        res.failures.append(f"non-finite weights after training: {bad[:5]}")
    res.eval = task.evaluate(model, dtype)
    if not all(math.isfinite(v) for v in res.eval.values()):
        res.failures.append(f"non-finite evaluation {res.eval}")
    res.ok = not res.failures
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{task.name}_{precision}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "loss", "grad_norm", "scale", "skipped"])
            w.writerows(rows)
    return res


def build_task(name: str, batch_size: Optional[int], seed: int = 0) -> Task:
    if name == "vision":
        return make_vision_task(batch_size or 16, seed)
    if name == "lm":
        return make_lm_task(batch_size or 8, seed=seed)
    raise ValueError(f"unknown task {name!r}; choose vision or lm")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=["vision", "lm"], choices=["vision", "lm"])
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp16"], choices=list(PRECISIONS))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=None, help="default: 16 images (vision), 8 x 128 bytes (lm)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/stability")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = []
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.steps} steps per run")
    for task_name in args.tasks:
        for precision in args.precisions:
            task = build_task(task_name, args.batch_size, args.seed)  # fresh model and data order per run
            print(f"{task_name} / {precision}: {task.source}", flush=True)
            r = train_run(task, precision, args.steps, out, seed=args.seed)
            results.append(r)
            print(f"  -> {'OK' if r.ok else 'FAILED ' + '; '.join(r.failures)}: loss {r.loss_first50:.4f} -> "
                  f"{r.loss_last50:.4f}, max grad-norm {r.max_grad_norm:.3f}, skipped {r.skipped_steps}, "
                  f"eval {r.eval}, {r.seconds:.0f}s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"torch": torch.__version__, "threads": args.threads, "steps": args.steps,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": [asdict(r) for r in results]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\n{'task':8} {'prec':5} {'ok':3} {'loss first50 -> last50':24} {'max |g|':>8} {'skipped':>7} eval")
    for r in results:
        print(f"{r.task:8} {r.precision:5} {'yes' if r.ok else 'NO':3} {r.loss_first50:10.4f} -> {r.loss_last50:9.4f}  "
              f"{r.max_grad_norm:8.3f} {r.skipped_steps:7d} {r.eval}")
    print(f"autocast dtypes (CPU): " + "; ".join(f"{r.task}/{r.precision}: {r.autocast_dtypes}" for r in results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
