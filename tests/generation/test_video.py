"""Video LightNetDiTModel (clips [B, C, T, H, W]), its pipeline's frames, `lightnet sample` for clips, and a tiny
training run on Moving Fashion-MNIST clips."""
from __future__ import annotations

import warnings

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from lightnet.generation import LightNetDiTModel, LightNetDiTPipeline, LightNetVideoDiTPipeline

TINY = dict(sample_size=16, patch_size=4, in_channels=1, hidden_size=32, num_layers=2, num_attention_heads=2,
            num_classes=10, num_frames=4, temporal_patch_size=2, attn_backend="torch")


def _model(**kw) -> LightNetDiTModel:
    torch.manual_seed(0)
    m = LightNetDiTModel(**{**TINY, **kw})
    with torch.no_grad():  # leave adaLN-Zero so that outputs depend on the input and the conditioning
        for p in m.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.05)
    return m.eval()


@pytest.mark.parametrize("size", [(4, 16, 16), (2, 8, 12), (6, 4, 8)])
def test_any_clip_size(size):
    m = _model()
    x = torch.randn(2, 1, *size)
    out = m(x, timestep=torch.tensor([3, 50]), class_labels=torch.tensor([1, 10])).sample
    assert out.shape == x.shape


def test_learned_sigma_channels():
    m = _model(out_channels=2)
    assert m(torch.randn(1, 1, 4, 8, 8), timestep=1).sample.shape == (1, 2, 4, 8, 8)


