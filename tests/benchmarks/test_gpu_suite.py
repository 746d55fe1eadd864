"""benchmarks/gpu_suite.sh without a GPU: it parses, lists its parts, every listed part has a branch, and an unknown
part is refused with the list."""
from __future__ import annotations

import re
import subprocess

from tests._subprocess_env import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_suite.sh"


def test_lists_parts_and_refuses_an_unknown_one() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    listed = subprocess.run(["bash", str(SCRIPT), "list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    assert {"check", "kernels", "vision", "dit", "lm", "memory", "fmnist"} <= set(names)
    assert all(re.search(r"~\d+ min", line) for line in listed.stdout.splitlines() if line.strip())
    body = SCRIPT.read_text()
    branches = {b for case in re.findall(r"^\s+([\w|-]+)\)", body, re.M) for b in case.split("|")}
    assert set(names) <= branches
    assert len(names) == len(set(names)), "a part is listed twice"
    cases = [b for case in re.findall(r"^  ([\w|-]+)\)", body, re.M) for b in case.split("|")]
    assert len(cases) == len(set(cases)), "a part has two branches (bash takes the first)"
    bad = subprocess.run(["bash", str(SCRIPT), "nonsense"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown part 'nonsense'" in bad.stdout and "kernels" in bad.stdout
