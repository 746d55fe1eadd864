"""sequence_parallel_attention on CPU gloo groups equals each rank's slice of the single-process op, forward and
backward (fp32, relative error <= 1e-5): non-causal and causal, MD-LRPE at global positions, padding, uneven slices."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from lightnet.distributed import sequence_parallel_attention
from lightnet.kernels import additive_attention
from lightnet.layers.lrpe import MDLRPE

from ._spawn import rel_err, run_in_processes

TOL = 1e-5


def _case_inputs(seed: int, sizes, H=2, D=4, E=3, B=2, lrpe=True, mask=True):
    g = torch.Generator().manual_seed(seed)
    N = sum(sizes)
    q = torch.randn(B, N, H, D, generator=g)
    k = torch.randn(B, N, H, D, generator=g) * 3
    v = torch.randn(B, N, H, E, generator=g)
    grad = torch.randn(B, N, H, E, generator=g)
    theta = MDLRPE(D, num_axes=1).angles((N,)) if lrpe else None
    pad = None
    if mask:
        pad = torch.rand(B, N, generator=g) < 0.3
        pad[1, :] = False
        pad[1, : sizes[0] + 1] = True  # a padded prefix crossing the first slice boundary
    return q, k, v, grad, theta, pad


def _check_cases(rank: int, world: int, cases) -> None:
    for seed, sizes, causal, lrpe, mask, q_act in cases:
        q, k, v, grad, theta, pad = _case_inputs(seed, sizes, lrpe=lrpe, mask=mask)
        full = [t.clone().requires_grad_(True) for t in (q, k, v)]
        o_ref = additive_attention(*full, causal=causal, key_padding_mask=pad, lrpe_theta=theta,
                                   q_activation=q_act, backend="torch")
        (o_ref * grad).sum().backward()
        start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
        local = [t[:, start:stop].clone().requires_grad_(True) for t in (q, k, v)]
        o = sequence_parallel_attention(
            *local, causal=causal, key_padding_mask=None if pad is None else pad[:, start:stop],
            lrpe_theta=None if theta is None else theta[start:stop], q_activation=q_act, backend="torch",
        )
        (o * grad[:, start:stop]).sum().backward()
        what = f"rank {rank} sizes {sizes} causal {causal} lrpe {lrpe} mask {mask} q_act {q_act}"
        assert o.shape == (q.shape[0], stop - start, q.shape[2], v.shape[3]), what
        if stop > start:
            assert rel_err(o, o_ref[:, start:stop]) <= TOL, (what, "output", rel_err(o, o_ref[:, start:stop]))
            for name, t, ref in zip("qkv", local, full):
                err = rel_err(t.grad, ref.grad[:, start:stop])
                assert err <= TOL, (what, f"d{name}", err)


CASES_2 = [
    # seed, slice sizes, causal, lrpe, mask, q_activation
    (0, (5, 7), False, True, True, "silu"),
    (1, (9, 4), False, False, False, None),
    (2, (5, 7), True, True, True, "silu"),
    (3, (9, 4), True, False, False, None),
    (4, (6, 6), True, True, False, None),
]
CASES_4 = [
    (5, (3, 6, 1, 4), False, True, True, None),
    (6, (3, 6, 1, 4), True, True, True, "silu"),
    (7, (4, 0, 5, 2), True, False, True, None),  # an empty slice in the middle
    (8, (4, 0, 5, 2), False, True, False, None),
]


def _worker_cases(rank: int, world: int, cases) -> None:
    _check_cases(rank, world, cases)


def test_two_ranks_match_single_process(tmp_path):
    run_in_processes(_worker_cases, 2, tmp_path, CASES_2)


@pytest.mark.slow
def test_four_ranks_match_single_process(tmp_path):
    run_in_processes(_worker_cases, 4, tmp_path, CASES_4)


def _worker_world_one(rank: int, world: int) -> None:
    q, k, v, _, theta, pad = _case_inputs(9, (8,))
    for causal in (False, True):
        ref = additive_attention(q, k, v, causal=causal, key_padding_mask=pad, lrpe_theta=theta, backend="torch")
        out = sequence_parallel_attention(q, k, v, causal=causal, key_padding_mask=pad, lrpe_theta=theta,
                                          backend="torch")
        assert torch.equal(out, ref), causal


def test_world_size_one_is_the_plain_op(tmp_path):
    run_in_processes(_worker_world_one, 1, tmp_path)


def _worker_subgroup(rank: int, world: int) -> None:
    # two sequence groups of two ranks ({0, 1}, {2, 3}), each splitting its own sequence
    groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    group = groups[rank // 2]
    sizes = (5, 3)
    q, k, v, grad, theta, pad = _case_inputs(10 + rank // 2, sizes)
    ref = additive_attention(q, k, v, causal=True, key_padding_mask=pad, lrpe_theta=theta, backend="torch")
    r = rank % 2
    start, stop = sum(sizes[:r]), sum(sizes[: r + 1])
    out = sequence_parallel_attention(q[:, start:stop], k[:, start:stop], v[:, start:stop], group=group, causal=True,
                                      key_padding_mask=pad[:, start:stop], lrpe_theta=theta[start:stop],
                                      backend="torch")
    assert rel_err(out, ref[:, start:stop]) <= TOL


@pytest.mark.slow
def test_subgroups_split_their_own_sequences(tmp_path):
    run_in_processes(_worker_subgroup, 4, tmp_path)


def test_needs_an_initialised_process_group():
    q = torch.randn(1, 3, 1, 2)
    with pytest.raises(RuntimeError, match="not initialised"):
        sequence_parallel_attention(q, q, q)


def test_unknown_backend_is_named():
    q = torch.randn(1, 3, 1, 2)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        sequence_parallel_attention(q, q, q, backend="cuda")
