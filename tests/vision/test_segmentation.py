"""LightNet as the encoder of segmentation_models_pytorch's DPT (``smp.DPT("tu-lightnet_small", ...)``).

Any input size divisible by the patch and by DPT's coarsest stride (32 with 4 levels; ``dynamic_img_size=True``), output ``[B, classes, H, W]``, gradients into every
encoder parameter, clear errors for bad sizes, local encoder weights, and smp's own save/load round trip.
"""
from __future__ import annotations

import pytest
import torch

smp = pytest.importorskip("segmentation_models_pytorch")

import timm  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import lightnet  # noqa: E402,F401  registers the models
from lightnet.vision.segmentation import check_segmentation_input, create_segmentation_model, input_multiple  # noqa: E402

SMALL_DECODER = dict(decoder_intermediate_channels=(16, 32, 32, 32), decoder_fusion_channels=16)


def _dpt(encoder: str = "tu-test_lightnet", **kwargs):
    kwargs.setdefault("dynamic_img_size", True)
    return smp.DPT(encoder, encoder_weights=None, classes=3, decoder_readout="ignore", **SMALL_DECODER, **kwargs)


@pytest.mark.parametrize("size", [(64, 96), (128, 32)])
def test_dpt_test_lightnet_any_size_forward_backward(size):
    torch.manual_seed(0)
    model = _dpt()
    x = torch.randn(2, 3, *size)
    y = model(x)
    assert y.shape == (2, 3, *size)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in model.encoder.named_parameters()
               if p.requires_grad and not n.startswith(("model.head", "model.norm")) and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"encoder parameters without gradient: {missing[:5]}"


def test_dpt_lightnet_small_two_sizes():
    """The issue's own call, at two sizes divisible by the patch 16 (no prefix tokens: readout 'ignore')."""
    torch.manual_seed(0)
    model = _dpt("tu-lightnet_small")
    assert model.encoder.out_channels == [384] * 4 and model.encoder.output_stride == 16
    assert not model.encoder.has_prefix_tokens
    assert model.encoder.is_fixed_input_size is False
    for size in [(32, 64), (64, 96)]:
        x = torch.randn(1, 3, *size, requires_grad=True)
        y = model(x)
        assert y.shape == (1, 3, *size)
        y.mean().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_dpt_size_not_divisible_by_patch_raises():
    model = _dpt()
    with pytest.raises(RuntimeError, match="divisible by 16"):
        model(torch.randn(1, 3, 72, 64))
    # below smp's check, LightNet refuses it too (nothing is silently cropped)
    with pytest.raises(ValueError, match=r"not divisible by the patch size \(16, 16\)"):
        model.encoder(torch.randn(1, 3, 72, 64))


def test_dpt_fixed_size_encoder_names_dynamic_img_size():
    model = _dpt(dynamic_img_size=False)
    assert model.encoder.is_fixed_input_size is True
    assert model(torch.randn(1, 3, 160, 160)).shape == (1, 3, 160, 160)
    with pytest.raises(ValueError, match="dynamic_img_size=True"):
        model(torch.randn(1, 3, 64, 64))


def test_create_segmentation_model_lightnet_and_vit_same_decoder():
    kw = dict(embed_dim=64, depth=4, num_heads=2, patch_size=8)
    a = create_segmentation_model("test_lightnet", 5, in_chans=1, encoder_kwargs=kw, decoder_kwargs=SMALL_DECODER)
    b = create_segmentation_model("vit_small_patch16_224", 5, in_chans=1, encoder_kwargs=kw,
                                  decoder_kwargs=SMALL_DECODER)
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items() if not k.startswith("encoder.")}  # noqa: E731
    assert shapes(a) == shapes(b)  # identical decoder and head
    for m in (a, b):
        assert m.encoder.output_stride == 8
        assert isinstance(m.encoder.model.head, torch.nn.Identity)  # pruned to what the decoder reads
        assert len(m.encoder.model.blocks) == 4 and m.encoder.model.embed_dim == 64
        assert input_multiple(m) == 32
        x = torch.randn(2, 1, 64, 96)  # grid 8 x 12 at patch 8
        y = m(x)
        assert y.shape == (2, 5, 64, 96)
        y.mean().backward()
        assert all(p.grad is not None for p in m.parameters())


def test_create_segmentation_model_bad_arguments():
    with pytest.raises(ValueError, match="decoder must be one of"):
        create_segmentation_model("test_lightnet", 3, decoder="unet")
    with pytest.raises(ValueError, match="num_classes"):
        create_segmentation_model("test_lightnet", 0)
    with pytest.raises(ValueError, match="smaller than encoder_depth=4"):
        create_segmentation_model("test_lightnet", 3, encoder_kwargs={"depth": 2})
    with pytest.raises(ValueError, match="classes is set by"):
        create_segmentation_model("test_lightnet", 3, decoder_kwargs={"classes": 4})


def test_create_segmentation_model_loads_local_encoder_weights(tmp_path):
    torch.manual_seed(1)
    backbone = timm.create_model("test_lightnet", in_chans=1)
    path = tmp_path / "backbone.safetensors"
    save_file(backbone.state_dict(), str(path))
    model = create_segmentation_model("test_lightnet", 3, in_chans=1, encoder_file=str(path),
                                      decoder_kwargs=SMALL_DECODER)
    loaded = model.encoder.model.state_dict()
    for k, v in backbone.state_dict().items():
        if k.startswith(("head.", "norm.")):  # pruned: the decoder does not read them
            continue
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0)


def test_smp_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = _dpt().eval()
    model.save_pretrained(str(tmp_path / "seg"))
    again = smp.from_pretrained(str(tmp_path / "seg")).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_check_segmentation_input():
    x = torch.zeros(2, 1, 32, 48)
    check_segmentation_input(x, torch.zeros(2, 32, 48, dtype=torch.long), 16, 11)
    assert input_multiple(_dpt()) == 32
    with pytest.raises(ValueError, match=r"image size \(48, 64\) is not divisible by 32"):
        check_segmentation_input(torch.zeros(2, 1, 48, 64), None, 32, 11)
    with pytest.raises(ValueError, match="masks must be"):
        check_segmentation_input(x, torch.zeros(2, 32, 32, dtype=torch.long), 16, 11)
    with pytest.raises(ValueError, match=r"mask labels must be in \[0, 11\)"):
        check_segmentation_input(x, torch.full((2, 32, 48), 11), 16, 11)
