"""Fashion-MNIST mosaics for semantic segmentation: items at random scales and positions on a larger canvas.

``FashionMosaic(split, canvas_size=256, ...)[i]`` is ``(image [1, S, S] float, mask [S, S] int64)``: ``k`` items
(``min_items`` ≤ ``k`` ≤ ``max_items``) drawn from the Fashion-MNIST split (28×28), each resized to a side of
``item_scale · S`` (``item_scale`` uniform in its range) and pasted at a uniformly random position fully inside the
canvas; later items lie over earlier ones. The mask is 0 (background) where no item is, ``1 + class`` (1..10) where
an item's resized intensity is above ``threshold`` (a fraction of 255), the top item winning. Item pixels below the
threshold stay background in both the image and the mask, so every visible pixel has the class it shows.

Canvas ``i`` of a split is a pure function of ``(seed, split, i)`` (NumPy ``default_rng``), so a dataset is
deterministic and needs no memory beyond the source items, at any canvas size (the trainer recipe uses 128 px on
the CPU; 256–1024 px for the GPU benchmark). Items come from ``fashion_mnist`` (the Debian idx files) or, where
those are absent, from scikit-learn's ``digits`` (8×8 digits, the same code): ``items='auto'``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .datasets import FASHION_MNIST_DIR, DatasetError, build_image_dataset

__all__ = ["FashionMosaic", "resolve_item_source", "ITEM_SOURCES"]

ITEM_SOURCES = ("auto", "fashion_mnist", "digits")
_SPLIT_CODE = {"train": 0, "test": 1}


def resolve_item_source(items: str, root: Optional[str] = None) -> str:
    """``'fashion_mnist'`` or ``'digits'`` for ``items`` (``'auto'``: Fashion-MNIST when its idx files exist)."""
    if items not in ITEM_SOURCES:
        raise DatasetError(f"mosaic items must be one of {ITEM_SOURCES}, got {items!r}")
    if items != "auto":
        return items
    folder = Path(root) if root else FASHION_MNIST_DIR
    return "fashion_mnist" if any(folder.glob("train-images-idx3-ubyte*")) else "digits"


class FashionMosaic(Dataset):
    """Seeded segmentation mosaics of Fashion-MNIST (or digits) items; see the module docstring.

    Args:
        split: ``'train'`` (items from the training split) or ``'test'`` (items from the held-out split).
        length: number of canvases.
        canvas_size: side ``S`` of the square canvas in pixels.
        min_items, max_items: items per canvas (inclusive).
        item_scale: ``(lo, hi)`` item side as a fraction of ``S``.
        threshold: item pixels above ``threshold · 255`` (after resizing) are the item's mask.
        seed: dataset seed (canvas ``i`` depends on ``(seed, split, i)`` only).
        items: ``'auto'``, ``'fashion_mnist'`` or ``'digits'``.
        root: folder of the Fashion-MNIST idx files (default the Debian package's).
        mean, std: image normalisation (default: 0 and 1, i.e. intensities in [0, 1]).
    """

    num_classes = 11  # background + 10 item classes

    def __init__(self, split: str = "train", length: int = 1000, canvas_size: int = 256, min_items: int = 2,
                 max_items: int = 6, item_scale: tuple[float, float] = (0.15, 0.4), threshold: float = 0.1,
                 seed: int = 0, items: str = "auto", root: Optional[str] = None, mean: float = 0.0,
                 std: float = 1.0) -> None:
        if split not in _SPLIT_CODE:
            raise DatasetError(f"mosaic split must be 'train' or 'test', got {split!r}")
        if length < 1 or canvas_size < 8:
            raise DatasetError(f"mosaic needs length >= 1 and canvas_size >= 8, got {length}, {canvas_size}")
        if not 0 <= min_items <= max_items or max_items < 1:
            raise DatasetError(f"mosaic needs 0 <= min_items <= max_items, max_items >= 1; got {min_items}, "
                               f"{max_items}")
        lo, hi = item_scale
        if not 0 < lo <= hi <= 1:
            raise DatasetError(f"mosaic item_scale must satisfy 0 < lo <= hi <= 1, got {tuple(item_scale)}")
        if not 0 <= threshold < 1:
            raise DatasetError(f"mosaic threshold must be in [0, 1), got {threshold}")
        if std <= 0:
            raise DatasetError(f"mosaic std must be > 0, got {std}")
        self.split, self.length, self.canvas_size = split, int(length), int(canvas_size)
        self.min_items, self.max_items = int(min_items), int(max_items)
        self.item_scale, self.threshold, self.seed = (float(lo), float(hi)), float(threshold), int(seed)
        self.mean, self.std = float(mean), float(std)
        self.source = resolve_item_source(items, root)
        ds, info = build_image_dataset(self.source, split, root if self.source == "fashion_mnist" else None)
        self.items, self.labels = ds.images, ds.labels  # uint8 [N, h, w], int64 [N]
        self.class_names = ["background"] + list(info.class_names)

    def __len__(self) -> int:
        return self.length

    def draw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Canvas ``i`` as uint8 image ``[S, S]`` and int64 mask ``[S, S]`` (0 = background, 1..10 = classes)."""
        if not 0 <= i < self.length:
            raise IndexError(f"mosaic index {i} out of range for {self.length} canvases")
        S = self.canvas_size
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[self.split], int(i)])
        image = np.zeros((S, S), np.uint8)
        mask = np.zeros((S, S), np.int64)
        cut = int(round(self.threshold * 255))
        for _ in range(int(rng.integers(self.min_items, self.max_items + 1))):
            j = int(rng.integers(len(self.items)))
            side = max(2, min(S, int(round(rng.uniform(*self.item_scale) * S))))
            item = np.asarray(Image.fromarray(self.items[j]).resize((side, side), Image.BILINEAR))
            y, x = int(rng.integers(S - side + 1)), int(rng.integers(S - side + 1))
            on = item > cut
            image[y:y + side, x:x + side][on] = item[on]
            mask[y:y + side, x:x + side][on] = 1 + int(self.labels[j])
        return image, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.draw(i)
        x = (torch.from_numpy(image).float().div_(255.0) - self.mean) / self.std
        return x.unsqueeze(0), torch.from_numpy(mask)
