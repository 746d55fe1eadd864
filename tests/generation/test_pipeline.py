"""LightNetDiTPipeline and diffusers' DiTPipeline running LightNet transformers (tiny models, CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, DiTPipeline, DPMSolverMultistepScheduler
from diffusers.models import DiTTransformer2DModel

from lightnet.generation import LightNetDiTModel, LightNetDiTPipeline


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised adaLN/output layers random values so samples depend on labels and noise."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer.linear" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def pixel_model(num_classes: int = 10, **kw) -> LightNetDiTModel:
    cfg = dict(sample_size=8, patch_size=2, in_channels=1, hidden_size=32, num_layers=2, num_attention_heads=2,
               num_classes=num_classes)
    cfg.update(kw)
    torch.manual_seed(0)
    return randomised(LightNetDiTModel(**cfg))


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
        sample_size=16,
    ).eval()


def run(pipe, labels, **kw):
    kw.setdefault("num_inference_steps", 3)
    kw.setdefault("output_type", "pt")
    return pipe(labels, generator=torch.Generator().manual_seed(0), **kw).images


def test_ten_class_pixel_pipeline_with_cfg():
    pipe = LightNetDiTPipeline(pixel_model(), DDPMScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    a = run(pipe, [0, 3, 9], guidance_scale=4.0)
    assert a.shape == (3, 1, 8, 8) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, run(pipe, [0, 3, 9], guidance_scale=4.0))  # generator makes it reproducible
    assert not torch.allclose(a, run(pipe, [0, 3, 9], guidance_scale=1.0))  # guidance changes the samples
    assert not torch.allclose(a[1], run(pipe, [0, 4, 9], guidance_scale=4.0)[1])  # label changes the sample
    uncond = pipe(batch_size=2, num_inference_steps=3, output_type="pt").images
    assert uncond.shape == (2, 1, 8, 8)


def test_cfg_matches_explicit_combination():
    """One DDIM step from known noise equals the step computed from ε_∅ + s (ε_y − ε_∅) by hand."""
    model = pixel_model()
    sched = DDIMScheduler(num_train_timesteps=50)
    pipe = LightNetDiTPipeline(model, sched)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([2, 7])
    got = pipe(labels, guidance_scale=3.0, num_inference_steps=1, latents=noise, output_type="latent").images
    ref_sched = DDIMScheduler.from_config(sched.config)
    ref_sched.set_timesteps(1)
    t = ref_sched.timesteps[0]
    with torch.no_grad():
        cond = model(noise, timestep=t, class_labels=labels).sample
        uncond = model(noise, timestep=t, class_labels=torch.full((2,), 10)).sample
    want = ref_sched.step(uncond + 3.0 * (cond - uncond), t, noise).prev_sample
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output_type", ["pil", "np", "pt"])
def test_output_types(output_type):
    pipe = LightNetDiTPipeline(pixel_model(in_channels=3), DDIMScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    images = run(pipe, [1, 2], output_type=output_type)
    if output_type == "pil":
        assert len(images) == 2 and images[0].size == (8, 8) and images[0].mode == "RGB"
    elif output_type == "np":
        assert isinstance(images, np.ndarray) and images.shape == (2, 8, 8, 3)
    else:
        assert images.shape == (2, 3, 8, 8)


def test_scheduler_swap():
    pipe = LightNetDiTPipeline(pixel_model(), DDPMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    outputs = {}
    for cls in (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler):
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
        assert isinstance(pipe.scheduler, cls) and pipe.scheduler.config.num_train_timesteps == 100
        images = run(pipe, [1, 5], num_inference_steps=4)
        assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()
        outputs[cls.__name__] = images
    assert not torch.allclose(outputs["DDIMScheduler"], outputs["DPMSolverMultistepScheduler"])
    assert not torch.allclose(outputs["DDPMScheduler"], outputs["DDIMScheduler"])


@pytest.mark.parametrize("height, width", [(8, 8), (16, 12)])
def test_pipeline_resolutions(height, width):
    pipe = LightNetDiTPipeline(pixel_model(), DDIMScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    assert run(pipe, [4], height=height, width=width).shape == (1, 1, height, width)


def test_latent_pipeline_with_tiny_vae():
    model = randomised(LightNetDiTModel(sample_size=4, patch_size=2, in_channels=4, out_channels=8, hidden_size=32,
                                        num_layers=1, num_attention_heads=2, num_classes=5))
    pipe = LightNetDiTPipeline(model, DDIMScheduler(num_train_timesteps=50), vae=tiny_vae())
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae_scale_factor == 2
    images = run(pipe, [0, 4])
    assert images.shape == (2, 3, 8, 8)  # 4x4 latents decoded by a 2x VAE
    assert run(pipe, [0], height=12, width=16).shape == (1, 3, 12, 16)
    latents = run(pipe, [0], output_type="latent")
    assert latents.shape == (1, 4, 4, 4)


def test_pipeline_save_load_round_trip(tmp_path):
    model = randomised(LightNetDiTModel(sample_size=4, patch_size=2, in_channels=4, hidden_size=32, num_layers=1,
                                        num_attention_heads=2, num_classes=3))
    pipe = LightNetDiTPipeline(model, DDIMScheduler(num_train_timesteps=50), vae=tiny_vae(), class_names=["a", "b", "c"])
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path)
    loaded = LightNetDiTPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.transformer, LightNetDiTModel) and isinstance(loaded.scheduler, DDIMScheduler)
    assert loaded.get_label_ids(["c", "a"]) == [2, 0]
    assert torch.equal(run(pipe, [0, 2]), run(loaded, [0, 2]))


def test_pixel_pipeline_save_load_without_vae(tmp_path):
    pipe = LightNetDiTPipeline(pixel_model(), DDPMScheduler(num_train_timesteps=20))
    pipe.save_pretrained(tmp_path)
    loaded = LightNetDiTPipeline.from_pretrained(tmp_path)
    assert loaded.vae is None
    for p1, p2 in zip(pipe.transformer.parameters(), loaded.transformer.parameters()):
        assert torch.equal(p1, p2)


def test_stock_dit_pipeline_runs_lightnet_with_1000_classes():
    """diffusers' DiTPipeline (null class 1000 hard-coded) runs our model unchanged and agrees with ours (DDIM)."""
    model = randomised(LightNetDiTModel(sample_size=4, patch_size=2, in_channels=4, out_channels=8, hidden_size=32,
                                        num_layers=1, num_attention_heads=2, num_classes=1000))
    vae = tiny_vae()
    stock = DiTPipeline(transformer=model, vae=vae, scheduler=DDIMScheduler(num_train_timesteps=50))
    stock.set_progress_bar_config(disable=True)
    ours = LightNetDiTPipeline(model, DDIMScheduler(num_train_timesteps=50), vae=vae)
    ours.set_progress_bar_config(disable=True)
    kw = dict(guidance_scale=2.5, num_inference_steps=3, output_type="np")
    a = stock([1, 999], generator=torch.Generator().manual_seed(0), **kw).images
    b = ours([1, 999], generator=torch.Generator().manual_seed(0), **kw).images
    assert a.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_pipeline_samples_diffusers_dit_transformer():
    """The baseline of the quality check: our pipeline also drives diffusers' DiTTransformer2DModel (any classes)."""
    torch.manual_seed(0)
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1, num_layers=1,
                                sample_size=8, patch_size=2, num_embeds_ada_norm=10, norm_num_groups=1).eval()
    pipe = LightNetDiTPipeline(dit, DDIMScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.num_classes == 10
    assert run(pipe, [0, 9], guidance_scale=2.0).shape == (2, 1, 8, 8)


def test_pipeline_errors():
    latent_model = LightNetDiTModel(sample_size=4, patch_size=2, in_channels=4, hidden_size=32, num_layers=1,
                                    num_attention_heads=2, num_classes=5)
    with pytest.raises(ValueError, match="no VAE"):
        LightNetDiTPipeline(latent_model, DDIMScheduler())([0], num_inference_steps=1)
    wrong_vae = AutoencoderKL(latent_channels=3, block_out_channels=(8,), norm_num_groups=4)
    with pytest.raises(ValueError, match="latent channels"):
        LightNetDiTPipeline(latent_model, DDIMScheduler(), vae=wrong_vae)([0], num_inference_steps=1)
    pipe = LightNetDiTPipeline(pixel_model(), DDIMScheduler())
    with pytest.raises(ValueError, match="out of range"):
        pipe([3, 10], num_inference_steps=1)
    with pytest.raises(ValueError, match="divisible by 2"):
        pipe([3], height=9, num_inference_steps=1)
    with pytest.raises(ValueError, match="output_type"):
        pipe([3], output_type="jpeg", num_inference_steps=1)
    with pytest.raises(ValueError, match="batch_size"):
        pipe(None, num_inference_steps=1)
    with pytest.raises(ValueError, match="without class_names"):
        pipe.get_label_ids("cat")


def test_saved_folder_loads_through_diffusion_pipeline(tmp_path):
    """``DiffusionPipeline.from_pretrained(folder)``: diffusers' custom-code error names the folder's two-line
    loader file (which says to use ``LightNetDiTPipeline.from_pretrained``); with ``trust_remote_code=True`` it loads
    the same pipeline. Run in a child process so diffusers' module cache (HF_HOME) lives in tmp_path."""
    import json
    import subprocess
    import sys
    import textwrap

    from tests._subprocess_env import subprocess_env

    pipe = LightNetDiTPipeline(pixel_model(num_classes=3), DDPMScheduler(num_train_timesteps=20))
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "pipe")
    assert json.loads((tmp_path / "pipe" / "model_index.json").read_text())["_class_name"] == [
        "lightnet_dit_pipeline", "LightNetDiTPipeline"]
    assert "LightNetDiTPipeline.from_pretrained(folder)" in (tmp_path / "pipe" / "lightnet_dit_pipeline.py").read_text()
    loaded = LightNetDiTPipeline.from_pretrained(tmp_path / "pipe")  # no trust_remote_code needed
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(run(pipe, [0, 2]), run(loaded, [0, 2]))
    code = textwrap.dedent(f"""
        import torch
        from diffusers import DiffusionPipeline
        from lightnet.generation import LightNetDiTPipeline
        folder = {str(tmp_path / "pipe")!r}
        try:
            DiffusionPipeline.from_pretrained(folder)
            raise SystemExit("loaded without trust_remote_code")
        except ValueError as e:
            assert "lightnet_dit_pipeline.py" in str(e) and "trust_remote_code" in str(e), e
        pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
        assert type(pipe) is LightNetDiTPipeline, type(pipe)
        pipe.set_progress_bar_config(disable=True)
        torch.save(pipe([0, 2], num_inference_steps=3, output_type="pt",
                        generator=torch.Generator().manual_seed(0)).images, {str(tmp_path / "images.pt")!r})
    """)
    env = dict(subprocess_env(), HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "images.pt", weights_only=True), run(pipe, [0, 2]))
