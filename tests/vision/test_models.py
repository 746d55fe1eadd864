"""timm model checks for every registered LightNet vision model.

Re-implements the checks of timm's own ``tests/test_models.py`` (forward + grad checkpointing, backward with a
gradient on every parameter, default-cfg consistency, features_only, forward_intermediates, FX forward/backward,
TorchScript and FX-then-TorchScript)
for ``*lightnet*`` models, plus what timm's suite does not cover: dynamic image size, ``set_input_size``, local
checkpoint loading through ``pretrained_cfg_overlay``, bad input, device/dtype construction and ``torch.compile``.

Real-size models run their spatial checks at reduced, patch-divisible sizes (``dynamic_img_size=True``) except the
cfg check, which needs the cfg's own input size.
"""
from __future__ import annotations

import math
import pickle

import pytest
import torch
import timm
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import FeatureInfo, get_notrace_functions, get_notrace_modules

import lightnet  # noqa: F401  registers the models
from lightnet.vision import LightNet, checkpoint_filter_fn

ALL_MODELS = timm.list_models(module="lightnet_vit")  # image classifiers (video models: tests/video)
REAL_MODELS = [n for n in ALL_MODELS if n.startswith("lightnet_")]
# Every model runs every check; the three larger ones only under `-m slow` (they dominate the 2-core CI budget).
_LARGE = {"lightnet_small", "lightnet_base", "lightnet_small_patch8"}
MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in _LARGE else n for n in ALL_MODELS]
SMALL_SIZE = 64  # side used for real-size models in the cheap checks (divisible by 8 and 16)


def _make(name: str, **kwargs) -> LightNet:
    """Test model at its cfg size; real models dynamic so that small inputs are accepted."""
    if name != "test_lightnet":
        kwargs.setdefault("dynamic_img_size", True)
    return timm.create_model(name, **kwargs)


def _input_size(name: str, model: torch.nn.Module):
    return tuple(model.pretrained_cfg["input_size"]) if name == "test_lightnet" else (3, SMALL_SIZE, SMALL_SIZE)


def test_registry_lists_all_variants():
    assert set(ALL_MODELS) == {"lightnet_tiny", "lightnet_small", "lightnet_base", "lightnet_small_patch8", "test_lightnet"}
    assert set(timm.list_models("*lightnet*")) == set(ALL_MODELS) | set(timm.list_models(module="registry"))
    for name in ALL_MODELS:
        cfg = timm.get_pretrained_cfg(name).to_dict()
        assert cfg["paper_ids"] == "arXiv:2405.21022"
        assert cfg["first_conv"] == "patch_embed.proj" and cfg["classifier"] == "head"
        assert not timm.models.is_model_pretrained(name)  # no hub weights, nothing to download


@pytest.mark.parametrize("name,width,depth,heads,patch", [
    ("lightnet_tiny", 192, 12, 3, 16),
    ("lightnet_small", 384, 12, 6, 16),
    ("lightnet_base", 768, 12, 12, 16),
    ("lightnet_small_patch8", 384, 12, 6, 8),
])
def test_variant_shapes(name, width, depth, heads, patch):
    model = timm.create_model(name, weight_init="skip")
    assert model.embed_dim == width and len(model.blocks) == depth
    attn = model.blocks[0].attn
    assert attn.num_heads == heads and attn.head_dim == 64
    assert model.patch_embed.patch_size == (patch, patch)
    assert model.pretrained_cfg["pool_size"] == (224 // patch, 224 // patch)


# ---------------------------------------------------------------------------- timm's base checks
@pytest.mark.parametrize("name", MODELS)
def test_model_forward_and_grad_checkpointing(name):
    model = _make(name).eval()
    x = torch.randn(1, *_input_size(name, model))
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 1000)
        assert torch.isfinite(out).all()
        model.set_grad_checkpointing()
        out2 = model(x)
    assert torch.allclose(out, out2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_model_backward(name):
    model = _make(name, num_classes=42)
    model.train()
    x = torch.randn(2, *_input_size(name, model))
    out = model(x)
    out.mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {n}"
    assert sum(p.numel() for p in model.parameters()) == sum(p.grad.numel() for p in model.parameters())
    assert out.shape == (2, 42)
    assert torch.isfinite(out).all()


def test_backward_with_grad_checkpointing_matches():
    torch.manual_seed(0)
    model = timm.create_model("test_lightnet", num_classes=7)
    x = torch.randn(2, 3, 160, 160)
    model(x).square().sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    model(x).square().sum().backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, ref[n], rtol=1e-4, atol=1e-6), n