def test_unpatchify_inverts_the_token_layout():
    """Tokens cut from a clip in the model's (t, h, w) x (k, p, q, C) layout come back as the clip."""
    m = _model()
    B, C, T, H, W, k, p = 2, 1, 4, 8, 12, 2, 4
    x = torch.randn(B, C, T, H, W)
    tokens = x.reshape(B, C, T // k, k, H // p, p, W // p, p).permute(0, 2, 4, 6, 3, 5, 7, 1)
    tokens = tokens.reshape(B, -1, k * p * p * C)
    torch.testing.assert_close(m.unpatchify(tokens, (T // k, H // p, W // p)), x, rtol=0, atol=0)


def test_conditioning_and_frames_matter():
    m = _model()
    x = torch.randn(1, 1, 4, 8, 8)
    a = m(x, timestep=10, class_labels=torch.tensor([1])).sample
    assert not torch.allclose(a, m(x, timestep=10, class_labels=torch.tensor([2])).sample)
    assert not torch.allclose(a, m(x, timestep=900, class_labels=torch.tensor([1])).sample)
    # one scan over (T, H, W): changing the last frame changes the output at the first frame
    x2 = x.clone()
    x2[:, :, -1] += 1.0
    b = m(x2, timestep=10, class_labels=torch.tensor([1])).sample
    assert not torch.allclose(a[:, :, 0], b[:, :, 0])


@pytest.mark.parametrize("shape, match", [
    ((1, 1, 8, 8), r"video model \(num_frames=4\); hidden_states must be \[B, C, T, H, W\]"),
    ((1, 3, 4, 8, 8), "3 channels but the model expects in_channels=1"),
    ((1, 1, 3, 8, 8), r"\(3, 8, 8\) is not divisible by the tubelet \(t, p, p\) = \(2, 4, 4\)"),
    ((1, 1, 4, 8, 6), r"\(4, 8, 6\) is not divisible"),
])
def test_bad_clip_raises(shape, match):
    with pytest.raises(ValueError, match=match):
        _model()(torch.randn(*shape), timestep=1)


def test_bad_config_and_image_model_given_a_clip():
    with pytest.raises(ValueError, match="num_frames 5 must be a positive multiple of temporal_patch_size 2"):
        LightNetDiTModel(**{**TINY, "num_frames": 5})
    with pytest.raises(ValueError, match="temporal_patch_size needs a video model"):
        LightNetDiTModel(**{**TINY, "num_frames": None})
    image = LightNetDiTModel(**{**TINY, "num_frames": None, "temporal_patch_size": 1})
    with pytest.raises(ValueError, match="create the model with num_frames=T for video"):
        image(torch.randn(1, 1, 4, 8, 8), timestep=1)


def test_image_model_keeps_its_modules_and_keys():
    image = LightNetDiTModel(**{**TINY, "num_frames": None, "temporal_patch_size": 1})
    video = LightNetDiTModel(**TINY)
    assert isinstance(image.patch_embed.proj, torch.nn.Conv2d) and image.tpe.num_axes == 2
    assert image.transformer_blocks[0].attn.num_axes == 2 and video.transformer_blocks[0].attn.num_axes == 3
    extra = set(video.state_dict()) - set(image.state_dict())
    assert extra == {f"tpe.axes.2.{n}" for n in ("w0", "fwd_logit", "fwd_weight", "bwd_logit", "bwd_weight")}
    assert set(image.state_dict()) <= set(video.state_dict())  # same names; 3-D stem / output shapes, a third TPE axis


def test_save_load_round_trip(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "t")
    loaded = LightNetDiTModel.from_pretrained(tmp_path / "t").eval()
    assert loaded.config.num_frames == 4 and loaded.config.temporal_patch_size == 2
    x = torch.randn(1, 1, 4, 8, 8)
    torch.testing.assert_close(loaded(x, timestep=5, class_labels=3).sample, m(x, timestep=5, class_labels=3).sample,
                               rtol=1e-5, atol=1e-6)


def _pipe() -> LightNetVideoDiTPipeline:
    pipe = LightNetVideoDiTPipeline(_model(), DDIMScheduler(num_train_timesteps=100, clip_sample=False),
                                    class_names=list("abcdefghij"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_warns_about_a_clipping_scheduler():
    pipe = _pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe([1], num_inference_steps=1)  # clip_sample=False: no warning
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=True)
    with pytest.warns(UserWarning, match="clip_sample=True"):
        pipe([1], num_inference_steps=1)


def test_pipeline_frames_in_every_output_type():
    pipe = _pipe()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    np_frames = pipe([1, 2], num_inference_steps=2, generator=g(), output_type="np").frames
    assert np_frames.shape == (2, 4, 16, 16, 1) and 0 <= np_frames.min() and np_frames.max() <= 1
    pt = pipe([1, 2], num_inference_steps=2, generator=g(), output_type="pt").frames
    assert pt.shape == (2, 4, 1, 16, 16)
    torch.testing.assert_close(pt.permute(0, 1, 3, 4, 2), torch.from_numpy(np_frames), rtol=1e-5, atol=1e-5)
    pil = pipe([1, 2], num_inference_steps=2, generator=g(), output_type="pil").frames
    assert len(pil) == 2 and len(pil[0]) == 4 and pil[0][0].size == (16, 16)
    latent = pipe([1], num_inference_steps=2, num_frames=6, height=8, width=12, output_type="latent").frames
    assert latent.shape == (1, 1, 6, 8, 12)


def test_pipeline_bad_input_and_wrong_pipeline(tmp_path):
    pipe = _pipe()
    with pytest.raises(ValueError, match="num_frames must be a positive multiple of the temporal patch size 2"):
        pipe([1], num_inference_steps=1, num_frames=3)
    with pytest.raises(ValueError, match="output_type"):
        pipe([1], num_inference_steps=1, output_type="gif")
    with pytest.raises(ValueError, match="use LightNetVideoDiTPipeline|sample clips with LightNetVideoDiTPipeline"):
        LightNetDiTPipeline(_model(), DDIMScheduler(num_train_timesteps=100))([1], num_inference_steps=1)
    image = LightNetDiTModel(**{**TINY, "num_frames": None, "temporal_patch_size": 1})
    with pytest.raises(ValueError, match="is an image model"):
        LightNetVideoDiTPipeline(image, DDIMScheduler(num_train_timesteps=100))([1], num_inference_steps=1)


def test_saved_video_pipeline_records_its_class(tmp_path):
    """save_pretrained records LightNetVideoDiTPipeline (not the image pipeline) in model_index.json and the loader
    file, so both lightnet's loaders and the custom-pipeline file give back the video pipeline."""
    import json

    from lightnet.train.sample import load_pipeline

    pipe = _pipe()
    pipe.save_pretrained(tmp_path / "pipe")
    assert json.loads((tmp_path / "pipe" / "model_index.json").read_text())["_class_name"] == [
        "lightnet_dit_pipeline", "LightNetVideoDiTPipeline"]
    assert "from lightnet.generation import LightNetVideoDiTPipeline" in (
        tmp_path / "pipe" / "lightnet_dit_pipeline.py").read_text()
    assert type(LightNetVideoDiTPipeline.from_pretrained(tmp_path / "pipe")) is LightNetVideoDiTPipeline
    loaded = load_pipeline(tmp_path / "pipe")
    assert type(loaded) is LightNetVideoDiTPipeline
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(loaded([1], num_inference_steps=2, generator=g(), output_type="pt").frames,
                       pipe([1], num_inference_steps=2, generator=g(), output_type="pt").frames)


def test_sample_cli_writes_gifs_and_frame_grid(tmp_path, capsys):
    from PIL import Image

    from lightnet.train.sample import sample_main

    _pipe().save_pretrained(tmp_path / "pipe")
    rc = sample_main(["--pipeline", str(tmp_path / "pipe"), "--labels", "1", "4", "--steps", "2", "--frames", "6",
                      "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    gifs = sorted((tmp_path / "out" / "clips").glob("*.gif"))
    assert [g.name for g in gifs] == ["00000_class1.gif", "00001_class4.gif"]
    with Image.open(gifs[0]) as gif:
        assert gif.n_frames == 6
    with Image.open(tmp_path / "out" / "grid.png") as grid:  # 2 rows of 6 frames of 16 px, padding 2
        assert grid.size == (6 * 18 + 2, 2 * 18 + 2)


def test_tiny_training_on_moving_fashion_mnist_clips_lowers_the_loss():
    """40 Adam steps of epsilon prediction on 16 clips (4 frames of 16 px): the denoising loss falls."""
    from lightnet.train.moving_fashion_mnist import MovingClipConfig, MovingFashionMNIST

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = MovingFashionMNIST(MovingClipConfig(num_frames=4, canvas=16, item_size=8, max_speed=2, train_clips=16,
                                                 label="class"), "train", seed=0)
        clips = torch.stack([torch.from_numpy(ds.clip(i)).float() / 127.5 - 1 for i in range(16)])  # [N, T, 1, H, W]
        clips = clips.permute(0, 2, 1, 3, 4)  # [N, 1, T, H, W]
        labels = torch.tensor([ds.clip_and_labels(i)[1]["class"] for i in range(16)])
        torch.manual_seed(0)
        model = LightNetDiTModel(**{**TINY, "class_dropout_prob": 0.0}).train()
        sched = DDPMScheduler(num_train_timesteps=100)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(clips.shape, generator=g)
        t = torch.randint(0, 100, (16,), generator=g)
        noisy = sched.add_noise(clips, noise, t)
        losses = []
        for _ in range(40):
            loss = torch.nn.functional.mse_loss(model(noisy, timestep=t, class_labels=labels).sample, noise)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(n)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
