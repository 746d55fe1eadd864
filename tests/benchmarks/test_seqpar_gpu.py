"""benchmarks/seqpar_gpu.py --smoke: the multi-GPU script's plumbing on the CPU (gloo), 2 processes under torchrun."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests._subprocess_env import ROOT, free_port, subprocess_env


def test_smoke_under_torchrun(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "benchmarks" / "seqpar_gpu.py"), "--smoke", "--out", str(tmp_path)]
    done = subprocess.run(cmd, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "seqpar_gpu_2.json").read_text())["rows"]
    assert {r["mode"] for r in rows} == {"non-causal", "causal"}
    assert all(r["status"] == "ok" and r["world"] == 2 and r["ms"] > 0 for r in rows)