def test_attn_recompute_output_reaches_every_mixer_with_identical_gradients():
    """``attn_recompute_output='always'`` (eager recomputation of the mixers' output norm and gate) gives the same
    gradients as ``'never'``; an unknown value is refused by name."""
    from lightnet.layers import LightNetAttention

    x = torch.randn(2, 3, 160, 160)
    grads = {}
    for mode in ("never", "always"):
        torch.manual_seed(0)
        model = timm.create_model("test_lightnet", num_classes=7, attn_recompute_output=mode)
        mixers = [m for m in model.modules() if isinstance(m, LightNetAttention)]
        assert mixers and all(m.recompute_output == mode for m in mixers)
        model(x).square().sum().backward()
        grads[mode] = {n: p.grad for n, p in model.named_parameters()}
    for n, g in grads["never"].items():
        assert torch.equal(grads["always"][n], g), n
    with pytest.raises(ValueError, match="recompute_output"):
        timm.create_model("test_lightnet", attn_recompute_output="sometimes")


def test_drop_path_and_dropout_are_training_only():
    model = timm.create_model("test_lightnet", drop_rate=0.5, drop_path_rate=0.5, proj_drop_rate=0.1)
    rates = [b.drop_path1.drop_prob for b in model.blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)
    x = torch.randn(2, 3, 160, 160)
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# ---------------------------------------------------------------------------- timm's cfg check
@pytest.mark.parametrize("name", MODELS)
def test_model_default_cfgs(name):
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    pool_size = cfg["pool_size"]
    spatial_axis = get_spatial_dim(model.output_fmt)
    feat_axis = get_channel_dim(model.output_fmt)
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert (feats.shape[spatial_axis[0]], feats.shape[spatial_axis[1]]) == tuple(pool_size)
        assert feats.shape[feat_axis] == model.num_features
        assert pre.shape[1] == model.head_hidden_size

        model.reset_classifier(0)
        assert model.num_classes == 0
        out = model(x)
        assert out.shape == pre.shape == (1, model.head_hidden_size)

        model.reset_classifier(0, "")
        out = model(x)
        assert out.dim() == 4 and (out.shape[spatial_axis[0]], out.shape[spatial_axis[1]]) == tuple(pool_size)

        fresh = timm.create_model(name, num_classes=0, global_pool="").eval()
        out = fresh(x)
        assert out.dim() == 4 and (out.shape[spatial_axis[0]], out.shape[spatial_axis[1]]) == tuple(pool_size)

    state = fresh.state_dict()
    assert cfg["first_conv"] + ".weight" in state
    assert cfg["classifier"] + ".weight" in timm.create_model(name, weight_init="skip").state_dict()


