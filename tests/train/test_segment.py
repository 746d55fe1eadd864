"""``lightnet train-seg``: a tiny run writes its logs, curves, overlays, checkpoint and beats the all-background
baseline; the ViT encoder runs through the same recipe; bad sizes fail before a run folder is made."""
from __future__ import annotations

import csv
import json

import pytest
import torch

pytest.importorskip("segmentation_models_pytorch")

from lightnet.cli import main as cli_main  # noqa: E402
from lightnet.train.config import build_config  # noqa: E402
from lightnet.train.segment import SegTrainConfig, train_seg  # noqa: E402
from lightnet.train.seg_eval import confusion_matrix, iou_from_confusion, segmentation_scores  # noqa: E402

TINY = ["data.canvas_size=64", "data.train_size=96", "data.eval_size=16", "data.batch_size=8", "run.epochs=2",
        "run.progress=false", "run.tensorboard=false", "grid.samples=3", "data.items=auto"]


def _cfg(tmp_path, *extra):
    return build_config(SegTrainConfig, "seg_fashion_mosaic", [*TINY, f"run.run_dir={tmp_path / 'run'}", *extra])


def test_train_seg_tiny_run_learns_and_writes_outputs(tmp_path):
    result = train_seg(_cfg(tmp_path, "optim.lr=3e-3"))
    run = tmp_path / "run"
    for name in ("steps.csv", "epochs.csv", "curves.png", "overlays.png", "model.safetensors", "per_class_iou.csv",
                 "config.yaml", "final_metrics.json"):
        assert (run / name).is_file(), name
    assert list((run / "overlays").glob("step_*.png")) and list((run / "checkpoints").iterdir())
    m = json.loads((run / "final_metrics.json").read_text())
    assert result.state.step == 24
    assert m["eval_miou"] > m["baseline_miou"] + 1.0, m  # above predicting background everywhere
    assert m["eval_pixel_acc"] > 50
    rows = list(csv.DictReader(open(run / "per_class_iou.csv")))
    assert [r["name"] for r in rows][0] == "background" and len(rows) == 11
    epochs = list(csv.DictReader(open(run / "epochs.csv")))
    assert len(epochs) == 2 and "eval_miou" in epochs[0]


def test_train_seg_vit_encoder_same_recipe(tmp_path):
    cfg = _cfg(tmp_path, "encoder=vit_small_patch16_224", "run.max_steps=2", "run.epochs=1")
    train_seg(cfg)
    m = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert m["encoder"] == "vit_small_patch16_224" and m["step"] == 2
    assert 0 <= m["eval_miou"] <= 100


def test_train_seg_cli_bad_canvas_size(tmp_path, capsys):
    run_dir = tmp_path / "run"
    rc = cli_main(["train-seg", *TINY, "data.canvas_size=80", f"run.run_dir={run_dir}"])
    assert rc == 2
    assert "data.canvas_size=80 is not divisible by 32" in capsys.readouterr().err
    assert not run_dir.exists()


def test_train_seg_cli_unknown_encoder(tmp_path, capsys):
    rc = cli_main(["train-seg", *TINY, "encoder=not_a_model", f"run.run_dir={tmp_path / 'run'}"])
    assert rc == 2
    assert "not_a_model" in capsys.readouterr().err


def test_miou_conventions():
    truth = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]])
    pred = torch.tensor([[0, 0, 1, 0], [0, 0, 2, 2]])
    conf = confusion_matrix(pred, truth, 4)
    iou = iou_from_confusion(conf)
    torch.testing.assert_close(iou[:3], torch.tensor([4 / 5, 1 / 2, 1.0], dtype=torch.float64))
    assert torch.isnan(iou[3])  # class 3 absent from truth and prediction: left out of the mean
    s = segmentation_scores(conf)
    assert s["eval_miou"] == pytest.approx(100 * (0.8 + 0.5 + 1.0) / 3)
    assert s["eval_miou_fg"] == pytest.approx(100 * 0.75)
    assert s["eval_pixel_acc"] == pytest.approx(100 * 7 / 8)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(pred[:1], truth, 4)
