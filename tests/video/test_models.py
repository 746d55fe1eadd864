"""LightNetVideo: shapes at any clip size, bad input, save/load, inflation from an image model, gradients."""
from __future__ import annotations

import pytest
import torch

import lightnet  # noqa: F401  (registers the models with timm)
from lightnet.video import LightNetVideo, create_video_model, inflate_patch_kernel

TINY = dict(img_size=16, num_frames=4, patch_size=8, tubelet_size=2, in_chans=1, embed_dim=32, depth=2, num_heads=2,
            mlp_ratio=2.0, num_classes=4, attn_backend="torch")


def _model(**kw) -> LightNetVideo:
    torch.manual_seed(0)
    return LightNetVideo(**{**TINY, **kw}).eval()


@pytest.mark.parametrize("size", [(4, 16, 16), (2, 8, 24), (6, 32, 16)])
def test_shapes_at_any_clip_size(size):
    m = _model()
    T, H, W = size
    x = torch.randn(2, 1, T, H, W)
    feats = m.forward_features(x)
    assert feats.shape == (2, T // 2, H // 8, W // 8, 32)
    assert m.forward_head(feats).shape == (2, 4)
    assert m.forward_head(feats, pre_logits=True).shape == (2, 32)
    assert m(x).shape == (2, 4)


def test_intermediates_formats_and_final():
    m = _model()
    x = torch.randn(1, 1, 4, 16, 24)
    final, inter = m.forward_intermediates(x)
    assert len(inter) == 2 and inter[0].shape == (1, 32, 2, 2, 3)
    torch.testing.assert_close(final, m.forward_features(x))
    (nthwc,) = m.forward_intermediates(x, indices=[-1], output_fmt="NTHWC", intermediates_only=True)
    torch.testing.assert_close(nthwc.permute(0, 4, 1, 2, 3), inter[-1])
    (nlc,) = m.forward_intermediates(x, indices=1, output_fmt="NLC", norm=True, intermediates_only=True)
    torch.testing.assert_close(nlc, final.reshape(1, -1, 32))
    with pytest.raises(ValueError, match="output_fmt"):
        m.forward_intermediates(x, output_fmt="NCHW")
    with pytest.raises(ValueError, match="out of range for 2 blocks"):
        m.forward_intermediates(x, indices=[5])


def test_time_order_matters():
    """Reversing the clip in time does not just reverse the features: the positional encodings (MD-TPE with
    different forward / backward kernels) let the model see the order of frames."""
    m = _model(use_tpe=True)
    with torch.no_grad():
        for p in m.tpe.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    x = torch.randn(1, 1, 8, 16, 16)
    f = m.forward_features(x)
    f_rev = m.forward_features(x.flip(2))
    assert not torch.allclose(f, f_rev.flip(1), atol=1e-4)


@pytest.mark.parametrize("shape, match", [
    ((1, 1, 16, 16), "expected a clip batch"),
    ((1, 3, 4, 16, 16), "expected 1 input channels"),
    ((1, 1, 5, 16, 16), r"\(5, 16, 16\) is not divisible by the tubelet \(t, p, p\) = \(2, 8, 8\)"),
    ((1, 1, 4, 16, 20), r"\(4, 16, 20\) is not divisible"),
])
def test_bad_input_raises(shape, match):
    with pytest.raises(ValueError, match=match):
        _model()(torch.randn(*shape))


def test_bad_construction_raises():
    with pytest.raises(ValueError, match="not divisible by the tubelet"):
        LightNetVideo(**{**TINY, "num_frames": 5})
    with pytest.raises(ValueError, match="global_pool"):
        LightNetVideo(**{**TINY, "global_pool": "cls"})
    with pytest.raises(TypeError, match="unexpected keyword"):
        LightNetVideo(**TINY, use_lrpee=True)
    with pytest.raises(ValueError, match="did you mean 'lightnet_video_small'"):
        create_video_model("lightnet_video_smal")


def test_named_sizes_and_timm_registry():
    import timm

    assert {"lightnet_video_tiny", "lightnet_video_small", "lightnet_video_base"} <= set(timm.list_models("lightnet_video*"))
    m = timm.create_model("lightnet_video_tiny", pretrained=False, num_classes=7, depth=1, attn_backend="torch")
    assert isinstance(m, LightNetVideo) and m.embed_dim == 192 and m.num_classes == 7
    for name in timm.list_models("*lightnet_video*"):  # every video model has a timm pretrained config
        cfg = timm.get_pretrained_cfg(name)
        assert cfg is not None and cfg.architecture == name and len(cfg.input_size) == 4
    with pytest.raises(ValueError, match="from_pretrained"):
        timm.create_model("lightnet_video_tiny", pretrained=True)
    assert create_video_model("lightnet_video_base", depth=1).embed_dim == 768


def test_save_load_round_trip(tmp_path):
    m = _model(gate_rank=8, lrpe_base=500.0)
    x = torch.randn(2, 1, 4, 16, 16)
    m.save_pretrained(tmp_path / "v")
    assert (tmp_path / "v" / "model.safetensors").is_file() and (tmp_path / "v" / "config.json").is_file()
    loaded = LightNetVideo.from_pretrained(tmp_path / "v").eval()
    assert loaded.model_args == m.model_args
    torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)
    new_head = LightNetVideo.from_pretrained(tmp_path / "v", num_classes=9).eval()
    assert new_head(x).shape == (2, 9)
    torch.testing.assert_close(new_head.forward_features(x), m.forward_features(x), rtol=0, atol=0)


