"""Checkpointing under FSDP, on CPU: FSDP2 ``fully_shard`` (and FSDP1) over gloo with 2 processes.

accelerate does not set up FSDP without GPUs, so the worker (``tests/train/fsdp_checkpoint_worker.py``) shards a
tiny LightNet by hand and drives the real ``Trainer.save_checkpoint`` / ``load_checkpoint`` (see the worker's docstring
for the checks). The single-process tests pin that runs without FSDP keep their checkpoint format and code path.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests._subprocess_env import free_port, subprocess_env

from lightnet.train.distributed_state import (
    full_model_state_dict,
    full_optimizer_state_dict,
    is_sharded,
    load_full_optimizer_state_dict,
)

ROOT = Path(__file__).resolve().parents[2]


def _fully_shard_available() -> bool:
    try:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict  # noqa: F401
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


@pytest.mark.skipif(not _fully_shard_available(), reason="needs torch.distributed with gloo and FSDP2 fully_shard")
@pytest.mark.parametrize("fsdp_version", [2, 1])
def test_fsdp_checkpoint_roundtrip_two_processes(tmp_path: Path, fsdp_version: int):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(ROOT / "tests" / "train" / "fsdp_checkpoint_worker.py"),
           str(tmp_path)]
    if fsdp_version == 1:
        cmd.append("--fsdp1")
    proc = subprocess.run(cmd, env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world"] == 2 and result["fsdp_version"] == fsdp_version
    # FSDP2's clip_grad_norm_ returns a DTensor: the engine's non-finite check must handle it (it failed on GPUs)
    assert result["grad_norm_type"] == ("DTensor" if fsdp_version == 2 else "Tensor")
    assert result["moved"] > 1e-4  # training changed the weights, so the agreements below mean something
    for key in ("weights_vs_unsharded", "resumed_vs_unsharded", "id_keyed_into_sharded", "name_keyed_into_plain"):
        assert result[key] < 2e-5, (key, result)
    assert result["optimizer_vs_unsharded"] < 1e-6
    assert result["resumed_vs_straight"] < 1e-6  # resume continues the sharded run (bitwise in practice)
    # The checkpoint the Trainer wrote is an ordinary one: full weights in safetensors, complete, pointed at.
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000002"
    assert json.loads((ckpt / "meta.json").read_text())["complete"] is True
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert {p.name for p in ckpt.glob("rng_rank*.pt")} == {"rng_rank0.pt", "rng_rank1.pt"}


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    model(torch.randn(5, 3, generator=g)).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()


def test_unsharded_models_keep_plain_state_dicts():
    model = _net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _step(model, opt, 0)
    assert not is_sharded(model)
    state = full_model_state_dict(model)
    assert list(state) == list(model.state_dict()) and all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    optim_state = full_optimizer_state_dict(model, opt)
    assert set(optim_state["state"]) == {0, 1, 2, 3}  # torch's integer ids: the checkpoint format is unchanged
    assert optim_state["param_groups"][0]["params"] == [0, 1, 2, 3]


def test_name_keyed_optimizer_state_resumes_a_plain_model_like_an_id_keyed_one():
    """A checkpoint written under FSDP (optimizer state keyed by parameter name) resumes a run without FSDP."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    model = _net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _step(model, opt, 0)
    by_id = opt.state_dict()
    by_name = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    assert set(by_name["state"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    finals = []
    for state in (by_id, by_name):
        m = _net()
        m.load_state_dict(weights)
        o = torch.optim.AdamW(m.parameters(), lr=1e-2)
        load_full_optimizer_state_dict(m, o, copy.deepcopy(state))  # loading may alias the given tensors
        _step(m, o, 1)
        finals.append(m.state_dict())
    _step(model, opt, 1)
    for k, v in model.state_dict().items():
        assert torch.equal(finals[0][k], v) and torch.equal(finals[1][k], v), k


def test_train_dit_refuses_fsdp_before_making_a_run_folder(tmp_path: Path, monkeypatch):
    from lightnet.train.config import ConfigError
    from lightnet.train.dit import DiTTrainConfig, train_dit

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    cfg = DiTTrainConfig()
    cfg.run.output_dir = str(tmp_path / "runs")
    with pytest.raises(ConfigError, match=r"train-dit does not support FSDP .*EMA needs the full weights.*--multi_gpu"):
        train_dit(cfg)
    assert not (tmp_path / "runs").exists()


def test_lm_plain_copy_holds_the_gathered_weights_and_keeps_the_random_state():
    """``train-lm`` under FSDP saves and samples from an unsharded copy built from the gathered full weights."""
    from lightnet.train.lm import LMTrainConfig, _plain_copy, build_lm_model

    cfg = LMTrainConfig(model={"dim": 16, "depth": 1, "num_heads": 2, "attn_backend": "torch"})
    torch.manual_seed(5)
    trained = build_lm_model(cfg)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    rng = torch.get_rng_state()
    copy_ = _plain_copy(cfg, state, torch.device("cpu"), training=False)
    assert torch.equal(torch.get_rng_state(), rng)
    assert not copy_.training and type(copy_) is type(trained)
    for k, v in copy_.state_dict().items():
        assert torch.equal(v, state[k]), k
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(copy_(input_ids=ids).logits, trained.eval()(input_ids=ids).logits)
