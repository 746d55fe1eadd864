"""train-dit on Moving Fashion-MNIST clips: a tiny video run, its saved LightNetVideoDiTPipeline, sampling, bad configs."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from diffusers import DDPMScheduler
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from lightnet.generation import LightNetDiTModel, LightNetVideoDiTPipeline
from lightnet.generation.pipeline import saved_pipeline_class_name
from lightnet.train.config import ConfigError, build_config
from lightnet.train.dit import DiTTrainConfig, UnitRangeClips, build_dit_model, train_dit, train_main
from lightnet.train.moving_fashion_mnist import MovingFashionMNIST
from lightnet.train.sample import load_pipeline, sample_main

TINY_CLIPS = [
    "model.kwargs.patch_size=2", "model.kwargs.temporal_patch_size=2", "model.kwargs.hidden_size=32",
    "model.kwargs.num_layers=2", "model.kwargs.num_attention_heads=2", "data.img_size=8", "data.moving.canvas=8",
    "data.moving.item_size=4", "data.moving.num_frames=4", "data.moving.max_speed=2", "data.moving.train_clips=64",
    "data.moving.eval_clips=32", "data.batch_size=16", "data.eval_samples=32", "optim.lr=3e-3", "run.epochs=8",
    "run.max_steps=30", "run.log_every=5", "run.tensorboard=false", "run.plot=false", "run.progress=false",
    "sample.every=20", "sample.per_class=1", "sample.max_classes=2", "sample.steps=2", "ema.decay=0.9",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("dit_video") / "run"
    cfg = build_config(DiTTrainConfig, "dit_moving_fashion_mnist", TINY_CLIPS + [f"run.run_dir={run_dir}"])
    train_dit(cfg)
    return run_dir


def test_clips_are_scaled_like_images_and_labelled_by_class():
    cfg = build_config(DiTTrainConfig, "dit_moving_fashion_mnist", TINY_CLIPS)
    clips = MovingFashionMNIST(cfg.data.moving, "train")
    x, y = UnitRangeClips(clips)[3]
    frames, labels = clips.clip_and_labels(3)
    assert x.shape == (1, 4, 8, 8) and y == labels["class"]
    assert torch.allclose(x, torch.from_numpy(frames).float().permute(1, 0, 2, 3) / 127.5 - 1)
    assert float(x.min()) == -1.0 and float(x.max()) <= 1.0


def test_clip_training_lowers_the_loss_and_saves_a_video_pipeline(clip_run):
    summary = json.loads((clip_run / "final_metrics.json").read_text())
    assert summary["step"] == 30
    assert summary["initial_eval_loss"] == pytest.approx(1.0, abs=0.1)  # adaLN-Zero: the first prediction is 0
    assert summary["eval_loss"] < 0.8 * summary["initial_eval_loss"]
    assert saved_pipeline_class_name(clip_run / "pipeline") == "LightNetVideoDiTPipeline"
    pipe = load_pipeline(clip_run / "pipeline")
    assert isinstance(pipe, LightNetVideoDiTPipeline) and pipe.vae is None and pipe.num_classes == 10
    cfg = pipe.transformer.config
    assert (cfg.num_frames, cfg.temporal_patch_size, cfg.sample_size, cfg.in_channels) == (4, 2, 8, 1)
    # the training grid: one row of 4 frames per clip (2 classes x 1 clip), 2 px padding
    grid = Image.open(clip_run / "samples" / "step_00000020.png")
    assert grid.size == (2 + 4 * 10, 2 + 2 * 10)
    assert (clip_run / "samples" / "final.png").is_file()


def test_sample_cli_writes_gifs_and_a_frame_grid(clip_run, tmp_path, capsys):
    out = tmp_path / "clips"
    rc = sample_main(["--pipeline", str(clip_run / "pipeline"), "--labels", "0", "1", "7", "--frames", "6",
                      "--steps", "2", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    gifs = sorted((out / "clips").glob("*.gif"))
    assert [g.name for g in gifs] == ["00000_class0.gif", "00001_class1.gif", "00002_class7.gif"]
    assert Image.open(gifs[0]).n_frames == 6
    assert Image.open(out / "grid.png").size == (2 + 6 * 10, 2 + 3 * 10)
    assert sample_main(["--pipeline", str(clip_run / "pipeline"), "--labels", "0", "--frames", "3", "--steps", "1",
                        "--out", str(tmp_path / "bad"), "--device", "cpu"]) == 2
    assert "temporal patch size 2" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, message", [
    (["data.moving.num_frames=5"], "not divisible by model.kwargs.temporal_patch_size=2"),
    (["model.arch=dit", "model.preset=null"], "video LightNetDiTModel only"),
    (["model.kwargs.num_frames=6"], "differs from the clip length"),
    (["data.img_size=12"], "differs from data.moving.canvas"),
    (["vae.path=/nonexistent/vae"], "pixel space only"),
    (["data.hflip=true"], "data.hflip"),
    (["data.in_chans=3"], "1 channel"),
])
def test_bad_clip_configs_are_refused(overrides, message, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert train_main(["-c", "dit_moving_fashion_mnist", *TINY_CLIPS, *overrides, f"run.output_dir={runs}"]) == 2
    assert message in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())


def test_image_data_refuses_video_model_kwargs():
    cfg = build_config(DiTTrainConfig, "dit_digits", ["model.kwargs.temporal_patch_size=2"])
    with pytest.raises(ConfigError, match="video model"):
        build_dit_model(cfg.model, 1, 10, 32)


# --------------------------------------------------------------------------- sampling with a near-oracle denoiser
def _bright_square_clip(frames: int = 8, size: int = 32) -> torch.Tensor:
    """A clean clip ``[1, 1, T, H, W]`` in [−1, 1]: a 10 px square (0.8) moving on a black (−1) canvas."""
    x = torch.full((1, 1, frames, size, size), -1.0)
    for f in range(frames):
        x[..., f, 4 + 2 * f:14 + 2 * f, 6 + f:16 + f] = 0.8
    return x


class _NearOracle(LightNetDiTModel):
    """A video ``LightNetDiTModel`` (for its config) whose forward knows the clip's shape, infers its mean brightness
    from ``x_t`` Bayes-optimally (prior ``N(mean, prior_std²)``; at lower noise the brightness is read from the many
    pixels of ``x_t``, as a trained video model does) and adds the per-pixel ε error ``sigma`` of a short training
    run. Output ``[B, 1, T, H, W]``."""

    @classmethod
    def of(cls, x0: torch.Tensor, alphas_cumprod: torch.Tensor, sigma: float = 0.05,
           prior_std: float = 0.05) -> "_NearOracle":
        model = cls(sample_size=x0.shape[-1], patch_size=4, in_channels=1, hidden_size=8, num_layers=1,
                    num_attention_heads=1, num_classes=10, num_frames=x0.shape[2], temporal_patch_size=2,
                    attn_backend="torch")
        model.x0, model.ac, model.sigma, model.prior_std = x0, alphas_cumprod, sigma, prior_std
        return model.eval()

    def forward(self, hidden_states, timestep=None, class_labels=None, return_dict=True):
        x = hidden_states
        t = torch.as_tensor(timestep).reshape(-1).expand(x.shape[0])
        a = self.ac[t].view(-1, 1, 1, 1, 1)
        mean, s2, n = self.x0.mean(), self.prior_std ** 2, x[0].numel()
        gain = a.sqrt() * s2 / (a * s2 + (1 - a) / n)  # posterior mean of the brightness given mean(x_t)
        brightness = mean + gain * (x.mean((1, 2, 3, 4), keepdim=True) - a.sqrt() * mean)
        eps = (x - a.sqrt() * (self.x0 - mean + brightness)) / (1 - a).sqrt()
        eps = eps + self.sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(int(t[0])))
        return Transformer2DModelOutput(sample=eps)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_saved_video_scheduler_turns_a_near_oracle_into_the_clean_clip(scheduler):
    """The scheduler train-dit saves with a video pipeline (and the ones ``lightnet sample --scheduler`` derives from
    it) must not clip x0 pixel by pixel: with ε errors of 0.05, clipping the noisy high-noise x0 estimates greys the
    black canvas (mean −0.82 → −0.58 with DDIM); a trained video model, which reads the brightness from ``x_t``, then
    samples noise."""
    from lightnet.train.dit import NoiseConfig, _make_pipeline
    from lightnet.train.sample import set_scheduler

    x0 = _bright_square_clip()
    noise = NoiseConfig()
    model = _NearOracle.of(x0, DDPMScheduler(num_train_timesteps=noise.num_train_timesteps).alphas_cumprod)
    pipe = _make_pipeline(model, noise, None, list("abcdefghij"))
    set_scheduler(pipe, scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe([3, 5], guidance_scale=1.0, num_inference_steps=50, generator=torch.Generator().manual_seed(0),
               output_type="latent").frames
    assert out.shape == (2, *x0.shape[1:])
    assert float(out.mean()) == pytest.approx(float(x0.mean()), abs=0.06)  # clipped: ddim -0.58, ddpm -0.73
    assert float((out - x0).pow(2).mean()) < 0.005  # clipped: ddim 0.061, ddpm 0.0097
