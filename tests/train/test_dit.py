"""train-dit, sample and fid: objective, EMA, FID math, and short CPU runs on the built-in digits."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler

from lightnet.generation import LightNetDiTModel, LightNetDiTPipeline
from lightnet.generation.losses import DiffusionLoss
from lightnet.train.config import ConfigError, build_config
from lightnet.train.dit import EMA, DiTTrainConfig, build_dit_model, train_dit, train_main
from lightnet.train.fid import fid_from_features, fid_main, frechet_distance
from lightnet.train.sample import sample_main

TINY_RUN = [
    "model.preset=null", "model.kwargs.patch_size=2", "model.kwargs.hidden_size=32", "model.kwargs.num_layers=2",
    "model.kwargs.num_attention_heads=2", "data.img_size=8", "data.batch_size=32", "data.eval_samples=64",
    "optim.lr=3e-3", "sched.warmup_epochs=0", "run.epochs=1", "run.max_steps=30", "run.log_every=5",
    "run.tensorboard=false", "run.plot=false", "run.progress=false", "sample.every=20", "sample.per_class=2",
    "sample.max_classes=3", "sample.steps=2", "ema.decay=0.9",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- FID math
def test_frechet_distance_identical_and_shifted():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 16))
    assert abs(fid_from_features(feats, feats)) < 1e-8
    shift = np.zeros(16)
    shift[3] = 2.0
    # a pure mean shift adds exactly |shift|^2 (covariances identical)
    assert fid_from_features(feats, feats + shift) == pytest.approx(4.0, rel=1e-9)
    other = rng.normal(size=(500, 16)) * 1.5 + 0.5
    assert fid_from_features(feats, other) > fid_from_features(feats, rng.normal(size=(500, 16))) > 0


def test_frechet_distance_matches_scipy_and_closed_form():
    from scipy import linalg

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = a @ a.T + 0.1 * np.eye(8), b @ b.T + 0.1 * np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * covmean))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)
    d1, d2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)  # diagonal: sum (sqrt d1 - sqrt d2)^2
    assert frechet_distance(np.zeros(5), np.diag(d1), np.zeros(5), np.diag(d2)) == pytest.approx(
        float(((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum()), rel=1e-9)
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --------------------------------------------------------------------------- objective and EMA
def test_vb_is_zero_for_exact_noise_and_posterior_variance():
    sched = DDPMScheduler(num_train_timesteps=100)
    loss = DiffusionLoss(sched, learn_sigma=True)
    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([1, 10, 50, 99])
    x_t = sched.add_noise(x0, noise, t)
    v = -torch.ones_like(x0)  # v = -1 selects the posterior variance (the true one)
    vb = loss.vb_terms(x0, x_t, t, noise, v)
    assert torch.allclose(vb, torch.zeros(4), atol=1e-4)
    worse = loss.vb_terms(x0, x_t, t, noise + 0.5, v)
    assert (worse > vb + 1e-3).all()
    total, metrics = loss(torch.cat([noise, v], 1), x0, x_t, noise, t)
    assert metrics["mse"] == 0.0 and total.item() == pytest.approx(metrics["vb"], abs=1e-6)
    with pytest.raises(ValueError, match="learn_sigma"):
        loss(noise, x0, x_t, noise, t)


def test_ema_tracks_weights():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.5, warmup=False)
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.model.weight.clone()
    ema.update(model, 1)
    assert torch.allclose(ema.model.weight, 0.5 * before + 0.5 * model.weight)
    assert EMA(model, 0.9999, warmup=True).decay_at(1) == pytest.approx(2 / 11)


def test_build_baseline_dit_model():
    cfg = build_config(DiTTrainConfig, overrides=["model.arch=dit", "model.preset=DiT-S/8"])
    model = build_dit_model(cfg.model, in_channels=1, num_classes=10, sample_size=32)
    assert type(model).__name__ == "DiTTransformer2DModel"
    assert model.config.num_layers == 12 and model.config.num_embeds_ada_norm == 10 and model.config.patch_size == 8


def _dit_outputs(model: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, generator=g)
    return model(x, timestep=torch.tensor([1, 400, 999]), class_labels=torch.tensor([0, 4, 10])).sample


def test_dit_paper_init_makes_the_baseline_start_like_lightnet_dit():
    """``model.init=dit_paper`` gives diffusers' DiT the DiT paper's initialisation (the one LightNet-DiT is built
    with): zero output, zero adaLN modulation, N(0, 0.02) class embeddings. The native init predicts non-zero noise
    from N(0, 1) class embeddings."""
    small = ["model.arch=dit", "model.preset=null", "model.kwargs.num_layers=2", "model.kwargs.num_attention_heads=2",
             "model.kwargs.attention_head_dim=16", "model.kwargs.patch_size=2"]
    torch.manual_seed(0)
    native = build_dit_model(build_config(DiTTrainConfig, overrides=small).model, 1, 10, 8)
    torch.manual_seed(0)
    paper = build_dit_model(build_config(DiTTrainConfig, overrides=small + ["model.init=dit_paper"]).model, 1, 10, 8)
    table = lambda m: m.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight.detach()  # noqa: E731
    assert 0.7 < float(table(native).std()) < 1.3
    assert 0.01 < float(table(paper).std()) < 0.03
    assert float(_dit_outputs(native).abs().max()) > 0.1
    assert float(_dit_outputs(paper).abs().max()) == 0.0
    for block in paper.transformer_blocks:
        assert not block.norm1.linear.weight.any() and not block.norm1.linear.bias.any()
    # model.init=lightnet: the same scheme with LightNet-DiT's N(0, 1) class tables (a same-init comparison)
    torch.manual_seed(0)
    ln = build_dit_model(build_config(DiTTrainConfig, overrides=small + ["model.init=lightnet"]).model, 1, 10, 8)
    assert 0.8 < float(table(ln).std()) < 1.2 and float(_dit_outputs(ln).abs().max()) == 0.0
    # still trains: after one step the zero-initialised output layer moves
    opt = torch.optim.SGD(paper.parameters(), lr=0.1)
    _dit_outputs(paper).sub(1).pow(2).mean().backward()
    opt.step()
    assert float(_dit_outputs(paper).abs().max()) > 0


def test_old_model_kwargs_name_is_renamed(caplog):
    """A saved run config (``--resume``) of an older version with ``model.kwargs.attention_backend``."""
    import logging

    small = ["model.preset=null", "model.kwargs.hidden_size=32", "model.kwargs.num_layers=1",
             "model.kwargs.num_attention_heads=2", "model.kwargs.patch_size=2", "model.kwargs.attention_backend=torch"]
    with caplog.at_level(logging.INFO, logger="lightnet"):
        model = build_dit_model(build_config(DiTTrainConfig, overrides=small).model, 1, 10, 8)
    assert model.config.attn_backend == "torch" and "attention_backend" not in model.config
    assert any("'attention_backend'" in r.getMessage() for r in caplog.records)


def test_model_init_and_class_embed_std_are_checked():
    with pytest.raises(ConfigError, match="model.init"):
        build_dit_model(build_config(DiTTrainConfig, overrides=["model.init=xavier"]).model, 1, 10, 8)
    with pytest.raises(ValueError, match="class_embed_init_std"):
        LightNetDiTModel(sample_size=8, patch_size=2, in_channels=1, hidden_size=16, num_layers=1,
                         num_attention_heads=2, num_classes=10, class_embed_init_std=0.0)
    torch.manual_seed(0)
    wide = LightNetDiTModel(sample_size=8, patch_size=2, in_channels=1, hidden_size=64, num_layers=1,
                            num_attention_heads=2, num_classes=10)  # default: nn.Embedding's N(0, 1)
    assert 0.8 < float(wide.embedding.class_embedder.embedding_table.weight.detach().std()) < 1.2
    tiny = ["model.preset=null", "model.kwargs.hidden_size=64", "model.kwargs.num_layers=1",
            "model.kwargs.num_attention_heads=2", "model.kwargs.patch_size=2"]
    paper = build_dit_model(build_config(DiTTrainConfig, overrides=tiny + ["model.init=dit_paper"]).model, 1, 10, 8)
    assert paper.config.class_embed_init_std == 0.02
    same = build_dit_model(build_config(DiTTrainConfig, overrides=tiny + ["model.init=lightnet"]).model, 1, 10, 8)
    assert same.config.class_embed_init_std == 1.0
    assert 0.01 < float(paper.embedding.class_embedder.embedding_table.weight.detach().std()) < 0.03
    assert float(_dit_outputs(paper).abs().max()) == 0.0  # adaLN-Zero: the model starts predicting zero


# --------------------------------------------------------------------------- CPU runs
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("dit") / "run"
    cfg = build_config(DiTTrainConfig, "dit_digits", TINY_RUN + [f"run.run_dir={run_dir}"])
    result = train_dit(cfg)
    return run_dir, result


def test_short_training_lowers_the_loss(trained_run):
    run_dir, result = trained_run
    summary = json.loads((run_dir / "final_metrics.json").read_text())
    assert summary["step"] == 30
    assert summary["initial_eval_loss"] == pytest.approx(1.0, abs=0.1)  # adaLN-Zero: the first prediction is 0
    assert summary["eval_loss"] < 0.8 * summary["initial_eval_loss"]
    assert (run_dir / "steps.csv").is_file()
    assert (run_dir / "samples" / "step_00000020.png").is_file() and (run_dir / "samples" / "final.png").is_file()
    ckpt = run_dir / "checkpoints" / "step_00000030"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "ema.safetensors").is_file()


def test_saved_pipeline_uses_ema_weights(trained_run):
    from safetensors.torch import load_file

    run_dir, _ = trained_run
    pipe = LightNetDiTPipeline.from_pretrained(run_dir / "pipeline")
    assert pipe.vae is None and pipe.num_classes == 10 and pipe.config.class_names[0] == "0"
    ema = load_file(str(run_dir / "checkpoints" / "step_00000030" / "ema.safetensors"))
    for name, value in pipe.transformer.state_dict().items():
        assert torch.equal(value, ema[name]), name
    images = pipe([0, 1], num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 8, 8, 1)


def test_resume_continues_from_checkpoint(trained_run, tmp_path):
    run_dir, _ = trained_run
    rc = train_main(["--resume", str(run_dir), "run.max_steps=34", "run.epochs=2", "sample.every=0"])
    assert rc == 0
    summary = json.loads((run_dir / "final_metrics.json").read_text())
    assert summary["step"] == 34 and "initial_eval_loss" not in summary


def test_sample_cli(trained_run, tmp_path):
    run_dir, _ = trained_run
    out = tmp_path / "samples"
    rc = sample_main(["--pipeline", str(run_dir / "pipeline"), "--per-class", "2", "--steps", "2", "--out", str(out),
                      "--scheduler", "dpm", "--height", "16", "--width", "8"])
    assert rc == 0
    assert (out / "grid.png").is_file()
    files = sorted((out / "images").glob("*.png"))
    assert len(files) == 20 and files[-1].name == "00019_class9.png"
    from PIL import Image

    assert Image.open(files[0]).size == (8, 16)
    assert sample_main(["--pipeline", str(tmp_path / "missing")]) == 2


def test_fid_cli(trained_run, tmp_path):
    run_dir, _ = trained_run
    out = tmp_path / "fid.json"
    rc = fid_main(["--pipeline", str(run_dir / "pipeline"), "--dataset", "digits", "--img-size", "8",
                   "--num-samples", "60", "--classifier-epochs", "2", "--steps", "2", "--classifier",
                   str(tmp_path / "clf"), "--json", str(out), "--autocast", "bf16"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["sampling"]["autocast"] == "bf16"
    assert res["classifier_test_acc"] > 0.5  # the feature net really learned the digits
    fid = res["pipelines"][0]["fid_proxy"]
    assert math.isfinite(fid) and fid > res["real_floor"] >= 0  # an undertrained generator is worse than real data
    assert (tmp_path / "clf" / "classifier.safetensors").is_file()


def test_learned_sigma_latent_training_with_tiny_vae(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(8, 16),
                        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, sample_size=8)
    vae.save_pretrained(tmp_path / "vae")
    run_dir = tmp_path / "run"
    rc = train_main(["-c", "dit_digits", *TINY_RUN, "run.max_steps=3", "sample.every=0", "model.learn_sigma=true",
                     f"vae.path={tmp_path / 'vae'}", "vae.required=true", f"run.run_dir={run_dir}"])
    assert rc == 0
    pipe = LightNetDiTPipeline.from_pretrained(run_dir / "pipeline")
    assert pipe.vae is not None and pipe.transformer.config.in_channels == 4
    assert pipe.transformer.config.out_channels == 8 and pipe.transformer.config.sample_size == 4
    assert pipe([1], num_inference_steps=2, output_type="pt").images.shape == (1, 1, 8, 8)


def test_train_dit_errors(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert train_main(["-c", "dit_imagenet256", f"data.root={tmp_path / 'data'}",  # empty ImageFolder
                       f"run.output_dir={tmp_path / 'runs'}"]) == 2
    assert train_main(["-c", "dit_digits", "vae.required=true", f"run.output_dir={tmp_path}"]) == 2
    assert "vae.path" in capsys.readouterr().err
    assert train_main(["-c", "dit_digits", "model.preset=LightNet-DiT-M/2", f"run.output_dir={tmp_path}"]) == 2
    assert "unknown model.preset" in capsys.readouterr().err
    assert train_main(["-c", "dit_digits", "model.presett=x"]) == 2
    # a bad model argument is refused before any run folder is made
    runs = tmp_path / "bad_kwargs_runs"
    assert train_main(["-c", "dit_digits", "model.kwargs.foo=1", f"run.output_dir={runs}"]) == 2
    assert "foo" in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())


def test_train_dit_on_imagefolder_rgb(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2)):
        for cls in ("cat", "dog"):
            folder = tmp_path / "data" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    run_dir = tmp_path / "run"
    rc = train_main(["-c", "dit_digits", *TINY_RUN, "data.dataset=imagefolder", f"data.root={tmp_path / 'data'}",
                     "data.eval_split=val", "data.batch_size=8", "data.eval_samples=4", "run.max_steps=2",
                     "sample.every=0", f"run.run_dir={run_dir}"])
    assert rc == 0
    pipe = LightNetDiTPipeline.from_pretrained(run_dir / "pipeline")
    assert pipe.config.class_names == ["cat", "dog"] and pipe.num_classes == 2
    assert pipe.transformer.config.in_channels == 3
    assert pipe([1], num_inference_steps=2, output_type="np").images.shape == (1, 8, 8, 3)


def test_sampling_under_bf16_autocast_stays_close_to_fp32(trained_run):
    from lightnet.train.sample import autocast_dtype, load_pipeline, sample_images

    run_dir, _ = trained_run
    pipe = load_pipeline(run_dir / "pipeline")
    labels = list(range(10))
    full = sample_images(pipe, labels, batch_size=10, seed=3, guidance_scale=1.5, num_inference_steps=3, progress=False)
    half = sample_images(pipe, labels, batch_size=10, seed=3, guidance_scale=1.5, num_inference_steps=3, progress=False,
                         autocast="bf16")
    assert full.shape == half.shape == (10, *full.shape[1:]) and full.dtype == half.dtype == torch.float32
    diff = (full - half).abs().mean().item()
    assert 0 < diff < 0.05, f"bf16 autocast sampling differs from fp32 by {diff} (0 means autocast did nothing)"
    assert autocast_dtype("no") is None and autocast_dtype("bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown autocast dtype"):
        autocast_dtype("int8")


def test_compiled_dit_training_saves_a_plain_pipeline(tmp_path):
    """run.compile=true for train-dit: the step is compiled, the EMA, checkpoint and pipeline get plain weights."""
    from torch._dynamo.utils import counters

    run_dir = tmp_path / "run"
    cfg = build_config(DiTTrainConfig, "dit_digits", TINY_RUN + [f"run.run_dir={run_dir}", "run.max_steps=4",
                                                                "sample.every=0", "run.compile=true"])
    torch._dynamo.reset()
    counters.clear()
    train_dit(cfg)
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert graphs >= 1
    summary = json.loads((run_dir / "final_metrics.json").read_text())
    assert summary["step"] == 4 and math.isfinite(summary["eval_loss"])
    pipe = LightNetDiTPipeline.from_pretrained(run_dir / "pipeline")
    assert not any("_orig_mod" in k for k in pipe.transformer.state_dict())


@pytest.mark.parametrize("command", ["sample", "fid"])
def test_sample_and_fid_help_is_plain_text_with_defaults(command, capsys):
    from lightnet.cli import main as cli_main

    with pytest.raises(SystemExit) as info:
        cli_main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and "*proxy*" not in out and ":class:" not in out
    assert "(default: 50)" in out and "(default: ddim)" in out  # --steps, --scheduler
    assert out.count("(default:") >= 6
