"""Two-GPU check (issue 8): DDP loss curves vs one GPU, throughput scaling, FSDP2, all trainers under accelerate.

Run on a host with two GPUs, from the checkout (Fashion-MNIST idx files and the pydoc corpus carried along;
diffusers for ``train-dit`` as a wheel on ``PYTHONPATH``)::

    PYTHONPATH=. python3 benchmarks/multigpu_check.py --out $OUT --data .data/fashion-mnist --corpus .data/pydoc

Parts (``--parts``, comma separated; all by default):

``scaling``
    ``lightnet_small`` and timm ``vit_small_patch16_224`` at 224 px: forward + backward + AdamW step under bf16
    autocast, DDP through ``accelerate`` (the trainers' engine), synthetic data already on the GPU (so the data
    loader does not set the speed), the same per-GPU batch on 1 and on 2 GPUs. Images/s and the 2-GPU / 1-GPU ratio.
``curves``
    ``lightnet train`` (Fashion-MNIST, a 12-layer ``lightnet_tiny`` on 7x7 tokens) with the same global batch on
    1 GPU (seeds 0, 1, 2: their spread is the noise yardstick) and on 2 GPUs (seeds 0, 1; ``accelerate launch
    --multi_gpu``, half the per-process batch); ``--curve-runs`` picks the runs, ``--merge`` adds runs of an
    earlier call. Compares per-epoch train loss and test metrics and draws ``curves.png``.
``smoke`` (= ``ddp`` + ``fsdp``)
    ``ddp``: ``train-lm`` and ``train-dit`` under DDP on 2 GPUs; ``fsdp``: ``train`` and ``train-lm`` under FSDP2
    (``--use_fsdp --fsdp_version 2``, one shard unit per ``LightNetBlock``): run to step 40 with a checkpoint at
    step 20, then ``--resume`` from step 20 to step 40 and compare the final weights with the uninterrupted run.

Writes ``multigpu.json`` (every number) and ``curves.png`` to ``--out``; prints a markdown summary.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
NCCL_SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
FSDP_ARGS = ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
             "--fsdp_transformer_layer_cls_to_wrap", "LightNetBlock"]


# ---------------------------------------------------------------------------------------------- launching
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(gpus: str) -> Dict[str, str]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpus, PYTHONUNBUFFERED="1", **NCCL_SAFE_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def accelerate_cmd(nproc: int, extra: Sequence[str] = ()) -> List[str]:
    """``accelerate launch`` prefix for ``nproc`` processes (bf16), as the README documents it."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(nproc), "--num_machines", "1",
           "--mixed_precision", "bf16", "--dynamo_backend", "no"]
    if nproc > 1 and not extra:
        cmd.append("--multi_gpu")
    if nproc > 1:
        cmd += ["--main_process_port", str(_free_port())]
    return cmd + list(extra)


