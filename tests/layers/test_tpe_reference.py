"""References for other grid sizes: MD-TPE mass matching (``MDTPE.reference_grid``), MD-LRPE position interpolation
(``MDLRPE.reference_grid``) and the vision models' ``tpe_match_mass`` / ``lrpe_interpolate`` defaults."""
from __future__ import annotations

import pytest
import timm
import torch

import lightnet  # noqa: F401  registers the models
from lightnet.layers import MDLRPE, MDTPE
from lightnet.layers.lrpe import clear_lrpe_cache, grid_coordinates


def _tpe(**kwargs) -> MDTPE:
    torch.manual_seed(0)
    tpe = MDTPE(6, num_axes=2, num_decays=3, init_std=0.5, **kwargs)
    with torch.no_grad():  # decays near 1, as trained models have them: the kernel's mass grows with the axis
        for axis in tpe.axes:
            axis.fwd_logit.fill_(4.0)
            axis.bwd_logit.fill_(3.0)
    return tpe


def test_reference_grid_is_identity_there_and_matches_mass_elsewhere():
    plain, matched = _tpe(), _tpe(reference_grid=(4, 5))
    x = torch.randn(2, 4 * 5, 6)
    assert torch.equal(matched(x, (4, 5)), plain(x, (4, 5)))
    grid = (7, 9)
    y = torch.randn(2, 7 * 9, 6)
    assert not torch.allclose(matched(y, grid), plain(y, grid))
    for a, (kernel, ref_len) in enumerate(zip(matched.axis_kernels(grid), (4, 5))):
        ref_mass = plain.axes[a].kernel(ref_len).abs().sum(0)
        raw = plain.axes[a].kernel(grid[a])
        assert kernel.shape == raw.shape == (2 * grid[a] - 1, 6)
        torch.testing.assert_close(kernel.abs().sum(0), ref_mass)  # same per-channel |mass| as at the reference
        torch.testing.assert_close(kernel, raw * (ref_mass / raw.abs().sum(0))[None])  # a per-channel rescale only
        assert (raw.abs().sum(0) > ref_mass).all()  # what it undoes: the longer axis sums more offsets


def test_reference_grid_gradients_and_compile():
    tpe = _tpe(reference_grid=(3, 3))
    x = torch.randn(2, 36, 6, requires_grad=True)
    tpe(x, (6, 6)).square().sum().backward()
    assert x.grad is not None and all(p.grad is not None and p.grad.abs().sum() > 0 for p in tpe.parameters())
    torch._dynamo.reset()
    compiled = torch.compile(tpe, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x.detach(), (6, 6)), tpe(x.detach(), (6, 6)))


def test_reference_grid_errors_and_repr():
    with pytest.raises(ValueError, match="2 positive axis lengths"):
        _tpe(reference_grid=(4,))
    with pytest.raises(ValueError, match="2 positive axis lengths"):
        _tpe(reference_grid=(4, 0))
    with pytest.raises(ValueError, match="needs bidirectional axes"):
        MDTPE(6, num_axes=1, causal=True, reference_grid=(8,))
    tpe = _tpe(reference_grid=(4, 4))
    assert "reference_grid=(4, 4)" in repr(tpe)
    tpe.set_reference_grid(None)
    assert tpe.reference_grid is None and "reference_grid" not in repr(tpe)


def test_lightnet_matches_mass_to_its_nominal_grid():
    kwargs = dict(img_size=32, patch_size=8, in_chans=1, num_classes=3, embed_dim=16, depth=1, num_heads=2,
                  dynamic_img_size=True)
    torch.manual_seed(0)
    model = timm.create_model("lightnet_tiny", **kwargs).eval()
    raw = timm.create_model("lightnet_tiny", tpe_match_mass=False, lrpe_interpolate=False, **kwargs).eval()
    raw.load_state_dict(model.state_dict())
    with torch.no_grad():
        for axis in list(model.tpe.axes) + list(raw.tpe.axes):
            axis.fwd_logit.fill_(4.0)
    assert model.tpe.reference_grid == (4, 4) and raw.tpe.reference_grid is None
    assert model.blocks[0].attn.lrpe.reference_grid == (4, 4) and raw.blocks[0].attn.lrpe.reference_grid is None
    x32, x48 = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x32), raw(x32))  # nominal size: the paper's kernel
        assert not torch.allclose(model(x48), raw(x48))
    model.set_input_size(img_size=48)
    assert model.tpe.reference_grid == (6, 6) and model.blocks[0].attn.lrpe.reference_grid == (6, 6)
    no_tpe = timm.create_model("lightnet_tiny", use_tpe=False, **kwargs)
    no_tpe.set_input_size(img_size=40)  # nothing to match: no error
    assert no_tpe.tpe is None


def test_lrpe_reference_grid_scales_coordinates_into_the_reference_range():
    clear_lrpe_cache()
    plain, ref = MDLRPE(8, num_axes=2), MDLRPE(8, num_axes=2, reference_grid=(4, 5))
    assert torch.equal(ref.angles((4, 5), cache=True), plain.angles((4, 5), cache=True))  # identity at the reference
    for cache in (True, False):
        got = ref.angles((8, 10), num_prefix_tokens=1, cache=cache)
        coords = grid_coordinates((8, 10)) * torch.tensor([4 / 8, 5 / 10])
        want = torch.cat([torch.zeros(1, 8), coords @ plain.freqs.float()], dim=0)
        torch.testing.assert_close(got, want)
        assert (coords.max(0).values < torch.tensor([4.0, 5.0])).all()  # within [0, reference) as in training
    # the cached table of the plain module at the same grid is not the interpolated one
    assert not torch.allclose(plain.angles((8, 10), cache=True), ref.angles((8, 10), cache=True)[:80])
    ref.set_reference_grid(None)
    assert torch.equal(ref.angles((8, 10), cache=True), plain.angles((8, 10), cache=True))
    with pytest.raises(ValueError, match="2 positive axis lengths"):
        MDLRPE(8, num_axes=2, reference_grid=(4,))
    assert "reference_grid=(3, 3)" in repr(MDLRPE(8, num_axes=2, reference_grid=(3, 3)))


def test_lrpe_reference_grid_under_compile():
    lrpe = MDLRPE(8, num_axes=2, reference_grid=(2, 3))
    x = torch.randn(1, 12, 2, 8)
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: lrpe(t, (3, 4)), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), lrpe(x, (3, 4)))
