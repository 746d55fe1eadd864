"""Full (unsharded) model and optimizer state for checkpoints, also when the model is sharded by FSDP.

Without sharding (one process, DDP) these helpers are exactly ``model.state_dict()`` /
``optimizer.state_dict()`` / ``load_state_dict``: nothing changes for such runs, nor their checkpoint format.

When the prepared model is FSDP-sharded (FSDP2 ``fully_shard`` anywhere in the module tree, or an FSDP1
``FullyShardedDataParallel`` wrapper) parameters and optimizer state live in shards on every rank, so
``state_dict()`` on one process gives shards (FSDP2 DTensors, which safetensors cannot save) or deadlocks
(FSDP1, where it is a collective). Here ``torch.distributed.checkpoint.state_dict`` gathers them instead:

* :func:`full_model_state_dict` / :func:`full_optimizer_state_dict` are **collectives** (every rank must
  call them); the full tensors, on CPU, come back on rank 0 only, other ranks get an empty dict.
* :func:`load_full_model_state_dict` / :func:`load_full_optimizer_state_dict` are collectives too; every
  rank passes the full state (read from the checkpoint files) and keeps its own shard.

The optimizer state of a sharded model is keyed by parameter name (``{"state": {fqn: {...}},
"param_groups": [{"params": [fqn, ...], ...}]}``, torch's distributed-checkpoint format) instead of
torch's integer ids; :func:`load_full_optimizer_state_dict` accepts either format for either kind of
model, so a checkpoint written without FSDP resumes under FSDP and vice versa.

Sharding is detected from the model itself (not from accelerate's settings), so the helpers also work on a
model sharded by hand (e.g. CPU tests with gloo and ``fully_shard``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ..state_dict import diff_state_dicts
from .checkpoint import CheckpointError, load_model_weights, load_safetensors, save_safetensors

__all__ = [
    "replicated_value",
    "full_model_state_dict",
    "full_optimizer_state_dict",
    "is_sharded",
    "load_full_model_state_dict",
    "load_full_optimizer_state_dict",
    "load_model_file",
    "save_model_file",
]

# Wrapper prefixes that torch.distributed.checkpoint drops from parameter names (FSDP1, activation
# checkpointing, torch.compile, DDP).
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.", "module.")


def replicated_value(value: Any) -> Any:
    """``value`` as a plain tensor: a DTensor (e.g. the global gradient norm that ``clip_grad_norm_`` returns for
    FSDP2-sharded parameters) becomes its full tensor (a collective: every rank must call); anything else is
    returned as is."""
    full_tensor = getattr(value, "full_tensor", None)
    return full_tensor() if callable(full_tensor) else value


def _inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` (or the optimizer itself)."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer


def _fsdp2_types() -> tuple[type, ...]:
    try:
        from torch.distributed.fsdp import FSDPModule  # FSDP2 (torch >= 2.6)
    except ImportError:  # pragma: no cover - older torch
        try:
            from torch.distributed._composable.fsdp import FSDPModule
        except ImportError:
            return ()
    return (FSDPModule,)


def _fsdp1_types() -> tuple[type, ...]:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover
        return ()
    return (FullyShardedDataParallel,)


def _contains(model: torch.nn.Module, kinds: tuple[type, ...]) -> bool:
    return bool(kinds) and any(isinstance(m, kinds) for m in model.modules())


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or any sub-module) is sharded by FSDP2 (``fully_shard``) or wrapped in FSDP1."""
    if not torch.distributed.is_available():
        return False
    return _contains(model, _fsdp2_types() + _fsdp1_types())


