"""Run a benchmark script as its own process (``TRITON_INTERPRET=1`` must be set before Triton is imported)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

from tests._subprocess_env import ROOT, subprocess_env


def run_script(name: str, args: List[str], out: Path, stem: str, timeout: int = 600) -> Dict[str, Any]:
    """``python benchmarks/<name>.py ARGS --out OUT`` under the Triton interpreter; the JSON it wrote (also checks the
    Markdown twin exists)."""
    env = dict(subprocess_env(), TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (out / f"{stem}.md").read_text().startswith(f"{stem}: ")
    return json.loads((out / f"{stem}.json").read_text())
