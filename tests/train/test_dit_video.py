"""train-dit on Moving Fashion-MNIST clips: a tiny video run, its saved LightNetVideoDiTPipeline, sampling, bad configs."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from lightnet.generation import LightNetVideoDiTPipeline
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