def test_reset_classifier_and_get_classifier():
    model = timm.create_model("test_lightnet")
    assert model.get_classifier() is model.head and model.head.out_features == 1000
    model.reset_classifier(10, "max")
    assert model.head.out_features == 10 and model.global_pool == "max"
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        feats = model.forward_features(x)
        expected = model.head(feats.amax(dim=(1, 2)))
        assert torch.allclose(model(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(10, "token")


# ---------------------------------------------------------------------------- features / intermediates
@pytest.mark.parametrize("name", MODELS)
def test_model_features_only(name):
    model = _make(name, features_only=True).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 3
    size = _input_size(name, model)
    with torch.no_grad():
        outputs = model(torch.randn(1, *size))
    assert len(outputs) == len(channels)
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape == (1, c, size[1] // r, size[2] // r)  # NCHW
        assert torch.isfinite(o).all()


@pytest.mark.parametrize("name", MODELS)
def test_model_forward_intermediates(name):
    model = _make(name).eval()
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    assert len(info.channels()) == len(model.blocks) >= 3
    size = _input_size(name, model)
    x = torch.randn(1, *size)
    with torch.no_grad():
        final, inters = model.forward_intermediates(x, output_fmt="NCHW")
        assert len(inters) == len(info.channels())
        for c, r, o in zip(info.channels(), info.reduction(), inters):
            assert o.shape == (1, c, size[1] // r, size[2] // r)
        assert torch.allclose(final, model.forward_features(x))
        model.set_grad_checkpointing()
        final2, _ = model.forward_intermediates(x, output_fmt="NCHW")
    assert torch.allclose(final, final2, rtol=1e-4, atol=1e-5)


def test_forward_intermediates_options():
    model = timm.create_model("test_lightnet").eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        final, all_nchw = model.forward_intermediates(x)
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[0, -1], output_fmt="NLC", intermediates_only=True)
        nhwc = model.forward_intermediates(x, indices=[1], output_fmt="NHWC", intermediates_only=True)
        normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
        early_final, early = model.forward_intermediates(x, indices=[1], stop_early=True)
    assert len(all_nchw) == 4 and len(last2) == 2
    assert torch.equal(last2[0], all_nchw[2]) and torch.equal(last2[1], all_nchw[3])
    assert picked[0].shape == (2, 100, 64)
    assert torch.allclose(picked[1], all_nchw[3].flatten(2).transpose(1, 2))
    assert torch.allclose(nhwc[0], all_nchw[1].permute(0, 2, 3, 1))
    assert torch.allclose(normed[0].permute(0, 2, 3, 1), final, atol=1e-6)  # last block + final norm = features
    assert torch.allclose(early[0], all_nchw[1])
    assert torch.allclose(early_final, model.norm(early[0].permute(0, 2, 3, 1)), atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[4])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NCL")


def test_prune_intermediate_layers():
    model = timm.create_model("test_lightnet").eval()
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        ref = model.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
    kept = model.prune_intermediate_layers([1], prune_norm=True)
    assert kept == [1] and len(model.blocks) == 2
    assert isinstance(model.head, torch.nn.Identity) and model.global_pool == "" and model.num_classes == 0
    assert isinstance(model.norm, torch.nn.Identity)
    with torch.no_grad():
        out = model.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
    assert torch.equal(out, ref)


def test_features_only_custom_indices():
    model = timm.create_model("test_lightnet", features_only=True, out_indices=(0, 2)).eval()
    assert model.feature_info.module_name() == ["blocks.0", "blocks.2"]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 160, 160))
    assert [o.shape for o in outs] == [(1, 64, 10, 10)] * 2


# ---------------------------------------------------------------------------- resolution
def test_dynamic_img_size_features_and_intermediates_224_and_320():
    """The issue's bar: features/intermediates have the right shapes at 224 and at 320 (lightnet_tiny, one model)."""
    model = timm.create_model("lightnet_tiny", dynamic_img_size=True).eval()
    feats = timm.create_model("lightnet_tiny", dynamic_img_size=True, features_only=True).eval()
    feats.model.load_state_dict(model.state_dict(), strict=False)  # the wrapper pruned the final norm and head
    for size in (224, 320):
        x = torch.randn(1, 3, size, size)
        g = size // 16
        with torch.no_grad():
            final, inters = model.forward_intermediates(x, indices=[2, 5, 8, 11])
            logits = model.forward_head(final)
            outs = feats(x)
        assert final.shape == (1, g, g, 192) and all(o.shape == (1, 192, g, g) for o in inters)
        assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
        assert [o.shape for o in outs] == [(1, 192, g, g)] * 3
        assert torch.allclose(outs[-1], inters[-1], atol=1e-5)


def test_non_square_dynamic_and_padding():
    model = timm.create_model("test_lightnet", dynamic_img_size=True).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 96, 160)).shape == (1, 6, 10, 64)
    padded = timm.create_model("test_lightnet", dynamic_img_pad=True).eval()
    with torch.no_grad():
        assert padded.forward_features(torch.randn(1, 3, 100, 70)).shape == (1, 7, 5, 64)


