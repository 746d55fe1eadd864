"""Generation quality: LightNet-DiT vs diffusers' DiTTransformer2DModel, same size, recipe and step budget.

Both models are trained by ``lightnet train-dit`` with the ``dit_fashion_mnist`` recipe (Fashion-MNIST 32×32, pixel
space, DDPM linear schedule, AdamW, EMA, bf16), differing only in ``model.arch``/``model.preset``
(``LightNet-DiT-S/2`` vs ``DiT-S/2``). The step budget is shared: a short speed probe measures both models' training
step time and picks ``steps = min(--max-steps, --train-seconds / (t_lightnet + t_dit))`` so that both get the same
number of optimizer steps. Then ``lightnet fid``'s machinery trains one feature classifier on Fashion-MNIST and
reports the FID proxy of each pipeline against the test split (plus the real-data floor).

Writes under ``--out``: ``results.json`` / ``results.md`` (FID table, steps, wall-clock, params, speed probe),
``grid_lightnet.png`` / ``grid_dit.png`` (EMA samples, one row per class) and each run's logs (``steps.csv``,
``final_metrics.json``). Big files (checkpoints, pipelines) stay in ``--work``.

GPU:  python experiments/dit_compare.py --data-root .data/fashion-mnist --out $OUT
Reduced CPU comparison:  python experiments/dit_compare.py --size cpu16 --steps 1200 --out /tmp/cmp
CPU smoke test:  python experiments/dit_compare.py --size tiny --out /tmp/cmp
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightnet.train.config import build_config  # noqa: E402
from lightnet.train.dit import DiTTrainConfig, build_dit_model, train_dit  # noqa: E402
from lightnet.train.fid import compute_fid_table, format_table  # noqa: E402
from lightnet.train.sample import load_pipeline, sample_images, set_scheduler  # noqa: E402

ARCHS = {"lightnet": ("lightnet", "LightNet-DiT-S/2"), "dit": ("dit", "DiT-S/2")}
NAMES = {"lightnet": "LightNet-DiT", "dit": "diffusers DiT"}


def label(arch: str, size: str) -> str:
    return ARCHS[arch][1] if size == "s2" else f"{NAMES[arch]} ({size})"
# --size: "s2" = the recipe (S/2 at 32x32); "cpu16" = a reduced comparison that CPUs can train (16x16, patch 2,
# width 128, 4 layers, batch 64); "tiny" = a smoke test of this script.
SIZES = {
    "s2": ([], {"lightnet": [], "dit": []}),
    "cpu16": (["data.img_size=16", "model.preset=null", "model.kwargs.patch_size=2", "model.kwargs.num_layers=4",
               "data.batch_size=64", "optim.lr=1e-3", "sched.warmup_epochs=0.1", "ema.decay=0.999", "data.eval_samples=256",
               "sample.per_class=8", "sample.steps=25", "data.num_workers=0"],
              {"lightnet": ["model.kwargs.hidden_size=128", "model.kwargs.num_attention_heads=4"],
               "dit": ["model.kwargs.num_attention_heads=4", "model.kwargs.attention_head_dim=32"]}),
    "tiny": (["model.preset=null", "model.kwargs.patch_size=4", "data.img_size=16", "model.kwargs.num_layers=2",
              "data.batch_size=32", "data.eval_samples=64", "sample.per_class=2", "sample.steps=3",
              "data.num_workers=0"],
             {"lightnet": ["model.kwargs.hidden_size=32", "model.kwargs.num_attention_heads=2"],
              "dit": ["model.kwargs.num_attention_heads=2", "model.kwargs.attention_head_dim=16"]}),
}


def overrides(arch: str, args: argparse.Namespace, extra: list[str]) -> list[str]:
    kind, preset = ARCHS[arch]
    o = [f"model.arch={kind}", f"model.preset={preset}", "sample.every=0", "run.checkpoint_every=0",
         "run.checkpoint_every_epochs=0", "run.eval_every_epochs=0", "run.keep_last=1",
         f"data.num_workers={args.workers}", f"run.seed={args.seed}", f"run.compile={str(args.compile).lower()}"]
    if args.data_root:
        o.append(f"data.root={args.data_root}")
    if arch == "lightnet":
        o.append(f"model.kwargs.attn_backend={args.backend}")
    common, per_arch = SIZES[args.size]
    variant = list(args.lightnet_set if arch == "lightnet" else args.dit_set)
    return o + common + per_arch[arch] + variant + extra


def _fmt_probe(seconds: Optional[float]) -> str:
    return "—" if seconds is None else f"{seconds:.4f}"


def probe_step_time(cfg: DiTTrainConfig, device: torch.device, iters: int) -> float:
    """Seconds per optimizer step (forward + backward + AdamW) on random data, with the run's precision."""
    model = build_dit_model(cfg.model, 1, 10, cfg.data.img_size).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if cfg.run.compile:
        model = torch.compile(model, mode=cfg.run.compile_mode)
    B, S = cfg.data.batch_size, cfg.data.img_size
    x = torch.randn(B, 1, S, S, device=device)
    t = torch.randint(0, 1000, (B,), device=device)
    y = torch.randint(0, 10, (B,), device=device)
    dtype = torch.bfloat16 if cfg.run.mixed_precision == "bf16" and device.type == "cuda" else None

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(x, timestep=t, class_labels=y).sample.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST idx files")
    p.add_argument("--out", required=True)
    p.add_argument("--work", default="/tmp/dit_compare", help="run folders (checkpoints, pipelines)")
    p.add_argument("--train-seconds", type=float, default=130.0, help="training time budget for both models together")
    p.add_argument("--max-steps", type=int, default=4000)
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=1.5)
    p.add_argument("--backend", default="torch", help="LightNet attention backend (torch | triton | auto)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--size", default="s2", choices=sorted(SIZES), help="model/data size (see SIZES)")
    p.add_argument("--steps", type=int, default=None, help="fixed step count (skips the speed probe)")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS), help="models to train")
    p.add_argument("--skip-fid", action="store_true", help="train only (run `lightnet fid` on the pipelines later)")
    p.add_argument("--seed", type=int, default=0, help="run.seed of both trainings and the sampling seed (3-seed runs: 0 1 2)")
    p.add_argument("--compile", action="store_true", help="run.compile=true for both trainings (and the speed probe)")
    p.add_argument("--lightnet-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides of the LightNet-DiT run only (a variant, e.g. model.kwargs.gate_rank=0)")
    p.add_argument("--dit-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides of the diffusers DiT run only (e.g. model.init=dit_paper)")
    p.add_argument("--sample-autocast", default="no", choices=["no", "bf16", "fp16"],
                   help="sample the FID images under torch.autocast (both pipelines alike)")
    args = p.parse_args()
    args.tiny = args.size == "tiny"
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    t_start = time.time()

    cfgs = {a: build_config(DiTTrainConfig, "dit_fashion_mnist", overrides(a, args, [])) for a in args.archs}
    # the speed probe only sets the step budget: skipped when --steps fixes it (with --compile it would compile both
    # models once more before their trainings)
    probe: Dict[str, float] = {}
    if args.steps is not None:
        steps = args.steps
    else:
        probe = {a: probe_step_time(c, device, 3 if args.tiny else 15) for a, c in cfgs.items()}
        steps = 12 if args.tiny else int(min(args.max_steps, args.train_seconds / sum(probe.values())))
    per_epoch = 60000 // cfgs[args.archs[0]].data.batch_size
    epochs = max(1, math.ceil(steps / per_epoch))
    print(f"speed probe (s/step): {probe}; training {steps} steps ({epochs} epoch schedule) per model", flush=True)

    runs, params = {}, {}
    overrides_used = {"lightnet": args.lightnet_set, "dit": args.dit_set}
    for arch in args.archs:
        run_dir = work / arch
        cfg = build_config(DiTTrainConfig, "dit_fashion_mnist",
                           overrides(arch, args, [f"run.max_steps={steps}", f"run.epochs={epochs}",
                                                  f"run.run_dir={run_dir}"]))
        t0 = time.time()
        train_dit(cfg)
        summary = json.loads((run_dir / "final_metrics.json").read_text())
        runs[arch] = {"run_dir": str(run_dir), "wall_s": time.time() - t0, **summary}
        params[arch] = summary["params"]
        shutil.copy(run_dir / "samples" / "final.png", out / f"grid_{arch}.png")
        (out / f"logs_{arch}").mkdir(exist_ok=True)
        for name in ("steps.csv", "epochs.csv", "final_metrics.json", "config.yaml", "curves.png"):
            if (run_dir / name).is_file():
                shutil.copy(run_dir / name, out / f"logs_{arch}" / name)
        print(f"{arch}: {summary['step']} steps in {runs[arch]['wall_s']:.1f}s, eval_loss {summary.get('eval_loss')}",
              flush=True)

    if args.skip_fid:
        (out / f"runs_{'_'.join(args.archs)}.json").write_text(json.dumps(
            {"steps": steps, "probe_s_per_step": probe, "runs": runs, "overrides": overrides_used}, indent=1,
            default=str))
        return 0
    img_size = cfgs[args.archs[0]].data.img_size

    def write_results(fid_table: Dict) -> None:
        """results.json after the trainings and again after each model's FID, so a run cut during sampling keeps
        its held-out losses and the FIDs already computed (aggregate_seeds matches FID rows by transformer)."""
        results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                   "torch": torch.__version__, "steps": steps, "probe_s_per_step": probe, "runs": runs,
                   "fid": fid_table, "lightnet_backend": args.backend, "overrides": overrides_used,
                   "seed": args.seed, "compile": args.compile,
                   "sample_autocast": args.sample_autocast, "total_s": time.time() - t_start,
                   "fid_done": [a for a, _ in zip(args.archs, fid_table.get("pipelines", []))]}
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))

    write_results({"pipelines": []})
    table: Dict = {}
    for arch in args.archs:  # one model at a time; the feature classifier is trained once and cached in work/
        part = compute_fid_table([str(work / arch / "pipeline")], "fashion_mnist", args.data_root, img_size,
                                 100 if args.tiny else args.num_samples, str(work / "fid_classifier"),
                                 1 if args.tiny else 3, 2 if args.tiny else args.sample_steps, args.guidance, "ddim",
                                 500, args.seed, str(device), load_pipeline, sample_images, set_scheduler,
                                 autocast=args.sample_autocast)
        row = part["pipelines"][0]
        row["pipeline"] = f"{label(arch, args.size)} ({row['transformer']}, {params[arch] / 1e6:.1f}M params)"
        table = part if not table else {**table, "pipelines": table["pipelines"] + part["pipelines"]}
        write_results(table)
    md = format_table(table)
    md += "\n\n| model | params | steps | train wall-clock (s) | probe s/step | final eval loss |\n|---|---|---|---|---|---|\n"
    for arch in args.archs:
        r = runs[arch]
        md += (f"| {label(arch, args.size)} | {params[arch] / 1e6:.2f}M | {r['step']} | {r['wall_s']:.1f} | {_fmt_probe(probe.get(arch))} | "
               f"{r.get('eval_loss', float('nan')):.4f} |\n")
    (out / "results.md").write_text(md)
    print(md)
    print(f"total {time.time() - t_start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
