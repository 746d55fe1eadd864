"""Checkpoints: safetensors round trip, refusal of code-carrying pickles, atomicity under SIGKILL, keep-last-N."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from lightnet.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    atomic_torch_save,
    find_latest,
    load_model_weights,
    load_safetensors,
    safe_torch_load,
    save_safetensors,
)

REPO = Path(__file__).resolve().parents[2]


def _net(width: int = 4) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.ReLU(), torch.nn.Linear(width, 2))


def test_safetensors_roundtrip(tmp_path: Path):
    torch.manual_seed(0)
    a, b = _net(), _net()
    assert not torch.equal(a[0].weight, b[0].weight)
    save_safetensors(a.state_dict(), tmp_path / "m.safetensors")
    load_model_weights(b, tmp_path / "m.safetensors")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left behind


def test_weights_only_torch_file_loads(tmp_path: Path):
    a = _net()
    atomic_torch_save({"state_dict": a.state_dict()}, tmp_path / "m.pt")
    b = _net()
    load_model_weights(b, tmp_path / "m.pt")
    assert torch.equal(a[2].bias, b[2].bias)


class _Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("fmt", ["torch", "raw_pickle"])
def test_pickle_with_code_is_refused(tmp_path: Path, fmt: str):
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    obj = {"weight": torch.zeros(2), "x": _Payload(str(sentinel))}
    if fmt == "torch":
        torch.save(obj, evil)
    else:
        evil.write_bytes(pickle.dumps(obj))
    with pytest.raises(CheckpointError, match="refusing to load"):
        safe_torch_load(evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_model_weights(_net(), evil)
    assert not sentinel.exists(), "the payload ran"


def test_truncated_and_foreign_files(tmp_path: Path):
    save_safetensors(_net().state_dict(), tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_safetensors(tmp_path / "cut.safetensors")
    (tmp_path / "text.pt").write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError):
        safe_torch_load(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_safetensors(tmp_path / "absent.safetensors")


def test_architecture_mismatch_is_named(tmp_path: Path):
    save_safetensors(_net(4).state_dict(), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"shape mismatches: 0.weight: checkpoint \(4, 3\) vs model \(8, 3\)"):
        load_model_weights(_net(8), tmp_path / "m.safetensors")
    other = torch.nn.Sequential(torch.nn.Linear(3, 4))
    with pytest.raises(CheckpointError, match="unexpected keys: .*2.weight"):
        load_model_weights(other, tmp_path / "m.safetensors")


def _save(mgr: CheckpointManager, step: int) -> Path:
    tmp = mgr.begin(step)
    save_safetensors({"w": torch.full((3,), float(step))}, tmp / "model.safetensors")
    return mgr.commit(step, {"epoch": 0})


def test_manager_keeps_last_n_and_ignores_partial(tmp_path: Path):
    mgr = CheckpointManager(tmp_path / "checkpoints", keep_last=2)
    for s in (10, 20, 30):
        _save(mgr, s)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step_00000020", "step_00000030"]
    assert find_latest(tmp_path / "checkpoints").name == "step_00000030"
    # a half-written checkpoint (killed before commit) and a corrupt pointer are ignored
    partial = mgr.begin(40)
    (partial / "model.safetensors").write_bytes(b"garbage")
    (tmp_path / "checkpoints" / "latest").write_text("step_00000040\n")
    assert find_latest(tmp_path / "checkpoints").name == "step_00000030"
    (tmp_path / "checkpoints" / "latest").unlink()
    assert find_latest(tmp_path).name == "step_00000030"  # run folder also accepted
    _save(mgr, 50)
    assert not partial.exists()  # stale temp folders are cleaned by the next save


_WRITER = textwrap.dedent("""
    import sys, torch
    from lightnet.train.checkpoint import CheckpointManager, save_safetensors, atomic_torch_save
    mgr = CheckpointManager(sys.argv[1], keep_last=2)
    print("ready", flush=True)
    step = 0
    while True:
        step += 1
        tmp = mgr.begin(step)
        save_safetensors({"w": torch.full((256, 256), float(step))}, tmp / "model.safetensors")
        atomic_torch_save({"step": step, "blob": torch.full((128, 128), float(step))}, tmp / "training_state.pt")
        mgr.commit(step, {"epoch": 0})
""")


def test_sigkill_during_saves_never_corrupts_latest(tmp_path: Path):
    root = tmp_path / "checkpoints"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    delays = (0.1, 0.4)
    for delay in delays:
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        latest = find_latest(root)
        if latest is None:  # killed before the first commit
            continue
        step = json.loads((latest / "meta.json").read_text())["step"]
        w = load_safetensors(latest / "model.safetensors")["w"]
        state = safe_torch_load(latest / "training_state.pt")
        assert torch.all(w == step) and state["step"] == step and torch.all(state["blob"] == step)
    assert find_latest(root) is not None, "no checkpoint was ever committed"