def start(cmd: List[str], gpus: str, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    f = open(log, "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(gpus), stdout=f, stderr=subprocess.STDOUT)


def finish(p: subprocess.Popen, log: Path, timeout: float = 400) -> Dict:
    t0 = time.time()
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = -9
    text = log.read_text(errors="replace")
    return {"rc": rc, "wait_s": round(time.time() - t0, 1), "tail": text[-1200:] if rc else text[-300:]}


def only_run_dir(output_dir: Path) -> Optional[Path]:
    runs = [p for p in output_dir.iterdir() if p.is_dir()] if output_dir.is_dir() else []
    return sorted(runs)[-1] if runs else None


def read_csv(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------- scaling
def scaling_worker(args: argparse.Namespace) -> None:
    """One process of the throughput measurement (started by torch.distributed.run)."""
    import timm
    import torch
    from accelerate import Accelerator

    import lightnet  # noqa: F401  (registers the timm models)

    acc = Accelerator(mixed_precision="bf16")
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=1000)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model, opt = acc.prepare(model, opt)
    x = torch.randn(args.batch, 3, 224, 224, device=acc.device)
    y = torch.randint(0, 1000, (args.batch,), device=acc.device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        loss = loss_fn(model(x), y)
        acc.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    acc.wait_for_everyone()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    torch.cuda.synchronize()
    acc.wait_for_everyone()
    dt = time.perf_counter() - t0
    if acc.is_main_process:
        row = {"model": args.model, "gpus": acc.num_processes, "batch_per_gpu": args.batch, "iters": args.iters,
               "images_per_s": args.batch * acc.num_processes * args.iters / dt,
               "step_ms": 1e3 * dt / args.iters,
               "peak_mem_gib_per_gpu": torch.cuda.max_memory_allocated() / 2**30}
        with open(args.result, "a") as f:
            f.write(json.dumps(row) + "\n")


def run_scaling(work: Path, models: Sequence[str], batch: int, iters: int) -> Dict:
    result = work / "scaling.jsonl"
    logs: Dict[str, Dict] = {}
    for model in models:
        for nproc in (1, 2):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                   "--master_port", str(_free_port()), str(Path(__file__).resolve()), "--scaling-worker",
                   "--model", model, "--batch", str(batch), "--iters", str(iters), "--result", str(result)]
            log = work / f"scaling_{model}_{nproc}.log"
            logs[f"{model}/{nproc}"] = finish(start(cmd, "0,1", log), log, timeout=300)
    rows = [json.loads(line) for line in result.read_text().splitlines()] if result.is_file() else []
    ratios = {}
    for model in models:
        one = [r for r in rows if r["model"] == model and r["gpus"] == 1]
        two = [r for r in rows if r["model"] == model and r["gpus"] == 2]
        if one and two:
            ratios[model] = two[0]["images_per_s"] / one[0]["images_per_s"]
    return {"rows": rows, "scaling_2_over_1": ratios, "logs": {k: v for k, v in logs.items() if v["rc"]}}


# ---------------------------------------------------------------------------------------------- curves
def train_cmd(nproc: int, data: Path, out_dir: Path, seed: int, per_process_batch: int, epochs: int) -> List[str]:
    return accelerate_cmd(nproc) + [
        "-m", "lightnet.cli", "train", "-c", "fashion_mnist", f"data.root={data}",
        "model_kwargs={patch_size: 4, embed_dim: 192, depth: 12, num_heads: 3, mlp_ratio: 4.0}",
        f"data.batch_size={per_process_batch}", "data.num_workers=6", f"run.epochs={epochs}", f"run.seed={seed}",
        "run.mixed_precision=bf16", "run.threads=null", "run.progress=false", "run.log_every=10",
        "run.checkpoint_every=0", f"run.output_dir={out_dir}"]


def run_curves(work: Path, data: Path, global_batch: int, epochs: int, runs: Sequence[tuple[int, int]],
               gpus: Sequence[str]) -> Dict:
    """Train ``runs`` (``(processes, seed)`` pairs) with the same global batch; 1-process runs go side by side, one
    per GPU of ``gpus``, then the multi-process runs one after another on the first ``processes`` GPUs."""
    status: Dict[str, Dict] = {}
    singles = [r for r in runs if r[0] == 1]
    for i in range(0, len(singles), len(gpus)):
        procs = {}
        for (nproc, seed), gpu in zip(singles[i:i + len(gpus)], gpus):
            name = f"1gpu_seed{seed}"
            procs[name] = (time.time(), start(train_cmd(1, data, work / name, seed, global_batch, epochs), gpu,
                                              work / f"{name}.log"))
        for name, (t0, p) in procs.items():
            status[name] = {**finish(p, work / f"{name}.log", timeout=420), "wall_s": round(time.time() - t0, 1)}
    for nproc, seed in (r for r in runs if r[0] > 1):
        name, t0 = f"{nproc}gpu_seed{seed}", time.time()
        status[name] = {**finish(start(train_cmd(nproc, data, work / name, seed, global_batch // nproc, epochs),
                                       ",".join(gpus[:nproc]), work / f"{name}.log"), work / f"{name}.log", timeout=420),
                        "wall_s": round(time.time() - t0, 1)}
    raw = {}
    for name in status:
        rd = only_run_dir(work / name)
        raw[name] = {"epochs": read_csv(rd / "epochs.csv") if rd else [],
                     "steps": read_csv(rd / "steps.csv") if rd else []}
    return {"status": status, "global_batch": global_batch, "epochs": epochs, "raw": raw}


def _col(rows: List[Dict[str, str]], key: str) -> List[float]:
    return [float(r[key]) for r in rows if r.get(key, "") not in ("", None)]


def compare_curves(raw: Dict[str, Dict]) -> Dict:
    """Per-epoch agreement of the multi-GPU runs with the 1-GPU runs, against the 1-GPU seed-to-seed spread.

    For every metric: the 1-GPU runs' per-epoch values (one per seed), the multi-GPU runs' values, the paired
    difference (multi-GPU vs 1 GPU with the same seed), the 1-GPU seeds' mean and standard deviation (ddof 1) per
    epoch, and ``max_z``: the largest |multi-GPU value - 1-GPU mean| / 1-GPU std over runs and epochs.
    ``within_noise`` is ``max_z <= 3`` (the multi-GPU runs look like further draws of the 1-GPU runs).
    """
    single = {n: r for n, r in raw.items() if n.startswith("1gpu_")}
    multi = {n: r for n, r in raw.items() if not n.startswith("1gpu_")}
    out: Dict[str, Dict] = {}
    for key in ("train_loss", "eval_loss", "eval_top1"):
        s_vals = {n: _col(r["epochs"], key) for n, r in single.items()}
        m_vals = {n: _col(r["epochs"], key) for n, r in multi.items()}
        n_ep = min([len(v) for v in list(s_vals.values()) + list(m_vals.values())] or [0])
        if n_ep == 0 or len(s_vals) < 2:
            continue
        mean = [sum(v[e] for v in s_vals.values()) / len(s_vals) for e in range(n_ep)]
        std = [(sum((v[e] - mean[e]) ** 2 for v in s_vals.values()) / (len(s_vals) - 1)) ** 0.5 for e in range(n_ep)]
        z = [abs(v[e] - mean[e]) / max(std[e], 1e-12) for v in m_vals.values() for e in range(n_ep)]
        paired = {}
        for n, v in m_vals.items():
            base = s_vals.get("1gpu_" + n.split("_", 1)[1])
            if base is not None:
                paired[n] = [abs(v[e] - base[e]) for e in range(n_ep)]
        out[key] = {"1gpu": {n: v[:n_ep] for n, v in s_vals.items()}, "multi": {n: v[:n_ep] for n, v in m_vals.items()},
                    "mean_1gpu": mean, "std_1gpu": std, "paired_diff_per_epoch": paired,
                    "max_z": max(z, default=float("nan")), "within_noise": bool(z) and max(z) <= 3.0}
    return {"per_epoch": out}


def plot_curves(curves: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name in sorted(curves["raw"]):
        style = "-" if name.startswith("1gpu_") else "--"
        steps = curves["raw"][name]["steps"]
        s, l = _col(steps, "step"), _col(steps, "loss")
        k = 5  # moving average over 5 logged points (50 updates)
        smooth = [sum(l[max(0, i - k + 1):i + 1]) / len(l[max(0, i - k + 1):i + 1]) for i in range(len(l))]
        axes[0].plot(s, smooth, style, label=name)
        ep = curves["raw"][name]["epochs"]
        axes[1].plot(_col(ep, "epoch"), _col(ep, "eval_loss"), style + "o", label=name)
        axes[2].plot(_col(ep, "epoch"), _col(ep, "eval_top1"), style + "o", label=name)
    for ax, title in zip(axes, ("train loss (rank 0, 50-update mean)", "test loss", "test top-1 (%)")):
        ax.set_title(title)
        ax.set_xlabel("update" if "train" in title else "epoch")
        ax.legend()
    fig.suptitle(f"Fashion-MNIST, global batch {curves['global_batch']}: 1 GPU vs 2 GPUs (DDP)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------------- smoke
def _weights_diff(a: Path, b: Path) -> Dict[str, float]:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a)), load_file(str(b))
    if set(wa) != set(wb):
        return {"keys_differ": float(len(set(wa) ^ set(wb)))}
    num = sum(float((wa[k].float() - wb[k].float()).norm() ** 2) for k in wa) ** 0.5
    den = sum(float(wa[k].float().norm() ** 2) for k in wa) ** 0.5
    return {"rel_l2": num / max(den, 1e-30),
            "max_abs": max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)}


def _lm_args(corpus: Path, out_dir: Path) -> List[str]:
    return ["-m", "lightnet.cli", "train-lm", "-c", "lm_causal_pydoc", f"data.paths=[{corpus}]", "batch_size=16",
            "run.mixed_precision=bf16", "run.progress=false", f"run.output_dir={out_dir}", "sample_tokens=32"]


def _cls_args(data: Path, out_dir: Path) -> List[str]:
    return ["-m", "lightnet.cli", "train", "-c", "fashion_mnist", f"data.root={data}", "model=lightnet_small",
            "model_kwargs={patch_size: 4}", "data.batch_size=64", "data.num_workers=4", "run.mixed_precision=bf16",
            "run.threads=null", "run.progress=false", f"run.output_dir={out_dir}"]


def fsdp_resume_check(work: Path, name: str, base_args: List[str]) -> Dict:
    """FSDP2 on 2 GPUs: 40 steps with a checkpoint at 20, then resume from step 20 and compare final weights."""
    out_dir = work / f"fsdp_{name}"
    steps = ["run.max_steps=40", "run.checkpoint_every=20", "run.epochs=1000"]
    log = work / f"fsdp_{name}.log"
    res: Dict = {"first": finish(start(accelerate_cmd(2, FSDP_ARGS) + base_args + steps, "0,1", log), log)}
    rd = only_run_dir(out_dir)
    if res["first"]["rc"] or rd is None or not (rd / "model.safetensors").is_file():
        return res
    shutil.copy(rd / "model.safetensors", work / f"fsdp_{name}_uninterrupted.safetensors")
    res["loss_uninterrupted"] = _col(read_csv(rd / "steps.csv"), "loss")[-1:]
    ck = rd / "checkpoints" / "step_00000020"
    log2 = work / f"fsdp_{name}_resume.log"
    resume_cmd = accelerate_cmd(2, FSDP_ARGS) + base_args[:base_args.index("-c")] + ["--resume", str(ck)] + steps
    res["resumed"] = finish(start(resume_cmd, "0,1", log2), log2)
    if res["resumed"]["rc"] == 0:
        res["loss_resumed"] = _col(read_csv(rd / "steps.csv"), "loss")[-1:]
        res["final_weights_resumed_vs_uninterrupted"] = _weights_diff(
            work / f"fsdp_{name}_uninterrupted.safetensors", rd / "model.safetensors")
    return res


def run_smoke(work: Path, data: Path, corpus: Path, kinds: Sequence[str] = ("ddp", "fsdp")) -> Dict:
    out: Dict[str, Dict] = {}
    if "fsdp" in kinds:
        out["fsdp_train"] = fsdp_resume_check(work, "train", _cls_args(data, work / "fsdp_train"))
        out["fsdp_train_lm"] = fsdp_resume_check(work, "train_lm", _lm_args(corpus, work / "fsdp_train_lm"))
    if "ddp" not in kinds:
        return out
    log = work / "ddp_lm.log"
    out["ddp_train_lm"] = finish(start(accelerate_cmd(2) + _lm_args(corpus, work / "ddp_lm") + ["run.max_steps=60"],
                                       "0,1", log), log)
    log = work / "ddp_dit.log"
    out["ddp_train_dit"] = finish(start(accelerate_cmd(2) + [
        "-m", "lightnet.cli", "train-dit", "-c", "dit_fashion_mnist", f"data.root={data}", "run.max_steps=60",
        "data.batch_size=64", "run.progress=false", "sample.every=0", "data.eval_samples=256",
        f"run.output_dir={work / 'ddp_dit'}"], "0,1", log), log)
    for name in ("ddp_lm", "ddp_dit"):
        rd = only_run_dir(work / name)
        if rd is not None:
            out[f"ddp_train_{name[4:]}"]["last_steps"] = read_csv(rd / "steps.csv")[-2:]
    return out


# ---------------------------------------------------------------------------------------------- report
def summary_markdown(res: Dict) -> str:
    lines = []
    if "scaling" in res:
        lines += ["| model | GPUs | batch/GPU | images/s | step ms | peak GiB/GPU |", "|---|---|---|---|---|---|"]
        for r in res["scaling"]["rows"]:
            lines.append(f"| {r['model']} | {r['gpus']} | {r['batch_per_gpu']} | {r['images_per_s']:.0f} | "
                         f"{r['step_ms']:.1f} | {r['peak_mem_gib_per_gpu']:.2f} |")
        lines += [f"scaling 2 GPUs / 1 GPU: " + ", ".join(f"{k} {v:.2f}x"
                                                           for k, v in res["scaling"]["scaling_2_over_1"].items()), ""]
    if "curves" in res:
        fmt = lambda xs: " / ".join(f"{x:.3f}" for x in xs)  # noqa: E731
        lines += ["| metric | run | per epoch | paired diff vs 1 GPU (same seed) |", "|---|---|---|---|"]
        for k, v in res["curves"]["per_epoch"].items():
            for n, xs in {**v["1gpu"], **v["multi"]}.items():
                lines.append(f"| {k} | {n} | {fmt(xs)} | {fmt(v['paired_diff_per_epoch'].get(n, []))} |")
            lines.append(f"| {k} | 1-GPU mean ± std | {fmt(v['mean_1gpu'])} ± {fmt(v['std_1gpu'])} | max z "
                         f"{v['max_z']:.2f}, within noise (z ≤ 3): {v['within_noise']} |")
        lines.append("")
    if "smoke" in res:
        for k, v in res["smoke"].items():
            rc = v.get("rc", v.get("first", {}).get("rc"))
            extra = v.get("final_weights_resumed_vs_uninterrupted", "")
            lines.append(f"- {k}: rc {rc} {extra}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "runs/multigpu"))
    p.add_argument("--data", default=".data/fashion-mnist", help="folder with the Fashion-MNIST idx files")
    p.add_argument("--corpus", default=".data/pydoc", help="text folder for train-lm")
    p.add_argument("--parts", default="scaling,curves,smoke")
    p.add_argument("--scaling-models", default="lightnet_small,vit_small_patch16_224")
    p.add_argument("--global-batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--curve-runs", default="1:0,1:1,1:2,2:0,2:1",
                   help="comma-separated processes:seed runs of the curves part")
    p.add_argument("--gpus", default="0,1", help="GPUs to use (1-process runs go side by side, one per GPU)")
    p.add_argument("--merge", nargs="*", default=[], help="multigpu.json files whose curve runs join the comparison")
    # worker mode (internal)
    p.add_argument("--scaling-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="lightnet_small")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--result", default="")
    args = p.parse_args(argv)
    if args.scaling_worker:
        return scaling_worker(args)
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="multigpu_"))
    data, corpus = Path(args.data).resolve(), Path(args.corpus).resolve()
    res: Dict = {"date": time.strftime("%Y-%m-%d"), "gpus": [torch.cuda.get_device_name(i)
                                                             for i in range(torch.cuda.device_count())],
                 "torch": torch.__version__}
    parts = args.parts.split(",")
    for part in parts:
        t0 = time.time()
        if part == "scaling":
            res["scaling"] = run_scaling(work, args.scaling_models.split(","), args.batch, args.iters)
        elif part == "curves":
            runs = [tuple(int(x) for x in r.split(":")) for r in args.curve_runs.split(",")]
            res["curves"] = run_curves(work, data, args.global_batch, args.epochs, runs, args.gpus.split(","))
            merged = dict(res["curves"]["raw"])
            for f in args.merge:  # earlier runs of the same recipe (their multigpu.json)
                merged.update({k: v for k, v in json.loads(Path(f).read_text())["curves"]["raw"].items()
                               if k not in merged})
            res["curves"]["raw"] = merged
            res["curves"].update(compare_curves(merged))
            (out / "multigpu.json").write_text(json.dumps(res, indent=1))
            try:
                plot_curves(res["curves"], out / "curves.png")
            except Exception as e:  # a plot must not lose the measured numbers
                print(f"plot failed: {e!r}")
        elif part in ("smoke", "ddp", "fsdp"):
            res.setdefault("smoke", {}).update(run_smoke(work, data, corpus, ("ddp", "fsdp") if part == "smoke"
                                                         else (part,)))
        else:
            raise SystemExit(f"unknown part {part!r}; choose from scaling, curves, smoke (= ddp + fsdp), ddp, fsdp")
        res.setdefault("part_seconds", {})[part] = round(time.time() - t0, 1)
        (out / "multigpu.json").write_text(json.dumps(res, indent=1))
        print(f"[{part} done in {time.time() - t0:.0f} s]", flush=True)
    print(summary_markdown(res))


if __name__ == "__main__":
    main()
