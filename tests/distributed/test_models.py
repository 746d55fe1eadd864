"""Whole models split over a CPU gloo group: the loss and the parameter gradients (averaged over the group) equal the
single-process ones (fp32, relative error <= 1e-5) — the vision and video classifiers (MD-TPE on the full grid, MD-LRPE
at global positions, pooling over the ranks) and the causal LM (1-D TPE, causal state passing, the whole sequence's
loss)."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from ._spawn import rel_err, run_in_processes

TOL = 1e-5


def _averaged_grads(model: torch.nn.Module, world: int):
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad.clone()
        dist.all_reduce(g)
        grads[name] = g / world
    return grads


def _compare(model_fn, loss_fn, rank: int, world: int) -> None:
    torch.manual_seed(0)
    model = model_fn()
    ref_loss = loss_fn(model)
    ref_loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_sequence_parallel_group(dist.group.WORLD)
    loss = loss_fn(model)
    loss.backward()
    assert rel_err(loss.detach(), ref_loss.detach()) <= TOL, (rank, loss.item(), ref_loss.item())
    grads = _averaged_grads(model, world)
    for name, g in grads.items():
        assert rel_err(g, ref[name]) <= TOL, (rank, name, rel_err(g, ref[name]))
    model.set_sequence_parallel_group(None)


def _vision_worker(rank: int, world: int, pool: str) -> None:
    from lightnet.vision.lightnet_vit import LightNet  # imported in the worker: each process imports only its model

    def model_fn():
        return LightNet(img_size=(12, 20), patch_size=4, in_chans=3, num_classes=3, global_pool=pool, embed_dim=16,
                        depth=2, num_heads=2, attn_backend="torch")  # 3 x 5 = 15 tokens: uneven slices

    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 12, 20, generator=g)
    labels = torch.tensor([0, 2])

    def loss_fn(model):
        return torch.nn.functional.cross_entropy(model(images), labels)

    _compare(model_fn, loss_fn, rank, world)


def _video_worker(rank: int, world: int, pool: str) -> None:
    from lightnet.distributed import shard_sizes
    from lightnet.video import LightNetVideo

    def model_fn():
        return LightNetVideo(img_size=12, num_frames=6, patch_size=4, tubelet_size=2, in_chans=3, num_classes=3,
                             global_pool=pool, embed_dim=16, depth=2, num_heads=2, attn_backend="torch")

    g = torch.Generator().manual_seed(3)
    clips = torch.randn(2, 3, 6, 12, 12, generator=g)  # 3 x 3 x 3 = 27 tokens: uneven slices
    labels = torch.tensor([1, 2])

    def loss_fn(model):
        return torch.nn.functional.cross_entropy(model(clips), labels)

    _compare(model_fn, loss_fn, rank, world)
    model = model_fn()
    model.set_sequence_parallel_group(dist.group.WORLD)
    with torch.no_grad():
        local = model.forward_features(clips)
    assert local.shape == (2, shard_sizes(27, world)[rank], 16), local.shape
    with pytest.raises(ValueError, match="sequence-parallel group"):
        model.forward_intermediates(clips)


def _lm_worker(rank: int, world: int) -> None:
    from lightnet.lm import LightNetForCausalLM, LightNetLMConfig

    def model_fn():
        cfg = LightNetLMConfig(vocab_size=260, dim=16, depth=2, num_heads=2, attn_backend="torch")
        return LightNetForCausalLM(cfg)

    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 32, (2, 11), generator=g)
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, :3] = 0  # left padding

    def loss_fn(model):
        return model(ids, attention_mask=mask, labels=ids).loss

    _compare(model_fn, loss_fn, rank, world)


def test_vision_classifier_two_ranks(tmp_path):
    run_in_processes(_vision_worker, 2, tmp_path, "avg")


@pytest.mark.slow
def test_vision_classifier_max_pool_four_ranks(tmp_path):
    run_in_processes(_vision_worker, 4, tmp_path, "avgmax")


def test_video_classifier_two_ranks(tmp_path):
    run_in_processes(_video_worker, 2, tmp_path, "avg")


@pytest.mark.slow
def test_video_classifier_avgmax_four_ranks(tmp_path):
    run_in_processes(_video_worker, 4, tmp_path, "avgmax")


def test_causal_lm_two_ranks(tmp_path):
    run_in_processes(_lm_worker, 2, tmp_path)


@pytest.mark.slow
def test_causal_lm_four_ranks(tmp_path):
    run_in_processes(_lm_worker, 4, tmp_path)