def test_no_size_dependent_parameters():
    """A fixed-size model at another size has exactly the parameters of the dynamic one (nothing resampled); with the
    paper's encodings the outputs agree too, and with MD-TPE mass matching / MD-LRPE interpolation (the defaults)
    once both share the nominal size, which is their reference grid."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 96)
    for match in (False, True):
        refs = dict(tpe_match_mass=match, lrpe_interpolate=match)
        dyn = timm.create_model("test_lightnet", dynamic_img_size=True, **refs).eval()
        fixed = timm.create_model("test_lightnet", img_size=96, **refs).eval()
        fixed.load_state_dict(dyn.state_dict())  # strict: same keys and shapes
        if match:
            dyn.set_input_size(img_size=96)
        with torch.no_grad():
            assert torch.allclose(fixed(x), dyn(x), atol=1e-6)


def test_set_input_size():
    model = timm.create_model("test_lightnet").eval()
    ref = timm.create_model("test_lightnet", img_size=128, dynamic_img_size=True).eval()  # same MD-TPE reference
    ref.load_state_dict(model.state_dict())
    model.set_input_size(img_size=128)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-6)
    with pytest.raises(ValueError, match=r"expected image size \(128, 128\), got \(160, 160\)"):
        model(torch.randn(1, 3, 160, 160))
    model.set_input_size(patch_size=8)
    assert model.patch_embed.proj.weight.shape[-2:] == (8, 8)
    assert all(info["reduction"] == 8 for info in model.feature_info)
    with torch.no_grad():
        feats = model.forward_features(x)
        inters = model.forward_intermediates(x, intermediates_only=True)
    assert feats.shape == (1, 16, 16, 64) and inters[0].shape == (1, 64, 16, 16)
    assert torch.isfinite(feats).all()


# ---------------------------------------------------------------------------- checkpoints
def _fresh_state(**kwargs):
    torch.manual_seed(123)
    return timm.create_model("test_lightnet", **kwargs).state_dict()


def _assert_same_weights(model, state, skip_head=False):
    own = model.state_dict()
    for k, v in state.items():
        if skip_head and k.startswith("head."):
            continue
        assert torch.equal(own[k], v), k


def test_pretrained_from_local_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = _fresh_state()
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    model = timm.create_model("test_lightnet", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    _assert_same_weights(model, state)
    # different class count: timm drops the head, the body is loaded
    model5 = timm.create_model("test_lightnet", pretrained=True, num_classes=5, pretrained_cfg_overlay=dict(file=str(path)))
    _assert_same_weights(model5, state, skip_head=True)
    assert model5.head.out_features == 5
    # one input channel: timm adapts the first conv from the 3-channel checkpoint
    gray = timm.create_model("test_lightnet", pretrained=True, in_chans=1, pretrained_cfg_overlay=dict(file=str(path)))
    assert torch.allclose(gray.patch_embed.proj.weight, state["patch_embed.proj.weight"].sum(1, keepdim=True))


def test_pretrained_from_wrapped_training_checkpoint(tmp_path):
    """A torch.save'd training checkpoint ({'model': DDP/compiled state dict, ...}) loads with weights_only."""
    state = _fresh_state(num_classes=10)
    wrapped = {"model": {f"module._orig_mod.{k}": v for k, v in state.items()}, "epoch": 3, "optimizer": {}}
    path = tmp_path / "ckpt.pth"
    torch.save(wrapped, path)
    model = timm.create_model(
        "test_lightnet", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10)
    )
    assert model.num_classes == 10
    _assert_same_weights(model, state)
    # the filter on its own prefers EMA weights, as timm does
    ema = {k: v + 1 for k, v in state.items()}
    out = checkpoint_filter_fn({"state_dict": state, "state_dict_ema": ema}, model)
    assert torch.equal(out["head.weight"], ema["head.weight"])


def _unwrap_before_timm_helper(checkpoint_dict):
    """The checkpoint unwrapping as it was before it used timm's ``clean_state_dict`` (the reference)."""
    sd = checkpoint_dict
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    out = {}
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for p in ("module.", "_orig_mod."):
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module.",
                                    "module.module.", "_orig_mod._orig_mod.module."])
@pytest.mark.parametrize("container", [None, "model", "state_dict", "state_dict_ema", "model_ema", "both"])
def test_checkpoint_unwrapping_unchanged_by_timm_clean_state_dict(prefix, container):
    """``checkpoint_filter_fn`` strips wrapper prefixes with timm's ``clean_state_dict`` and picks the EMA / state
    container itself: the same state dict as the hand-written unwrapping it replaced, for every wrapper order."""
    from lightnet.vision.lightnet_vit import _unwrap

    model = timm.create_model("test_lightnet", img_size=32, num_classes=3)
    state = {f"{prefix}{k}": v for k, v in model.state_dict().items()}
    state[f"{prefix}moduleish.key"] = torch.zeros(1)  # a key that only starts like a prefix is kept whole
    if container == "both":
        ckpt = {"state_dict": state, "state_dict_ema": {k: v + 1 for k, v in state.items()}, "epoch": 1}
    elif container is not None:
        ckpt = {container: state, "epoch": 1}
    else:
        ckpt = state
    got, want = _unwrap(ckpt), _unwrap_before_timm_helper(ckpt)
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert "moduleish.key" in got and "patch_embed.proj.weight" in got
    del got["moduleish.key"]
    out = checkpoint_filter_fn(got, model)
    assert set(out) == set(model.state_dict())


