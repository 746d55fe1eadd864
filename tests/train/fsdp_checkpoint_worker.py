"""Worker for tests/train/test_fsdp_checkpoint.py: run under ``torchrun --nproc_per_node 2`` (CPU, gloo).

Shards a tiny LightNet classifier with FSDP2 ``fully_shard`` (every ``LightNetBlock``, then the root), trains it next
to an identically seeded unsharded copy fed the whole global batch, and checks through the real
:class:`lightnet.train.engine.Trainer` checkpoint methods (the Trainer object is assembled around a minimal stand-in
for the accelerator, since accelerate refuses FSDP on CPU):

1. the gathered full model/optimizer state equals the unsharded run's (rank 0) and is empty on rank 1;
2. ``save_checkpoint`` writes plain safetensors weights and a name-keyed optimizer state;
3. ``load_checkpoint`` into a freshly (differently) initialised sharded model restores the weights exactly, and one
   more step matches the uninterrupted sharded run and the unsharded reference;
4. cross-format resume: a non-FSDP (id-keyed) optimizer state loads into the sharded model, and the FSDP
   (name-keyed) one into a plain model, each giving the same next step.

Usage: ``torchrun --nproc_per_node 2 tests/train/fsdp_checkpoint_worker.py OUT_DIR``; rank 0 writes
``OUT_DIR/result.json``.
Any failed check raises (non-zero exit).
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.nn.functional as F

GLOBAL_BATCH, CLASSES, IMG = 8, 5, 32
ATOL, RTOL = 2e-5, 1e-4


class StubAccelerator:
    """The few ``accelerate.Accelerator`` members that ``Trainer.save_checkpoint``/``load_checkpoint`` use."""

    def __init__(self) -> None:
        self.process_index = dist.get_rank()
        self.num_processes = dist.get_world_size()
        self.is_main_process = self.process_index == 0
        self.scaler = None
        self.device = torch.device("cpu")

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        assert reduction == "sum"
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    def wait_for_everyone(self) -> None:
        dist.barrier()

    def unwrap_model(self, model):
        return model


class StubAcceleratedOptimizer:
    """Like accelerate's ``AcceleratedOptimizer``: the torch optimizer is ``.optimizer``."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state)

    def step(self):
        self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none=set_to_none)


def build_model(seed: int) -> torch.nn.Module:
    import timm

    import lightnet  # noqa: F401  (registers the timm models)

    torch.manual_seed(seed)
    return timm.create_model("test_lightnet", num_classes=CLASSES, img_size=IMG)


FSDP_VERSION = 2  # set from the command line (``--fsdp1``)


def shard(model: torch.nn.Module) -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard

    from lightnet.layers.block import LightNetBlock

    if FSDP_VERSION == 1:
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        return FullyShardedDataParallel(model, auto_wrap_policy=ModuleWrapPolicy({LightNetBlock}),
                                        use_orig_params=True, device_id=torch.device("cpu"))
    blocks = [m for m in model.modules() if isinstance(m, LightNetBlock)]
    assert blocks, "no LightNetBlock in the model"
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def make_optimizer(model: torch.nn.Module) -> StubAcceleratedOptimizer:
    from lightnet.train.engine import build_optimizer
    from lightnet.train.schema import OptimConfig

    # FSDP1 (use_orig_params) shows each rank flat 1-d shards, so timm's "no decay for 1-d parameters" grouping
    # would differ from the unsharded model's: no weight decay there.
    decay = 0.05 if FSDP_VERSION == 2 else 0.0
    return StubAcceleratedOptimizer(build_optimizer(model, OptimConfig(opt="adamw", lr=3e-3, weight_decay=decay),
                                                    GLOBAL_BATCH))


def batch(step: int, rank: int | None, world: int):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(GLOBAL_BATCH, 3, IMG, IMG, generator=g)
    y = torch.randint(0, CLASSES, (GLOBAL_BATCH,), generator=g)
    if rank is None:
        return x, y
    per = GLOBAL_BATCH // world
    return x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]