def _options(**kwargs: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(**kwargs)


def _gather_options(model: torch.nn.Module):
    """``full_state_dict=True, cpu_offload=True`` (full CPU tensors on rank 0, nothing elsewhere), except for FSDP1
    with parameters already on the CPU: there (torch 2.14, gloo) the offloaded optimizer state came back with
    ``exp_avg`` holding ``exp_avg_sq``'s values, so the gather is done without offload (full state on every rank,
    already on the CPU)."""
    fsdp1_on_cpu = (not _contains(model, _fsdp2_types()) and _contains(model, _fsdp1_types())
                    and all(p.device.type == "cpu" for p in model.parameters()))
    return _options(full_state_dict=True, cpu_offload=not fsdp1_on_cpu)


def full_model_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's full state dict (CPU tensors under FSDP).

    Not sharded: ``model.state_dict()`` (any process may call it). Sharded: a collective that every rank
    must call; rank 0 gets the full CPU tensors, the other ranks an empty dict (FSDP1 on CPU: the full
    dict too, see :func:`_gather_options`; callers use it on the main process only).
    """
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_gather_options(model))


def full_optimizer_state_dict(model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """The optimizer's full state dict; ``optimizer`` may be accelerate's ``AcceleratedOptimizer``.

    Not sharded: ``optimizer.state_dict()`` (torch's format with integer parameter ids). Sharded: a
    collective returning, on rank 0, the full CPU state keyed by parameter name (other ranks: ``{}``).
    """
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, _inner_optimizer(optimizer), options=_gather_options(model))


def load_full_model_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load a full state dict into ``model``; under FSDP a collective where every rank passes the full dict."""
    if not is_sharded(model):
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, dict(state), options=_options(full_state_dict=True, strict=True))


def _is_name_keyed(state: Mapping[str, Any]) -> bool:
    groups = state.get("param_groups") or []
    return any(isinstance(p, str) for g in groups for p in g.get("params", []))


def _clean_name(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def _name_keyed(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> dict[str, Any]:
    """Turn torch's id-keyed optimizer state (ids = positions over ``optimizer.param_groups``) into the
    parameter-name-keyed format of ``torch.distributed.checkpoint``."""
    names = {id(p): _clean_name(n) for n, p in model.named_parameters()}
    ordered = [p for g in optimizer.param_groups for p in g["params"]]
    missing = [i for i, p in enumerate(ordered) if id(p) not in names]
    if missing:
        raise CheckpointError("cannot map the checkpoint's optimizer state onto the sharded model's parameters "
                              f"({len(missing)} optimizer parameters have no name in the model)")
    id_to_name = {i: names[id(p)] for i, p in enumerate(ordered)}
    try:
        return {
            "state": {id_to_name[int(i)]: s for i, s in state["state"].items()},
            "param_groups": [{**g, "params": [id_to_name[int(i)] for i in g["params"]]} for g in state["param_groups"]],
        }
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"the checkpoint's optimizer state does not fit this optimizer "
                              f"(parameter id {e} unknown)") from e


def load_full_optimizer_state_dict(model: torch.nn.Module, optimizer: Any, state: Mapping[str, Any]) -> None:
    """Restore a full optimizer state (either format, see the module doc) into ``optimizer``.

    A collective under FSDP (every rank passes the full state). Without sharding an id-keyed state goes
    through ``optimizer.load_state_dict`` exactly as before.
    """
    sharded = is_sharded(model)
    if not sharded and not _is_name_keyed(state):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    inner = _inner_optimizer(optimizer)
    if not _is_name_keyed(state):
        state = _name_keyed(model, inner, state)
    set_optimizer_state_dict(model, inner, dict(state), options=_options(full_state_dict=True))


def save_model_file(model: torch.nn.Module, path: str | Path, is_main: bool) -> None:
    """Write the model's full weights to safetensors ``path`` on the main process.

    Collective under FSDP (every rank must call it); without sharding only the main process does any work.
    """
    if not is_sharded(model):
        if is_main:
            save_safetensors(model.state_dict(), path)
        return
    state = full_model_state_dict(model)
    if is_main:
        save_safetensors(state, path)


def load_model_file(model: torch.nn.Module, path: str | Path) -> None:
    """Load safetensors weights written by :func:`save_model_file` into ``model`` (every rank reads the file).

    Without sharding this is :func:`~lightnet.train.checkpoint.load_model_weights`; under FSDP the keys and
    (global) shapes are checked the same way, then the shards are set collectively.
    """
    if not is_sharded(model):
        load_model_weights(model, path)
        return
    path = Path(path)
    state = load_safetensors(path)
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    own = get_model_state_dict(model)  # sharded (no gather), clean names; DTensor shapes are global
    missing, unexpected, mismatched = diff_state_dicts(own, state)
    if missing or unexpected or mismatched:
        detail = "; ".join(f"{what}: {', '.join(keys[:6])}" for what, keys in
                           (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", mismatched)) if keys)
        raise CheckpointError(f"checkpoint {path} does not fit model {type(model).__name__} "
                              f"(another architecture or size?); {detail}")
    load_full_model_state_dict(model, state)