def test_pretrained_rejects_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": _fresh_state(), "extra": pickle.PicklingError("not a tensor")}, path)
    with pytest.raises(ValueError, match="(?i)weights.only") as info:  # the loader's error, with the file named
        timm.create_model("test_lightnet", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert str(path) in str(info.value) and isinstance(info.value.__cause__, (pickle.UnpicklingError, RuntimeError))


def test_checkpoint_of_another_architecture_is_named(tmp_path):
    from safetensors.torch import save_file

    bigger = tmp_path / "other_width.safetensors"
    save_file(timm.create_model("test_lightnet", embed_dim=128).state_dict(), str(bigger))
    with pytest.raises(ValueError, match=r"shape mismatches .*patch_embed\.proj\.weight: checkpoint \(128, 3, 16, 16\) vs model \(64, 3, 16, 16\)"):
        timm.create_model("test_lightnet", pretrained=True, pretrained_cfg_overlay=dict(file=str(bigger)))
    vit = tmp_path / "vit.safetensors"
    save_file(timm.create_model("test_vit").state_dict(), str(vit))
    with pytest.raises(ValueError, match=r"another architecture.*unexpected keys"):
        timm.create_model("test_lightnet", pretrained=True, pretrained_cfg_overlay=dict(file=str(vit)))
    ten = tmp_path / "ten_classes.safetensors"
    save_file(_fresh_state(num_classes=10), str(ten))
    with pytest.raises(ValueError, match=r"head has 10 classes.*num_classes=10"):
        timm.create_model("test_lightnet", pretrained=True, pretrained_cfg_overlay=dict(file=str(ten)))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        timm.create_model(
            "test_lightnet", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "missing.safetensors"))
        )


def test_checkpoint_with_other_patch_size_is_resampled():
    state = timm.create_model("test_lightnet", patch_size=8).state_dict()
    model = timm.create_model("test_lightnet")
    out = checkpoint_filter_fn(state, model)
    assert out["patch_embed.proj.weight"].shape == model.patch_embed.proj.weight.shape
    model.load_state_dict(out)


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs_have_clear_errors():
    model = timm.create_model("test_lightnet").eval()
    with pytest.raises(ValueError, match=r"expected image size \(160, 160\), got \(128, 128\).*dynamic_img_size"):
        model(torch.randn(1, 3, 128, 128))
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        model(torch.randn(1, 1, 160, 160))
    with pytest.raises(ValueError, match="rank-3"):
        model(torch.randn(3, 160, 160))
    dynamic = timm.create_model("test_lightnet", dynamic_img_size=True).eval()
    with pytest.raises(ValueError, match=r"\(100, 96\) is not divisible by the patch size \(16, 16\)"):
        dynamic(torch.randn(1, 3, 100, 96))
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("test_lightnet", global_pool="token")
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        timm.create_model("test_lightnet", num_heads=3)
    with pytest.raises(RuntimeError, match="Unknown model"):
        timm.create_model("lightnet_gigantic")
    with pytest.raises(RuntimeError, match="No pretrained weights exist for test_lightnet"):
        timm.create_model("test_lightnet", pretrained=True)  # no hub weights: nothing is downloaded


# ---------------------------------------------------------------------------- optimizer helpers, factory kwargs
def test_no_weight_decay_and_group_matcher_drive_timm_optimizers():
    from timm.optim import create_optimizer_v2

    model = timm.create_model("test_lightnet")
    params = dict(model.named_parameters())
    nwd = model.no_weight_decay()
    assert nwd and nwd <= set(params) and all(n.startswith("tpe.") for n in nwd)
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    scales = {round(g["lr_scale"], 8) for g in opt.param_groups}
    num_layers = len(model.blocks) + 2  # stem, one per block, final norm/head
    assert scales == {round(0.75 ** (num_layers - 1 - i), 8) for i in range(num_layers)}
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert not any(id(params[n]) in decayed for n in nwd)
    assert id(params["blocks.0.attn.qkv.weight"]) in decayed