def train_step(model, optimizer, step: int, rank: int | None, world: int) -> None:
    x, y = batch(step, rank, world)
    loss = F.cross_entropy(model(x), y)  # mean over the local batch; FSDP averages gradients over ranks
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def make_trainer(model, optimizer, root: Path, step: int):
    """A real Trainer object around ``model``/``optimizer`` with only what checkpointing needs."""
    from lightnet.train.checkpoint import CheckpointManager
    from lightnet.train.engine import Trainer, TrainState, build_scheduler
    from lightnet.train.schema import RunConfig, SchedConfig

    t = Trainer.__new__(Trainer)
    t.run, t.acc = RunConfig(seed=0), StubAccelerator()
    t.model, t.optimizer = model, optimizer
    t.scheduler = build_scheduler(optimizer.optimizer, SchedConfig(), epochs=1, updates_per_epoch=10)
    t.run_dir, t.config, t.extra_modules = root, None, {}
    t.ckpt = CheckpointManager(root / "checkpoints", keep_last=2)
    t.state = TrainState(step=step)
    t.logger = SimpleNamespace(truncate_after=lambda step: None)
    t._last_saved = -1
    return t


def close(a: dict, b: dict, what: str, atol: float = ATOL, rtol: float = RTOL) -> float:
    assert set(a) == set(b), f"{what}: keys differ: {sorted(set(a) ^ set(b))[:6]}"
    worst = 0.0
    for k in a:
        x, y = a[k].detach().float().cpu(), b[k].detach().float().cpu()
        assert x.shape == y.shape, f"{what}: {k} shape {tuple(x.shape)} vs {tuple(y.shape)}"
        assert torch.allclose(x, y, atol=atol, rtol=rtol), f"{what}: {k} differs by {(x - y).abs().max().item():.3g} (max abs {y.abs().max().item():.3g})"
        worst = max(worst, (x - y).abs().max().item() if x.numel() else 0.0)
    return worst


