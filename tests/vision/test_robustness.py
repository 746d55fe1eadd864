"""Bad input to the timm LightNet models and untrusted pretrained files (truncated / random / foreign /
code-carrying) through timm's pretrained path. Each case gets an error naming the problem, or a correct result; code
in a file never runs (each payload would create a sentinel file)."""
from __future__ import annotations

import math
import os

import pytest
import timm
import torch
from safetensors.torch import save_file

import lightnet  # noqa: F401  (registers the timm models)

from tests._assertions import raises
from tests._untrusted_files import evil_torch_file, truncate


# ----------------------------------------------------------------------------------------------- vision (timm)
@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("test_lightnet", img_size=32, num_classes=3).eval()


def test_vision_wrong_shapes(vit):
    x = torch.randn(2, 3, 32, 32)
    with raises(ValueError, "[b, c, h, w]", "rank-3"):
        vit(x[0])
    with raises(ValueError, "3 input channels", "got 1"):
        vit(torch.randn(2, 1, 32, 32))
    with raises(ValueError, "image size", "(48, 48)", "dynamic_img_size"):
        vit(torch.randn(2, 3, 48, 48))


@pytest.mark.parametrize("dtype, word", [(torch.int64, "long"), (torch.uint8, "unsigned char"),
                                         (torch.float64, "double"), (torch.float16, "half")])
def test_vision_wrong_dtypes_name_the_dtype(vit, dtype, word):
    with raises(RuntimeError, word):
        vit(torch.randn(2, 3, 32, 32).to(dtype))


def test_vision_device_mix(vit):
    with raises(RuntimeError, "meta"):
        vit(torch.randn(2, 3, 32, 32, device="meta"))


def test_vision_empty_batch_and_nan_propagation(vit):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert vit(x[:0]).shape == (0, 3)
        out = vit(torch.cat([x[:1], x[1:] * math.nan]))
    assert torch.isfinite(out[0]).all() and torch.isnan(out[1]).all()  # NaN stays in its own sample
    with torch.no_grad():
        assert torch.allclose(out[0], vit(x[:1])[0], atol=1e-5)


def test_vision_create_model_errors():
    with raises(TypeError, "bogus_kw"):
        timm.create_model("test_lightnet", bogus_kw=3)
    with raises(ValueError, "not divisible by num_heads"):
        timm.create_model("test_lightnet", num_heads=3)
    with raises(ValueError, "num_classes"):
        timm.create_model("test_lightnet", num_classes=-1)
    with raises(RuntimeError, "no pretrained weights"):
        timm.create_model("test_lightnet", pretrained=True)  # never a download
    m = timm.create_model("test_lightnet", img_size=32)
    with raises(ValueError, "out of range"):
        m.forward_intermediates(torch.randn(1, 3, 32, 32), indices=[7])



def tiny_vit(**kw):
    return timm.create_model("test_lightnet", img_size=32, num_classes=3, **kw)


# ----------------------------------------------------------------------------------------------- timm pretrained file
def test_timm_pretrained_file_refuses_code(tmp_path):
    sentinel = tmp_path / "pwned"
    evil = evil_torch_file(tmp_path / "evil.pth", sentinel, tiny_vit().state_dict())
    with raises(Exception, "weights_only"):
        tiny_vit(pretrained=True, pretrained_cfg_overlay=dict(file=str(evil)))
    assert not sentinel.exists(), "the pickle payload ran"


def test_timm_pretrained_file_truncated_random_and_foreign(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vit().state_dict().items()}, str(good))
    truncate(good)
    with raises(ValueError, str(good), "truncated") as info:
        tiny_vit(pretrained=True, pretrained_cfg_overlay=dict(file=str(good)))
    assert "deserializ" in str(info.value).lower() or "metadata" in str(info.value).lower()
    rnd = tmp_path / "random.pth"
    rnd.write_bytes(os.urandom(4096))
    with raises(ValueError, str(rnd), "cannot load the pretrained weights file"):
        tiny_vit(pretrained=True, pretrained_cfg_overlay=dict(file=str(rnd)))
    not_safetensors = tmp_path / "text.safetensors"
    not_safetensors.write_text("this is not a checkpoint")
    with raises(ValueError, str(not_safetensors)):
        tiny_vit(pretrained=True, pretrained_cfg_overlay=dict(file=str(not_safetensors)))
    # a checkpoint of another architecture (a torchvision-style CNN state dict): the filter names the keys
    foreign = tmp_path / "cnn.safetensors"
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Linear(8, 3))
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, str(foreign))
    with raises(ValueError, "does not match this lightnet model", "missing keys", "unexpected keys"):
        tiny_vit(pretrained=True, pretrained_cfg_overlay=dict(file=str(foreign)))
    # another size of the same family: shape mismatches are named
    bigger = tmp_path / "bigger.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vit(embed_dim=96, num_heads=2).state_dict().items()}, str(bigger))
    with raises(ValueError, "shape mismatches"):
        tiny_vit(pretrained=True, pretrained_cfg_overlay=dict(file=str(bigger)))


def test_timm_pretrained_file_with_other_num_classes_warns_about_the_head(tmp_path, caplog):
    torch.manual_seed(0)
    source = tiny_vit()  # 3 classes
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    with caplog.at_level("WARNING", logger="lightnet.vision.lightnet_vit"):
        fresh = timm.create_model("test_lightnet", img_size=32, num_classes=5, pretrained=True,
                                  pretrained_cfg_overlay=dict(file=str(path)))
    assert fresh.head.weight.shape == (5, 64)
    text = caplog.text
    assert "re-initialised" in text and "head.weight" in text and "num_classes=3" in text
    assert "pretrained_cfg_overlay=dict(file=..., num_classes=3)" in text
    # following the advice keeps the head, and says nothing
    caplog.clear()
    with caplog.at_level("WARNING", logger="lightnet.vision.lightnet_vit"):
        kept = timm.create_model("test_lightnet", img_size=32, num_classes=3, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(path), num_classes=3))
    assert torch.equal(kept.head.weight, source.head.weight) and "re-initialised" not in caplog.text


def test_img_size_not_divisible_by_the_patch_raises_or_pads():
    with raises(ValueError, "(18, 18) is not divisible by the patch size (4, 4)", "dynamic_img_pad"):
        timm.create_model("test_lightnet", img_size=18, patch_size=4)
    with raises(ValueError, "not divisible"):
        timm.create_model("test_lightnet", img_size=16, patch_size=4).set_input_size(img_size=18)
    with raises(ValueError, "(18, 18) is not divisible"):
        timm.create_model("test_lightnet", img_size=16, patch_size=4, dynamic_img_size=True)(torch.randn(1, 3, 18, 18))
    # dynamic_img_pad: the image is zero-padded to 20 x 20 (a 5 x 5 grid), no pixel dropped: the last row matters
    torch.manual_seed(0)
    padded = timm.create_model("test_lightnet", img_size=18, patch_size=4, dynamic_img_pad=True).eval()
    x = torch.randn(1, 3, 18, 18)
    assert padded.forward_features(x).shape == (1, 5, 5, 64)
    y = x.clone()
    y[..., -1, :] += 1.0
    assert not torch.allclose(padded(x), padded(y))