def test_device_meta_and_dtype_factory_kwargs():
    ref = timm.create_model("test_lightnet")
    meta = timm.create_model("test_lightnet", device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    meta.to_empty(device="cpu")
    meta.init_non_persistent_buffers()
    assert torch.equal(meta.blocks[0].attn.lrpe.freqs, ref.blocks[0].attn.lrpe.freqs)
    bf16 = timm.create_model("test_lightnet", dtype=torch.bfloat16).eval()
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    assert bf16.blocks[0].attn.lrpe.freqs.dtype == torch.float32
    with torch.no_grad():
        out = bf16(torch.randn(1, 3, 160, 160, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_meta_device_when_linspace_ignores_the_device_context(monkeypatch):
    """transformers' ``from_pretrained`` swaps ``torch.linspace`` for a CPU-default wrapper for a while, and a process
    that first entered a ``torch.device`` context inside that window keeps the wrapper in torch's list of factory
    functions: ``linspace`` then ignores the context for good. Our constructors must still put every parameter on
    the requested device (the LM and the TPE build their schedules on the CPU on purpose)."""
    original = torch.linspace

    def cpu_default_linspace(*args, **kwargs):
        kwargs.setdefault("device", "cpu")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "linspace", cpu_default_linspace)
    meta = timm.create_model("test_lightnet", device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    from lightnet.lm import LightNetForCausalLM, LightNetLMConfig

    with torch.device("meta"):
        lm = LightNetForCausalLM(LightNetLMConfig(dim=32, depth=2, num_heads=2, drop_path=0.1))
    assert all(p.device.type == "meta" for p in lm.parameters())


def test_timm_data_config():
    cfg = timm.data.resolve_data_config(model=timm.create_model("lightnet_tiny", weight_init="skip"))
    assert cfg["input_size"] == (3, 224, 224) and cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 0.9


# ---------------------------------------------------------------------------- torchscript / fx / compile
def _scripted(module: torch.nn.Module) -> torch.jit.ScriptModule:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated; timm still checks it
        return torch.jit.script(module)


@pytest.mark.parametrize("name", MODELS)
def test_model_forward_torchscript(name):
    """timm's TorchScript check (no model of ours is excused): the scripted model (the PyTorch reference path) runs
    and equals eager within 1e-5."""
    model = _make(name).eval()
    scripted = _scripted(model)
    x = torch.randn(2, *_input_size(name, model))
    with torch.no_grad():
        out, ref = scripted(x), model(x)
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_torchscript_dynamic_size_options_and_backward():
    """A dynamic-size model scripts once and runs at several sizes (a padded one too); the scripted model
    trains (gradients on every parameter equal eager's) and survives torch.jit.save / load."""
    import io

    torch.manual_seed(0)
    model = timm.create_model("test_lightnet", dynamic_img_pad=True, num_classes=5, gate_act="silu", q_act="relu",
                              tpe_kernel_norm="mass")
    scripted = _scripted(model.eval())
    for hw in [(160, 160), (48, 80), (50, 37)]:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)
    x = torch.randn(2, 3, 64, 48)
    model(x).square().sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    scripted(x).square().sum().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-4, atol=1e-6, msg=n)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        assert torch.equal(loaded(x), scripted(x))


def test_model_forward_fx_torchscript():
    """timm's fx-then-script check: the traced feature extractor scripts and equals eager."""
    model = timm.create_model("test_lightnet").eval()
    scripted = _scripted(_fx_model(model, train=False))
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        out = torch.cat(tuple(scripted(x).values()))
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)


def _fx_model(model, train: bool):
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    tracer_kwargs = dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True
    )
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs
    )


@pytest.mark.parametrize("name", ["test_lightnet", "lightnet_tiny"])
def test_model_forward_fx(name):
    model = _make(name).eval()
    x = torch.randn(2, *_input_size(name, model))  # batch 2: a graph that indexed the batch would differ
    with torch.inference_mode():
        out = model(x)
        fx_out = torch.cat(tuple(_fx_model(model, train=False)(x).values()))
    assert torch.equal(fx_out, out)


def test_model_backward_fx():
    model = timm.create_model("test_lightnet", num_classes=42).train()
    fx = _fx_model(model, train=True)
    out = torch.cat(tuple(fx(torch.randn(2, 3, 160, 160)).values()))
    out.mean().backward()
    for n, p in fx.named_parameters():
        assert p.grad is not None, f"no gradient for {n}"
    assert out.shape == (2, 42)


def test_torch_compile_no_graph_breaks():
    """Dynamo captures the whole forward in one graph (reference backend on CPU) and matches eager."""
    model = timm.create_model("test_lightnet").eval()
    x = torch.randn(2, 3, 160, 160)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_inductor_train_step():
    torch._dynamo.reset()
    model = timm.create_model("test_lightnet", num_classes=10)
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 160, 160)
    loss = compiled(x).logsumexp(-1).mean()
    loss.backward()
    ref = model(x).logsumexp(-1).mean()
    assert math.isclose(loss.item(), ref.item(), rel_tol=1e-4)
    assert all(p.grad is not None for p in model.parameters())
