"""Small in-memory image data for the evidence runs: Fashion-MNIST / digits as tensors, padding, resizing, augmentation.

Geometry (see ``docs/evidence.md`` §1): every image is first brought to a ``base`` canvas of 28×28 (Fashion-MNIST's native
size; the 8×8 digits are upsampled bilinearly). Training inputs are the base image centred on a ``train_size`` canvas
(28 or 32, zero = background padding), with a random translation of up to ``shift`` pixels. Evaluation at another
size ``S`` (resolution transfer, no fine-tuning) comes in two flavours:

* ``resize``: the ``train_size`` canvas resized bilinearly to ``S`` (the same picture at a higher resolution: more,
  smaller-content patches per object);
* ``pad``: the base image centred on an ``S`` canvas (same object scale, a larger field of view).

Pixels are scaled to [0, 1] and normalised with the dataset mean/std after padding (padding is background, 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch.nn import functional as F

from lightnet.train.datasets import build_image_dataset

__all__ = ["ImageTensors", "load_image_tensors", "place", "augment_batch"]

BASE = 28


@dataclass
class ImageTensors:
    """Train/test images ``[N, 1, 28, 28]`` fp32 in [0, 1] and labels ``[N]`` int64, plus normalisation constants."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float
    num_classes: int
    name: str


def _to_base(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)[:, None]  # [N, 1, h, w]
    if x.shape[-2:] != (BASE, BASE):
        x = F.interpolate(x, size=(BASE, BASE), mode="bilinear", align_corners=False).clamp_(0, 1)
    return x


def _subset(n: int, limit: Optional[int], seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def load_image_tensors(
    name: str,
    train_limit: Optional[int] = None,
    test_limit: Optional[int] = None,
    subset_seed: int = 0,
    root: Optional[str] = None,
) -> ImageTensors:
    """Load ``name`` (``fashion_mnist`` from the Debian package, or ``digits`` from scikit-learn) as tensors.

    ``train_limit`` / ``test_limit`` keep a fixed random subset (same for every model and seed: ``subset_seed``);
    ``root`` is a folder with the Fashion-MNIST idx files (default: the Debian package's folder).
    """
    train, info = build_image_dataset(name, "train", root)
    test, _ = build_image_dataset(name, "test", root)
    tr = _subset(len(train.images), train_limit, subset_seed)
    te = _subset(len(test.images), test_limit, subset_seed + 1)
    x_train = _to_base(train.images[tr])
    x_test = _to_base(test.images[te])
    return ImageTensors(
        x_train=x_train,
        y_train=torch.from_numpy(train.labels[tr]).long(),
        x_test=x_test,
        y_test=torch.from_numpy(test.labels[te]).long(),
        mean=float(x_train.mean()),
        std=float(x_train.std()),
        num_classes=info.num_classes,
        name=info.name,
    )


def _center_pad(x: torch.Tensor, size: int) -> torch.Tensor:
    h = x.shape[-1]
    if size < h:
        raise ValueError(f"canvas size {size} is smaller than the image size {h}")
    lo = (size - h) // 2
    return F.pad(x, (lo, size - h - lo, lo, size - h - lo))


def place(x: torch.Tensor, size: int, train_size: int, mode: str, mean: float, std: float) -> torch.Tensor:
    """Base images ``[B, 1, 28, 28]`` → normalised model inputs ``[B, 1, size, size]`` (see the module docstring)."""
    if mode == "pad":
        out = _center_pad(x, size)
    elif mode == "resize":
        if train_size >= x.shape[-1]:
            out = _center_pad(x, train_size)
        else:  # a training size below the base canvas (e.g. 16 px digits): the trainer resized, so resize too
            out = F.interpolate(x, size=(train_size, train_size), mode="bilinear", align_corners=False)
        if size != train_size:
            out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)
    else:
        raise ValueError(f"unknown placement mode {mode!r}; choose 'resize' or 'pad'")
    return (out - mean) / std


def augment_batch(x: torch.Tensor, train_size: int, shift: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Training placement: centre on a ``train_size`` canvas, translate by up to ±``shift`` px, optional h-flip.

    ``x``: ``[B, 1, 28, 28]`` in [0, 1] → ``[B, 1, train_size, train_size]`` (not yet normalised).
    """
    B = x.shape[0]
    if flip:
        mask = torch.rand(B, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    canvas = _center_pad(x, train_size + 2 * shift)
    if shift == 0:
        return canvas
    offsets = torch.randint(0, 2 * shift + 1, (B, 2), generator=generator)
    return torch.stack([canvas[i, :, a : a + train_size, b : b + train_size] for i, (a, b) in enumerate(offsets.tolist())])

