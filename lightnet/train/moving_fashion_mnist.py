"""Moving Fashion-MNIST: seeded clips of Fashion-MNIST items moving and bouncing on a larger canvas.

Clip ``i`` of a split is a pure function of ``(seed, split, i)`` (its own NumPy generator), so the datasets are
deterministic, need no storage and give the same clips in any worker or process. Items are the split's Fashion-MNIST
images (``/usr/share/datasets/fashion-mnist`` or ``root``), resized to ``item_size``; where those files are missing
(``items='auto'``), scikit-learn's 8×8 digits go through the same code.

Each item starts at a random position and moves at a constant integer velocity ``(vy, vx)`` (each component between
``min_speed`` and ``max_speed`` px / frame, random signs), reflected by the canvas walls (bouncing); overlapping items
combine by the pixel-wise maximum. The first step never touches a wall, so the initial direction is visible.
Labels (``label``):

* ``class`` — the class of item 0 (readable from any single frame);
* ``direction`` — item 0's initial direction among the 4 diagonals of :data:`DIRECTIONS` (``y`` grows downwards).
  One frame carries no information on it; the order of frames does (a clip played backwards has the opposite one);
* ``faster`` — the class of the faster of two items of different classes (``num_items`` 2; the fast item's velocity
  components are 2–3 times the slow one's): needs both appearance and motion.

``clip(i)`` gives ``uint8 [T, 1, H, W]`` frames (the ``frames`` layout of video pipelines); ``dataset[i]`` gives
``(float clip [1, T, H, W] normalised with the dataset's mean / std, label)``, the ``[C, T, H, W]`` layout of
:class:`lightnet.video.LightNetVideo`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .datasets import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, DatasetError, DatasetInfo, _digits_split, _fashion_split

__all__ = ["DIRECTIONS", "LABELS", "MovingClipConfig", "MovingFashionMNIST", "build_moving_dataset", "is_video_dataset",
           "render_clip"]

#: direction label → (sign of vy, sign of vx); index = label value
DIRECTIONS: Dict[str, Tuple[int, int]] = {"down-right": (1, 1), "down-left": (1, -1), "up-right": (-1, 1),
                                          "up-left": (-1, -1)}
#: label name → number of classes
LABELS: Dict[str, int] = {"class": 10, "direction": len(DIRECTIONS), "faster": 10}
_SPLIT_CODES = {"train": 0}


def is_video_dataset(name: str) -> bool:
    """True for the clip datasets (``[C, T, H, W]`` samples, no image transforms): ``moving_fashion_mnist``."""
    return name.lower().replace("-", "_") == "moving_fashion_mnist"


@dataclass
class MovingClipConfig:
    """Settings of the Moving Fashion-MNIST clips (recipe section ``data.moving``)."""

    label: str = "direction"  # class | direction | faster
    num_frames: int = 8  # T
    canvas: int = 32  # H = W in pixels
    item_size: int = 16  # items are resized to item_size × item_size
    num_items: int = 1  # 'faster' needs 2
    min_speed: int = 1  # px / frame, per axis
    max_speed: int = 3
    train_clips: int = 4096
    eval_clips: int = 1024
    items: str = "auto"  # auto (Fashion-MNIST if installed, else digits) | fashion_mnist | digits


def _bounce(start: int, velocity: int, span: int, num_frames: int) -> np.ndarray:
    """Integer positions ``[num_frames]`` of a point moving from ``start`` at ``velocity`` inside ``[0, span]``,
    reflected at both ends."""
    if span <= 0:
        return np.zeros(num_frames, dtype=np.int64)
    period = 2 * span
    p = np.mod(start + velocity * np.arange(num_frames, dtype=np.int64), period)
    return np.where(p > span, period - p, p)


def render_clip(items: np.ndarray, starts: np.ndarray, velocities: np.ndarray, num_frames: int,
                canvas: int) -> np.ndarray:
    """``uint8 [T, 1, H, W]`` frames of ``items`` (``uint8 [K, s, s]``) from top-left ``starts`` (``[K, 2]``, ``(y, x)``)
    at ``velocities`` (``[K, 2]`` ints, px / frame), bouncing off the walls of a ``canvas`` × ``canvas`` frame."""
    k, s = items.shape[0], items.shape[1]
    if s > canvas:
        raise DatasetError(f"moving_fashion_mnist: item_size {s} exceeds the canvas {canvas}")
    span = canvas - s
    frames = np.zeros((num_frames, 1, canvas, canvas), dtype=np.uint8)
    for j in range(k):
        ys = _bounce(int(starts[j, 0]), int(velocities[j, 0]), span, num_frames)
        xs = _bounce(int(starts[j, 1]), int(velocities[j, 1]), span, num_frames)
        for t, (y, x) in enumerate(zip(ys, xs)):
            window = frames[t, 0, y:y + s, x:x + s]
            np.maximum(window, items[j], out=window)
    return frames


def _item_pool(split: str, items: str, root: Optional[str], size: int) -> Tuple[np.ndarray, np.ndarray, str]:
    """``(uint8 images [N, size, size], labels [N], source)`` of the split's items."""
    split = "train" if split == "train" else "test"
    if items not in ("auto", "fashion_mnist", "digits"):
        raise DatasetError(f"moving_fashion_mnist: items must be 'auto', 'fashion_mnist' or 'digits', got {items!r}")
    x = y = None
    source = "digits"
    if items in ("auto", "fashion_mnist"):
        try:
            x, y = _fashion_split(split, Path(root) if root else FASHION_MNIST_DIR)
            source = "fashion_mnist"
        except DatasetError:
            if items == "fashion_mnist":
                raise
    if x is None:
        x, y = _digits_split(split)
    if x.shape[1] != size:
        x = np.stack([np.asarray(Image.fromarray(im, mode="L").resize((size, size), Image.BILINEAR)) for im in x])
    return x.astype(np.uint8), np.asarray(y, dtype=np.int64), source


