"""Bad input to LightNetDiTModel and its pipeline, and untrusted files through diffusers' ``from_pretrained``. Each
case gets an error naming the problem, or a correct result; code in a file never runs."""
from __future__ import annotations

import math
import os

import pytest
import torch
from diffusers import DDIMScheduler
from safetensors.torch import save_file

from lightnet.generation import LightNetDiTModel, LightNetDiTPipeline
from lightnet.lm import LightNetForCausalLM, LightNetLMConfig

from tests._assertions import raises
from tests._untrusted_files import evil_torch_file, truncate


# ----------------------------------------------------------------------------------------------- diffusion
@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return LightNetDiTModel(sample_size=8, patch_size=2, in_channels=1, hidden_size=32, num_layers=1,
                            num_attention_heads=2, num_classes=3).eval()


def test_dit_wrong_inputs(dit):
    h = torch.randn(2, 1, 8, 8)
    with raises(ValueError, "[b, c, h, w]"):
        dit(h[0], timestep=5)
    with raises(ValueError, "3 channels", "in_channels=1"):
        dit(torch.randn(2, 3, 8, 8), timestep=5)
    with raises(ValueError, "not divisible by patch_size"):
        dit(torch.randn(2, 1, 7, 8), timestep=5)
    with raises(ValueError, "timestep is required"):
        dit(h)
    with raises(ValueError, "timestep", "[b=2]"):
        dit(h, timestep=torch.tensor([1, 2, 3]))
    with raises(ValueError, "timestep", "nan"):
        dit(h, timestep=math.nan)
    with raises(ValueError, "class label out of range", "null class"):
        dit(h, timestep=5, class_labels=torch.tensor([0, 7]))
    with raises(TypeError, "class_labels", "integer"):
        dit(h, timestep=5, class_labels=torch.tensor([0.5, 1.7]))  # was silently truncated to [0, 1]
    with raises(ValueError, "class_labels", "[b=2]"):
        dit(h, timestep=5, class_labels=torch.tensor([0, 1, 2]))
    with raises(RuntimeError, "meta"):
        dit(h.to("meta"), timestep=5)


def test_dit_correct_results_for_edge_inputs(dit):
    h = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert dit(h[:0], timestep=torch.zeros(0)).sample.shape == (0, 1, 8, 8)
        a = dit(h, timestep=5, class_labels=torch.tensor([0, 1])).sample
        b = dit(h, timestep=torch.tensor([5, 5]), class_labels=[0, 1]).sample  # scalar t / list labels broadcast
        assert torch.allclose(a, b)
        other = dit(torch.randn(2, 1, 12, 16), timestep=5).sample  # any size divisible by the patch
        assert other.shape == (2, 1, 12, 16) and torch.isfinite(other).all()
    with raises(ValueError, "not divisible"):
        LightNetDiTModel(sample_size=7, patch_size=2)
    with raises(ValueError, "unknown lightnet-dit preset"):
        LightNetDiTModel.from_preset("LightNet-DiT-Q/3")


def test_pipeline_wrong_arguments(dit):
    pipe = LightNetDiTPipeline(dit, DDIMScheduler(num_train_timesteps=20))
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=2, output_type="pt")
    with raises(ValueError, "out of range", "0..2"):
        pipe([0, 5], **kw)
    with raises(ValueError, "class_labels is empty"):
        pipe([], **kw)
    with raises(TypeError, "class_labels", "integer"):
        pipe([0.5], **kw)  # was silently truncated to class 0
    with raises(ValueError, "batch_size"):
        pipe(None, **kw)
    with raises(ValueError, "batch_size", "positive"):
        pipe(batch_size=0, **kw)
    with raises(ValueError, "output_type"):
        pipe([0], num_inference_steps=2, output_type="jpg")
    with raises(ValueError, "divisible"):
        pipe([0], height=9, **kw)
    with raises(ValueError, "latents", "(1, 1, 8, 8)"):
        pipe([0], latents=torch.randn(1, 1, 4, 4), **kw)
    for steps in (0, -1):  # 0 was a ZeroDivisionError inside the scheduler, -1 silently ran
        with raises(ValueError, "num_inference_steps"):
            pipe([0], num_inference_steps=steps, output_type="pt")
    with raises(ValueError, "class_names"):
        pipe.get_label_ids(["cat"])
    out = pipe([0, 2], **kw).images
    assert out.shape == (2, 1, 8, 8) and out.min() >= 0 and out.max() <= 1


# ----------------------------------------------------------------------------------------------- diffusers loaders
@pytest.fixture
def dit_folder(tmp_path):
    torch.manual_seed(0)
    model = LightNetDiTModel(sample_size=8, patch_size=2, in_channels=1, hidden_size=32, num_layers=1,
                             num_attention_heads=2, num_classes=3)
    model.save_pretrained(tmp_path / "dit")
    return model, tmp_path / "dit"


def test_dit_from_pretrained_truncated_random_and_pickled(dit_folder, tmp_path):
    model, folder = dit_folder
    loaded = LightNetDiTModel.from_pretrained(folder)
    h = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded(h, timestep=3).sample, model(h, timestep=3).sample)
    weights = folder / "diffusion_pytorch_model.safetensors"
    truncate(weights)
    with raises(OSError, "diffusion_pytorch_model.safetensors"):
        LightNetDiTModel.from_pretrained(folder)
    weights.write_bytes(os.urandom(1024))
    with raises(OSError, "diffusion_pytorch_model.safetensors"):
        LightNetDiTModel.from_pretrained(folder)
    weights.unlink()
    sentinel = tmp_path / "pwned"
    evil_torch_file(folder / "diffusion_pytorch_model.bin", sentinel, model.state_dict())
    with pytest.raises(OSError):
        LightNetDiTModel.from_pretrained(folder)  # diffusers falls back to the .bin, with weights_only=True
    assert not sentinel.exists(), "the pickle payload ran"


def test_dit_from_pretrained_foreign_architecture_is_an_error(dit_folder):
    """diffusers only warns and re-initialises every weight; LightNetDiTModel refuses (strict=False to allow)."""
    model, folder = dit_folder
    lm = LightNetForCausalLM(LightNetLMConfig(dim=16, depth=1, num_heads=2))
    save_file({k: v.contiguous() for k, v in lm.state_dict().items() if k != "lm_head.weight"},
              str(folder / "diffusion_pytorch_model.safetensors"))
    with raises(ValueError, "does not fit", "missing keys", "strict=false"):
        LightNetDiTModel.from_pretrained(folder)
    relaxed = LightNetDiTModel.from_pretrained(folder, strict=False)
    assert isinstance(relaxed, LightNetDiTModel)
