"""Fashion-MNIST mosaics: deterministic, per-pixel labels that match the drawn items, bad arguments rejected."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lightnet.train.datasets import DatasetError
from lightnet.train.mosaic import FashionMosaic, resolve_item_source


@pytest.mark.parametrize("items", ["auto", "digits"])
def test_mosaic_shapes_labels_and_determinism(items):
    ds = FashionMosaic("train", length=8, canvas_size=64, seed=3, items=items)
    x, m = ds[5]
    assert x.shape == (1, 64, 64) and x.dtype == torch.float32
    assert m.shape == (64, 64) and m.dtype == torch.int64
    assert 0 <= int(m.min()) and int(m.max()) <= 10
    x2, m2 = FashionMosaic("train", length=8, canvas_size=64, seed=3, items=items)[5]
    assert torch.equal(x, x2) and torch.equal(m, m2)
    other = FashionMosaic("train", length=8, canvas_size=64, seed=4, items=items)[5]
    assert not torch.equal(x, other[0])
    # labels sit exactly on the drawn pixels: background is black, every labelled pixel is bright
    assert (x[0][m == 0] == 0).all()
    assert (x[0][m > 0] > ds.threshold).all()
    assert len(ds.class_names) == 11 and ds.class_names[0] == "background"


def test_mosaic_train_and_test_use_different_items_and_all_classes_occur():
    tr = FashionMosaic("train", length=40, canvas_size=64, seed=0)
    te = FashionMosaic("test", length=40, canvas_size=64, seed=0)
    assert len(tr.items) != len(te.items) or not np.array_equal(tr.items[:5], te.items[:5])
    seen = set()
    for i in range(len(tr)):
        seen |= set(np.unique(tr.draw(i)[1]).tolist())
    assert seen == set(range(11))


def test_mosaic_item_scale_controls_foreground_share():
    small = FashionMosaic("train", length=10, canvas_size=128, item_scale=(0.1, 0.1), min_items=3, max_items=3)
    large = FashionMosaic("train", length=10, canvas_size=128, item_scale=(0.4, 0.4), min_items=3, max_items=3)
    fg = lambda ds: np.mean([(ds.draw(i)[1] > 0).mean() for i in range(len(ds))])  # noqa: E731
    assert fg(large) > 4 * fg(small) > 0


def test_mosaic_normalisation():
    ds = FashionMosaic("train", length=2, canvas_size=32, mean=0.5, std=0.25)
    x, m = ds[0]
    torch.testing.assert_close(x[0][m == 0], torch.full_like(x[0][m == 0], -2.0))


@pytest.mark.parametrize("kwargs,match", [
    (dict(split="val"), "split"),
    (dict(items="mnist"), "items"),
    (dict(item_scale=(0.5, 0.2)), "item_scale"),
    (dict(min_items=4, max_items=2), "min_items"),
    (dict(threshold=1.0), "threshold"),
    (dict(canvas_size=4), "canvas_size"),
])
def test_mosaic_bad_arguments(kwargs, match):
    with pytest.raises(DatasetError, match=match):
        FashionMosaic(**{"length": 2, "canvas_size": 32, **kwargs})


def test_mosaic_index_out_of_range_and_auto_fallback(tmp_path):
    with pytest.raises(IndexError):
        FashionMosaic("train", length=2, canvas_size=32).draw(2)
    assert resolve_item_source("auto", str(tmp_path)) == "digits"  # no idx files there