def named_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """``{"<param>.exp_avg": ..., "<param>.exp_avg_sq": ...}`` of a plain model's id-keyed optimizer state."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for p, s in optimizer.state.items():
        for k in ("exp_avg", "exp_avg_sq"):
            out[f"{names[id(p)]}.{k}"] = s[k]
    return out


def flat_named_state(state: dict) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": s[k] for name, s in state["state"].items() for k in ("exp_avg", "exp_avg_sq")}


def main() -> None:
    global FSDP_VERSION
    out = Path(sys.argv[1])
    FSDP_VERSION = 1 if "--fsdp1" in sys.argv[2:] else 2
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    from lightnet.train.checkpoint import load_safetensors, safe_torch_load
    from lightnet.train.distributed_state import (
        full_model_state_dict,
        is_sharded,
        load_full_model_state_dict,
        load_full_optimizer_state_dict,
    )

    result: dict = {"world": world}
    ref = build_model(seed=0)
    init = copy.deepcopy(ref.state_dict())
    model = shard(build_model(seed=0))
    assert is_sharded(model) and not is_sharded(ref)
    result["fsdp_version"] = FSDP_VERSION
    ref_opt, opt = make_optimizer(ref), make_optimizer(model)
    for step in (1, 2):
        train_step(ref, ref_opt, step, None, world)
        train_step(model, opt, step, rank, world)

    trainer = make_trainer(model, opt, out / f"run", step=2)
    assert trainer.sharded
    # The global gradient norm of sharded parameters (a DTensor under FSDP2) goes through the non-finite check.
    x, y = batch(99, rank, world)
    F.cross_entropy(model(x), y).backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
    result["grad_norm_type"] = type(norm).__name__
    assert trainer._nonfinite(torch.as_tensor(norm)) is False, "a finite gradient norm was reported non-finite"
    assert trainer._nonfinite(torch.as_tensor(norm) * float("inf")) is True, "an infinite norm was not caught"
    opt.zero_grad(set_to_none=True)
    full = trainer.full_model_state()
    full_opt = trainer.full_optimizer_state()
    if rank == 0:
        result["weights_vs_unsharded"] = close(full, ref.state_dict(), "gathered weights vs unsharded run")
        moved = max((full[k].float() - init[k].float()).abs().max().item() for k in full)
        assert moved > 1e-4, "training did not change the weights"
        result["moved"] = moved
        result["optimizer_vs_unsharded"] = close(flat_named_state(full_opt), named_optimizer_state(ref, ref_opt.optimizer),
                                                 "gathered optimizer state vs unsharded run", atol=1e-6)
        assert all(not isinstance(v, torch.distributed.tensor.DTensor) and v.device.type == "cpu" for v in full.values())
    elif FSDP_VERSION == 2:
        assert full == {} and full_opt == {}, "non-main ranks must get empty full state dicts"

    ckpt = trainer.save_checkpoint()
    assert ckpt.name == "step_00000002" and (ckpt / "model.safetensors").is_file(), ckpt
    saved = load_safetensors(ckpt / "model.safetensors")
    close(saved, ref.state_dict(), "saved model.safetensors vs unsharded run")
    ts = safe_torch_load(ckpt / "training_state.pt")
    assert ts["state"]["step"] == 2 and ts["num_processes"] == world
    assert all(isinstance(p, str) for g in ts["optimizer"]["param_groups"] for p in g["params"])

    # Uninterrupted: step 3 on the original sharded model and the reference.
    ref_after_2 = copy.deepcopy(ref.state_dict())
    ref_opt_after_2 = copy.deepcopy(ref_opt.state_dict())
    train_step(ref, ref_opt, 3, None, world)
    train_step(model, opt, 3, rank, world)
    straight = full_model_state_dict(model)

    # Resume: a freshly sharded model with other initial weights, restored by Trainer.load_checkpoint.
    resumed = shard(build_model(seed=1))
    resumed_opt = make_optimizer(resumed)
    trainer2 = make_trainer(resumed, resumed_opt, out / "run", step=0)
    trainer2.load_checkpoint(ckpt)
    assert trainer2.state.step == 2
    restored = full_model_state_dict(resumed)
    if rank == 0:
        for k, v in saved.items():
            assert torch.equal(restored[k], v), f"restored weight {k} differs from the checkpoint"
    train_step(resumed, resumed_opt, 3, rank, world)
    after = full_model_state_dict(resumed)
    if rank == 0:
        result["resumed_vs_straight"] = close(after, straight, "resumed step 3 vs uninterrupted sharded step 3",
                                              atol=1e-6, rtol=1e-5)
        result["resumed_vs_unsharded"] = close(after, ref.state_dict(), "resumed step 3 vs unsharded step 3")
        assert max((after[k].float() - saved[k].float()).abs().max().item() for k in after) > 1e-5, "step 3 was a no-op"

    # Cross-format 1: a plain (id-keyed, non-FSDP) checkpoint state resumed into a sharded model.
    cross = shard(build_model(seed=2))
    cross_opt = make_optimizer(cross)
    load_full_model_state_dict(cross, ref_after_2)
    load_full_optimizer_state_dict(cross, cross_opt, ref_opt_after_2)
    train_step(cross, cross_opt, 3, rank, world)
    cross_full = full_model_state_dict(cross)
    if rank == 0:
        result["id_keyed_into_sharded"] = close(cross_full, ref.state_dict(), "id-keyed optimizer state into FSDP")

    # Cross-format 2: the FSDP (name-keyed) checkpoint resumed into a plain model, one process.
    if rank == 0:
        plain = build_model(seed=3)
        plain_opt = make_optimizer(plain)
        make_trainer(plain, plain_opt, out / "plain", step=0)  # a scheduler on it, as in a real run
        load_full_model_state_dict(plain, saved)
        load_full_optimizer_state_dict(plain, plain_opt, ts["optimizer"])
        train_step(plain, plain_opt, 3, None, world)
        result["name_keyed_into_plain"] = close(plain.state_dict(), ref.state_dict(), "name-keyed state into plain")
        (out / "result.json").write_text(json.dumps(result, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