class MovingFashionMNIST(Dataset):
    """Map-style dataset of seeded Moving Fashion-MNIST clips (``train_clips`` for ``train``, else ``eval_clips``).

    Args:
        cfg: clip settings (:class:`MovingClipConfig`).
        split: ``train`` (items from the training images) or another name (items from the test images).
        seed: base seed (clip ``i`` depends only on ``(seed, split, i)``).
        root: folder of the Fashion-MNIST idx files (default ``/usr/share/datasets/fashion-mnist``).
    """

    def __init__(self, cfg: MovingClipConfig = MovingClipConfig(), split: str = "train", seed: int = 0,
                 root: Optional[str] = None) -> None:
        if cfg.label not in LABELS:
            raise DatasetError(f"moving_fashion_mnist: label must be one of {list(LABELS)}, got {cfg.label!r}")
        if cfg.num_frames < 1:
            raise DatasetError(f"moving_fashion_mnist: num_frames must be >= 1, got {cfg.num_frames}")
        if cfg.item_size < 1 or cfg.item_size > cfg.canvas:
            raise DatasetError(f"moving_fashion_mnist: item_size {cfg.item_size} exceeds the canvas {cfg.canvas} "
                               f"(or is < 1)")
        if cfg.min_speed < 1 or cfg.max_speed < cfg.min_speed:
            raise DatasetError(f"moving_fashion_mnist: need 1 <= min_speed <= max_speed, got max_speed "
                               f"{cfg.max_speed} < min_speed {cfg.min_speed}" if cfg.max_speed < cfg.min_speed else
                               f"moving_fashion_mnist: min_speed must be >= 1, got {cfg.min_speed}")
        need_items = 2 if cfg.label == "faster" else 1
        if cfg.label == "faster" and cfg.num_items != 2:
            raise DatasetError(f"moving_fashion_mnist: label 'faster' needs num_items 2, got {cfg.num_items}")
        if cfg.num_items < need_items:
            raise DatasetError(f"moving_fashion_mnist: num_items must be >= 1, got {cfg.num_items}")
        length = cfg.train_clips if split == "train" else cfg.eval_clips
        if length < 1:
            raise DatasetError(f"moving_fashion_mnist: the {split} split has {length} clips (train_clips / "
                               f"eval_clips must be >= 1)")
        span = cfg.canvas - cfg.item_size
        fast = 3 * cfg.max_speed if cfg.label == "faster" else cfg.max_speed
        if span < fast:
            raise DatasetError(f"moving_fashion_mnist: a canvas of {cfg.canvas} px leaves {span} px to move "
                               f"{cfg.item_size} px items; speeds up to {fast} px / frame need at least {fast}")
        self.cfg, self.split, self.seed, self.length = cfg, split, int(seed), int(length)
        self.images, self.item_labels, self.source = _item_pool(split, cfg.items, root, cfg.item_size)
        self._by_class = [np.flatnonzero(self.item_labels == c) for c in range(10)]
        self._split_code = _SPLIT_CODES.get(split, 1)
        # pixel statistics of the clips (item pixels diluted over the canvas), for normalisation
        m1 = float(self.images.mean()) / 255.0
        m2 = float(np.mean((self.images.astype(np.float64) / 255.0) ** 2))
        cover = cfg.num_items * cfg.item_size ** 2 / float(cfg.canvas ** 2)
        self.mean = m1 * cover
        self.std = float(max(np.sqrt(max(m2 * cover - self.mean ** 2, 0.0)), 1e-3))

    @property
    def num_classes(self) -> int:
        return LABELS[self.cfg.label]

    @property
    def class_names(self) -> List[str]:
        if self.cfg.label == "direction":
            return list(DIRECTIONS)
        return list(FASHION_MNIST_CLASSES) if self.source == "fashion_mnist" else [str(i) for i in range(10)]

    def info(self) -> DatasetInfo:
        """:class:`~lightnet.train.datasets.DatasetInfo` of the chosen label (1 channel, ``canvas`` px)."""
        return DatasetInfo("moving_fashion_mnist", self.num_classes, 1, self.cfg.canvas, (self.mean,), (self.std,),
                           self.class_names)

    def __len__(self) -> int:
        return self.length

    def clip_and_labels(self, index: int) -> Tuple[np.ndarray, Dict[str, int]]:
        """Clip ``index``: ``(uint8 frames [T, 1, H, W], labels)``; labels hold ``class``, ``direction`` and ``item``
        (index into :attr:`images`) of item 0, and ``faster`` with two or more items."""
        if not 0 <= index < self.length:
            raise IndexError(f"clip index {index} out of range for {self.length} clips")
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, self._split_code, int(index)])
        k = cfg.num_items
        classes = rng.choice(10, size=k, replace=k > 10)
        picks = np.array([self._by_class[c][rng.integers(len(self._by_class[c]))] for c in classes])
        speed = rng.integers(cfg.min_speed, cfg.max_speed + 1, size=(k, 2))
        if cfg.label == "faster":
            speed[1] = speed[0] * rng.integers(2, 4)  # item 1 is 2–3× faster along both axes
        signs = rng.choice(np.array([-1, 1]), size=(k, 2))
        velocities = speed * signs
        span = cfg.canvas - cfg.item_size
        # first step inside the canvas: start in [max(0, -v), span - max(0, v)] per axis
        lo, hi = np.maximum(0, -velocities), span - np.maximum(0, velocities)
        starts = rng.integers(lo, hi + 1)
        frames = render_clip(self.images[picks], starts, velocities, cfg.num_frames, cfg.canvas)
        vy, vx = int(np.sign(velocities[0, 0])), int(np.sign(velocities[0, 1]))
        labels = {"class": int(self.item_labels[picks[0]]), "item": int(picks[0]),
                  "direction": list(DIRECTIONS.values()).index((vy, vx))}
        if k >= 2:
            norms = np.abs(velocities).sum(1)
            labels["faster"] = int(self.item_labels[picks[int(np.argmax(norms))]])
        return frames, labels

    def clip(self, index: int) -> np.ndarray:
        """``uint8 [T, 1, H, W]`` frames of clip ``index``."""
        return self.clip_and_labels(index)[0]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        frames, labels = self.clip_and_labels(index)
        x = torch.from_numpy(frames).float().div_(255.0).sub_(self.mean).div_(self.std)
        return x.permute(1, 0, 2, 3).contiguous(), labels[self.cfg.label]  # [1, T, H, W]


def build_moving_dataset(cfg: MovingClipConfig, split: str, seed: int = 0,
                         root: Optional[str] = None) -> Tuple[MovingFashionMNIST, DatasetInfo]:
    """``(dataset, info)`` of a split, as :func:`lightnet.train.datasets.build_image_dataset` returns them."""
    ds = MovingFashionMNIST(cfg, split, seed=seed, root=root)
    return ds, ds.info()