def test_load_rejects_other_size_and_broken_files(tmp_path):
    _model().save_pretrained(tmp_path / "v")
    other = _model(embed_dim=64)
    other.save_pretrained(tmp_path / "w")
    (tmp_path / "v" / "model.safetensors").write_bytes((tmp_path / "w" / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="shape mismatches"):
        LightNetVideo.from_pretrained(tmp_path / "v")
    (tmp_path / "v" / "model.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="cannot read"):
        LightNetVideo.from_pretrained(tmp_path / "v")
    with pytest.raises(FileNotFoundError):
        LightNetVideo.from_pretrained(tmp_path / "missing")


def _image_model():
    import timm

    torch.manual_seed(1)
    return timm.create_model("lightnet_tiny", pretrained=False, img_size=16, patch_size=8, in_chans=1, embed_dim=32,
                             depth=2, num_heads=2, mlp_ratio=2.0, num_classes=4, attn_backend="torch").eval()


@pytest.mark.parametrize("inflate", ["average", "center"])
def test_inflated_patch_embedding_matches_image_on_static_clip(inflate):
    """A clip constant over time: every tubelet embeds as its frame does through the image patch embedding."""
    image = _image_model()
    video = LightNetVideo.from_image_checkpoint(image, inflate=inflate, **TINY).eval()
    frame = torch.randn(2, 1, 16, 16)
    clip = frame[:, :, None].expand(2, 1, 4, 16, 16)
    got = video.patch_embed(clip)  # [B, T', H', W', D]
    want = image.patch_embed(frame)  # [B, H', W', D]
    for t in range(got.shape[1]):
        torch.testing.assert_close(got[:, t], want, rtol=1e-5, atol=1e-5)


def test_inflation_copies_blocks_and_maps_tpe_axes(tmp_path):
    image = _image_model()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in image.state_dict().items()}, str(tmp_path / "img.safetensors"))
    video = LightNetVideo.from_image_checkpoint(tmp_path / "img.safetensors", load_head=True, **TINY)
    img_sd, vid_sd = image.state_dict(), video.state_dict()
    for k, v in img_sd.items():
        if k.startswith("blocks.") or k.startswith("norm.") or k.startswith("head."):
            torch.testing.assert_close(vid_sd[k], v, rtol=0, atol=0)
    torch.testing.assert_close(vid_sd["tpe.axes.1.fwd_weight"], img_sd["tpe.axes.0.fwd_weight"], rtol=0, atol=0)
    torch.testing.assert_close(vid_sd["tpe.axes.2.bwd_weight"], img_sd["tpe.axes.1.bwd_weight"], rtol=0, atol=0)
    assert torch.all(vid_sd["tpe.axes.0.w0"] == 0)  # time axis: fresh init
    kernel = inflate_patch_kernel(img_sd["patch_embed.proj.weight"], 2, "center")
    assert torch.all(kernel[:, :, 0] == 0) and torch.equal(kernel[:, :, 1], img_sd["patch_embed.proj.weight"])


def test_inflation_rejects_other_width():
    with pytest.raises(ValueError, match="does not fit"):
        LightNetVideo.from_image_checkpoint(_image_model(), **{**TINY, "embed_dim": 64})
    with pytest.raises(ValueError, match="inflate must be one of"):
        LightNetVideo.from_image_checkpoint(_image_model(), inflate="middle", **TINY)


def test_gradients_reach_every_parameter():
    m = _model().train()
    x = torch.randn(2, 1, 4, 16, 16)
    m(x).logsumexp(-1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, missing


def test_grad_checkpointing_same_gradients():
    x = torch.randn(2, 1, 4, 16, 16)
    grads = []
    for ckpt in (False, True):
        m = _model().train()
        m.set_grad_checkpointing(ckpt)
        m(x).sum().backward()
        grads.append(m.patch_embed.proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
