"""Built-in datasets (digits, Fashion-MNIST, ImageFolder), idx parsing, resumable sampling."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightnet.train.data import EpochBatchSampler, SeededDataset, make_loader
from lightnet.train.datasets import FASHION_MNIST_DIR, DatasetError, build_image_dataset, read_idx


def test_digits_split_is_deterministic_and_disjoint():
    train, info = build_image_dataset("digits", "train")
    test, _ = build_image_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert info.num_classes == 10 and info.in_chans == 1 and info.native_size == 8
    img, label = train[0]
    assert isinstance(img, Image.Image) and img.size == (8, 8) and img.mode == "L" and 0 <= label < 10
    # same split on a second build; train and test images are different samples
    train2, _ = build_image_dataset("digits", "train")
    assert np.array_equal(train.images, train2.images) and np.array_equal(train.labels, train2.labels)
    tr = {a.tobytes() for a in train.images}
    overlap = sum(a.tobytes() in tr for a in test.images)
    assert overlap < 5  # a handful of digits are pixel-identical duplicates in the source data
    assert set(np.unique(test.labels)) == set(range(10))  # stratified


def test_digits_with_timm_transform():
    from timm.data import create_transform

    _, info = build_image_dataset("digits", "train")
    tf = create_transform((1, 16, 16), is_training=True, scale=(0.7, 1.0), hflip=0.0, color_jitter=0.0,
                          mean=info.mean, std=info.std)
    ds, _ = build_image_dataset("digits", "train", transform=tf)
    x, y = ds[3]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert abs(float(x.mean())) < 3


def _write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_read_idx_roundtrip_and_truncation(tmp_path: Path):
    arr = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    _write_idx(tmp_path / "a-idx3-ubyte.gz", arr)
    _write_idx(tmp_path / "b-idx3-ubyte", arr, gz=False)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), arr)
    assert np.array_equal(read_idx(tmp_path / "b-idx3-ubyte"), arr)
    (tmp_path / "c-idx3-ubyte").write_bytes((tmp_path / "b-idx3-ubyte").read_bytes()[:-7])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "c-idx3-ubyte")
    (tmp_path / "d").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError, match="not an idx file"):
        read_idx(tmp_path / "d")


def test_fashion_mnist_from_custom_root(tmp_path: Path):
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    ds, info = build_image_dataset("fashion_mnist", "test", root=tmp_path)
    assert len(ds) == 4 and info.num_classes == 10 and ds[0][0].size == (28, 28)


def test_fashion_mnist_missing_names_package(tmp_path: Path):
    with pytest.raises(DatasetError, match="dataset-fashion-mnist") as e:
        build_image_dataset("fashion_mnist", "train", root=tmp_path / "nowhere")
    assert "nowhere" in str(e.value)


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file()
                    and not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed (/usr/share/datasets/fashion-mnist)")
def test_fashion_mnist_debian_package():
    test, info = build_image_dataset("fashion_mnist", "test")
    assert len(test) == 10000 and info.in_chans == 1
    counts = np.bincount(test.labels, minlength=10)
    assert (counts == 1000).all()  # Fashion-MNIST's test set is balanced
    img, _ = test[0]
    assert img.size == (28, 28)


def _make_imagefolder(root: Path, classes=("cat", "dog", "fish"), per_class=4, size=12) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class if split == "train" else 2):
                arr = np.full((size, size + 2, 3), 40 * ci, dtype=np.uint8) + rng.integers(0, 30, (size, size + 2, 3),
                                                                                         dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")


def test_imagefolder(tmp_path: Path):
    _make_imagefolder(tmp_path / "data")
    train, info = build_image_dataset("imagefolder", "train", root=tmp_path / "data")
    val, _ = build_image_dataset("imagefolder", "val", root=tmp_path / "data")
    assert info.num_classes == 3 and info.class_names == ["cat", "dog", "fish"] and info.in_chans == 3
    assert len(train) == 12 and len(val) == 6
    labels = sorted(val[i][1] for i in range(len(val)))
    assert labels == [0, 0, 1, 1, 2, 2]
    img, _ = train[0]
    assert img.mode == "RGB" and img.size == (14, 12)
    gray, info1 = build_image_dataset("imagefolder", "val", root=tmp_path / "data", in_chans=1)
    assert gray[0][0].mode == "L" and info1.in_chans == 1


def test_imagefolder_errors(tmp_path: Path):
    with pytest.raises(DatasetError, match="ImageFolder root not found.*missing_dir"):
        build_image_dataset("imagefolder", "train", root=tmp_path / "missing_dir")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no class sub-folders"):
        build_image_dataset("imagefolder", "train", root=tmp_path / "empty")
    with pytest.raises(DatasetError, match="needs data.root"):
        build_image_dataset("imagefolder", "train")
    with pytest.raises(DatasetError, match="unknown dataset 'mnistt'"):
        build_image_dataset("mnistt", "train")


def test_sampler_deterministic_sharded_and_resumable():
    full = EpochBatchSampler(50, 4, seed=3, shuffle=True, drop_last=True)
    full.set_epoch(2)
    batches = [[i for i, _ in b] for b in full]
    assert len(batches) == 12 and all(len(b) == 4 for b in batches)
    assert len({i for b in batches for i in b}) == 48
    again = EpochBatchSampler(50, 4, seed=3)
    again.set_epoch(2)
    assert [[i for i, _ in b] for b in again] == batches
    other = EpochBatchSampler(50, 4, seed=3)
    other.set_epoch(3)
    assert [[i for i, _ in b] for b in other] != batches
    # resume at batch 5 gives the tail of the same epoch
    again.set_epoch(2, start_batch=5)
    assert [[i for i, _ in b] for b in again] == batches[5:] and len(again) == 7
    # two ranks with batch 2 see exactly the global batches of one rank with batch 4
    r0, r1 = (EpochBatchSampler(50, 2, seed=3, rank=r, world_size=2) for r in (0, 1))
    for s in (r0, r1):
        s.set_epoch(2)
    merged = [[i for i, _ in a] + [i for i, _ in b] for a, b in zip(r0, r1)]
    assert merged == batches


def test_eval_sampler_covers_every_sample_once():
    seen = []
    for r in range(3):
        s = EpochBatchSampler(10, 3, rank=r, world_size=3, shuffle=False, drop_last=False)
        seen += [i for b in s for i, _ in b]
    assert sorted(seen) == list(range(10))


class _Noisy(torch.utils.data.Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, i):
        return torch.rand(3) + i, i


def test_seeded_dataset_is_order_independent_and_keeps_global_rng():
    ds = SeededDataset(_Noisy(), seed=7)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = ds[(4, 1)][0]
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is untouched
    ds[(9, 1)]
    assert torch.equal(ds[(4, 1)][0], a)  # same (index, epoch) -> same sample regardless of history
    assert not torch.equal(ds[(4, 2)][0], a)  # another epoch -> another augmentation
    sampler = EpochBatchSampler(20, 5, seed=1)
    loader = make_loader(ds, sampler, num_workers=0)
    rng = torch.get_rng_state()
    xs = [x for x, _ in loader]
    assert torch.equal(torch.get_rng_state(), rng) and len(xs) == 4
