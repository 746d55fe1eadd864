"""GPU smoke check of the classification trainer (``lightnet train`` / ``lightnet eval``) on one CUDA GPU.

Runs, each as its own ``lightnet`` process:
  1. the default digits recipe in bf16 (accuracy, time);
  2. digits in fp16 with gradient accumulation 2 (GradScaler path);
  3. stop at step 50 + ``--resume`` vs an uninterrupted run (bf16; reports the max weight difference);
  4. the DeiT-style ``imagenet_tiny`` recipe (RandAugment, mixup/cutmix, random erasing, bf16) on a synthetic
     ImageFolder at 224 px (throughput from steps.csv);
  5. ``lightnet eval`` of run 4 at 224 and at 288 px.
Prints one JSON summary (also written to ``$OUT/train_gpu.json`` when OUT is set).

Usage: ``PYTHONPATH=. python benchmarks/check_train_gpu.py``
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def lightnet(*args: str, timeout: int = 400) -> tuple[int, str, float]:
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "lightnet.cli", *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr)[-1500:], time.time() - t0


def final(run_dir: Path) -> dict:
    f = run_dir / "final_metrics.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def fake_imagefolder(root: Path, classes: int = 8, per_class: int = 48, size: int = 256) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", per_class // 4)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.zeros((size, size, 3), np.uint8)
                base[..., c % 3] = 60 + 20 * c
                img = np.clip(base + rng.integers(0, 80, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.jpg", quality=90)


def main() -> None:
    out = Path(os.environ.get("OUT", tempfile.mkdtemp()))
    work = Path(tempfile.mkdtemp())
    summary: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                     "torch": torch.__version__}
    common = ["run.progress=false", "run.threads=null"]

    rc, tail, secs = lightnet("train", *common, "run.mixed_precision=bf16", f"run.run_dir={work / 'digits_bf16'}")
    summary["digits_bf16"] = {"rc": rc, "seconds": round(secs, 1), **final(work / "digits_bf16")}
    if rc:
        summary["digits_bf16"]["log"] = tail

    rc, tail, secs = lightnet("train", *common, "run.mixed_precision=fp16", "run.grad_accum_steps=2", "run.epochs=10",
                              f"run.run_dir={work / 'digits_fp16'}")
    summary["digits_fp16_accum2"] = {"rc": rc, "seconds": round(secs, 1), **final(work / "digits_fp16")}
    if rc:
        summary["digits_fp16_accum2"]["log"] = tail

    resume = ["run.mixed_precision=bf16", "run.epochs=4", "aug.mixup=0.2"]
    lightnet("train", *common, *resume, f"run.run_dir={work / 'full'}")
    lightnet("train", *common, *resume, "run.max_steps=50", f"run.run_dir={work / 'part'}")
    rc, tail, _ = lightnet("train", *common, "--resume", str(work / "part"), "run.max_steps=null")
    from safetensors.torch import load_file

    try:
        a, b = load_file(str(work / "full" / "model.safetensors")), load_file(str(work / "part" / "model.safetensors"))
        diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    except Exception as e:  # noqa: BLE001 - report, don't crash the summary
        diff = f"error: {e}"
    summary["resume_bf16_cuda"] = {"rc": rc, "max_weight_diff": diff}

    data = work / "fakeimagenet"
    fake_imagefolder(data)
    run = work / "imagenet_tiny"
    rc, tail, secs = lightnet("train", "-c", "imagenet_tiny", *common, f"data.root={data}", "data.batch_size=64",
                              "data.num_workers=8", "run.epochs=3", "sched.warmup_epochs=1", "run.log_every=2",
                              f"run.run_dir={run}")
    row = {"rc": rc, "seconds": round(secs, 1), **final(run)}
    if (run / "steps.csv").is_file():
        with open(run / "steps.csv") as f:
            rates = [float(r["samples_per_s"]) for r in csv.DictReader(f) if r.get("samples_per_s")]
        row["samples_per_s_last"] = rates[-1] if rates else None
    if rc:
        row["log"] = tail
    summary["imagenet_tiny_synthetic_224_bf16"] = row
    for size in (224, 288):
        js = work / f"eval{size}.json"
        rc, tail, _ = lightnet("eval", "--checkpoint", str(run), "--img-size", str(size), "--json", str(js))
        summary[f"eval_{size}"] = json.loads(js.read_text()) if js.is_file() else {"rc": rc, "log": tail}

    text = json.dumps(summary, indent=1, default=str)
    print(text)
    (out / "train_gpu.json").write_text(text)


if __name__ == "__main__":
    main()
