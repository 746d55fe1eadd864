"""Moving Fashion-MNIST clips (determinism, labels, bad settings) and the packaged recipe through the shared trainer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lightnet.train.classify import ClassifyConfig, train, train_main
from lightnet.train.config import build_config
from lightnet.train.datasets import FASHION_MNIST_DIR, DatasetError
from lightnet.train.moving_fashion_mnist import DIRECTIONS, MovingClipConfig, MovingFashionMNIST, _bounce

SMALL = MovingClipConfig(num_frames=4, canvas=16, item_size=8, max_speed=2, train_clips=64, eval_clips=32)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _centroid(frame: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(frame > 0)
    w = frame[ys, xs].astype(np.float64)
    return np.array([(ys * w).sum(), (xs * w).sum()]) / w.sum()


@pytest.mark.parametrize("items", ["fashion_mnist", "digits"])
def test_clips_are_deterministic_and_labelled(items):
    cfg = MovingClipConfig(**{**SMALL.__dict__, "items": items})
    if items == "fashion_mnist" and not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist not installed (the digits case runs the same code)")
    a, b = MovingFashionMNIST(cfg, "train", seed=3), MovingFashionMNIST(cfg, "train", seed=3)
    other_seed, test = MovingFashionMNIST(cfg, "train", seed=4), MovingFashionMNIST(cfg, "test", seed=3)
    assert a.clip(5).shape == (4, 1, 16, 16) and a.clip(5).dtype == np.uint8
    assert np.array_equal(a.clip(5), b.clip(5))
    assert not np.array_equal(a.clip(5), other_seed.clip(5)) and not np.array_equal(a.clip(5), test.clip(5))
    x, y = a[5]
    assert x.shape == (1, 4, 16, 16) and x.dtype == torch.float32 and 0 <= y < 4
    steps = list(DIRECTIONS.values())
    for i in range(len(a)):
        frames, labels = a.clip_and_labels(i)
        assert 0 <= labels["class"] < 10
        assert labels["class"] == a.item_labels[labels["item"]]
        # one item, fully on the canvas: frame 0 holds exactly its pixels
        assert int(frames[0, 0].astype(np.int64).sum()) == int(a.images[labels["item"]].astype(np.int64).sum())
        move = _centroid(frames[1, 0]) - _centroid(frames[0, 0])  # first step of the only item
        dy, dx = steps[labels["direction"]]
        assert np.sign(np.round(move[0], 6)) == dy and np.sign(np.round(move[1], 6)) == dx, (i, move, labels)


def test_bounce_reflects_inside_the_span():
    assert _bounce(3, 2, 5, 6).tolist() == [3, 5, 3, 1, 1, 3]
    assert _bounce(0, -1, 4, 3).tolist() == [0, 1, 2]
    assert _bounce(0, 3, 0, 3).tolist() == [0, 0, 0]


@pytest.mark.parametrize("field, value, message", [
    ("label", "speed", "label must be one of"), ("item_size", 40, "exceeds the canvas"),
    ("max_speed", 0, "max_speed 0 < min_speed"), ("num_frames", 0, "num_frames must be >= 1"),
])
def test_bad_settings_raise(field, value, message):
    with pytest.raises(DatasetError, match=message):
        MovingFashionMNIST(MovingClipConfig(**{**SMALL.__dict__, field: value}))


TINY_VIDEO = [
    "data.moving.canvas=16", "data.moving.item_size=8", "data.moving.num_frames=4", "data.moving.max_speed=2",
    "model_kwargs={patch_size: 4, tubelet_size: 2, embed_dim: 32, depth: 2, num_heads: 2, mlp_ratio: 2.0, "
    "attn_backend: torch}",
    "data.batch_size=32", "sched.warmup_epochs=0", "run.progress=false", "run.tensorboard=false", "run.threads=1",
]


def test_recipe_trains_through_the_shared_trainer(tmp_path: Path):
    run_dir = tmp_path / "run"
    rc = train_main(["-c", "moving_fashion_mnist", *TINY_VIDEO, "run.epochs=1", "data.moving.train_clips=64",
                     "data.moving.eval_clips=32", f"run.run_dir={run_dir}", "data.moving.label=class"])
    assert rc == 0
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["eval_samples"] == 32 and final["step"] == 2
    for name in ("config.yaml", "curves.png", "model.safetensors", "epochs.csv"):
        assert (run_dir / name).is_file(), name


def test_recipe_bad_label_is_a_clear_error(tmp_path: Path, capsys):
    assert train_main(["-c", "moving_fashion_mnist", "data.moving.label=speed", f"run.run_dir={tmp_path / 'r'}"]) == 2
    assert "label must be one of" in capsys.readouterr().err


@pytest.mark.slow
def test_direction_label_beats_chance(tmp_path: Path):
    """128 steps (about 10 s on one CPU thread): the time label (chance 25%) is learned."""
    cfg = build_config(ClassifyConfig, "moving_fashion_mnist", [
        *TINY_VIDEO, "run.epochs=4", "data.moving.train_clips=1024", "data.moving.eval_clips=256",
        f"run.run_dir={tmp_path / 'run'}", "run.plot=false"])
    result = train(cfg)
    assert result.metrics["eval_top1"] > 50.0, result.metrics


def test_faster_label_is_the_class_of_the_faster_of_two_items():
    cfg = MovingClipConfig(**{**SMALL.__dict__, "label": "faster", "num_items": 2, "canvas": 24, "max_speed": 1,
                              "items": "digits"})
    ds = MovingFashionMNIST(cfg, "train", seed=0)
    assert ds.num_classes == 10 and len(ds) == 64
    seen = set()
    for i in range(16):
        frames, labels = ds.clip_and_labels(i)
        assert frames.shape == (4, 1, 24, 24) and 0 <= labels["faster"] < 10
        seen.add(labels["faster"])
        assert ds[i][1] == labels["faster"]
    assert len(seen) > 3  # not a constant label
    with pytest.raises(DatasetError, match="needs num_items 2"):
        MovingFashionMNIST(MovingClipConfig(**{**SMALL.__dict__, "label": "faster"}))
