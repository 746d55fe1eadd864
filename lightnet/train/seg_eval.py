"""Segmentation metrics (confusion matrix, per-class IoU, mIoU) and the overlay picture (input / truth / prediction).

mIoU conventions used by ``lightnet train-seg`` and ``experiments/seg_compare.py``: IoU of class ``c`` is
``TP / (TP + FP + FN)`` over the whole evaluation set (one confusion matrix, not a mean of per-image IoUs); classes
whose union is empty (absent from both truth and prediction) are left out of the mean. ``miou`` averages over all
classes **including background** (class 0), ``miou_fg`` over the item classes only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = ["confusion_matrix", "iou_from_confusion", "segmentation_scores", "PALETTE", "overlay_grid"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[num_classes, num_classes]`` int64 counts, rows = truth, columns = prediction, of label maps of one shape."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    idx = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(conf: torch.Tensor) -> torch.Tensor:
    """Per-class IoU ``[C]`` (float64) from a confusion matrix; NaN for classes with an empty union."""
    conf = conf.double()
    tp = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def segmentation_scores(conf: torch.Tensor, prefix: str = "eval_") -> dict[str, float]:
    """``{miou, miou_fg, pixel_acc}`` in % (see the module docstring), keys prefixed with ``prefix``."""
    iou = iou_from_confusion(conf)
    fg = iou[1:]
    return {f"{prefix}miou": 100.0 * float(torch.nanmean(iou)),
            f"{prefix}miou_fg": 100.0 * float(torch.nanmean(fg)) if not torch.isnan(fg).all() else 0.0,
            f"{prefix}pixel_acc": 100.0 * float(conf.diagonal().sum()) / max(float(conf.sum()), 1.0)}


# background black, then ten distinct colours (tab10)
PALETTE = np.array([[0, 0, 0], [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], np.uint8)


def _overlay(gray: np.ndarray, labels: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    colour = PALETTE[labels % len(PALETTE)].astype(np.float32)
    on = (labels > 0)[..., None]
    return np.where(on, (1 - alpha) * rgb + alpha * colour, rgb).clip(0, 255).astype(np.uint8)


def overlay_grid(images: torch.Tensor, truth: torch.Tensor, pred: torch.Tensor, path: str | Path,
                 titles: Sequence[str] = ("input", "truth", "prediction"), pad: int = 2) -> Path:
    """Write a PNG with one row per sample: input, truth overlay, prediction overlay.

    Args:
        images: ``[B, 1, H, W]`` or ``[B, H, W]`` intensities (min-max scaled per image for display).
        truth, pred: ``[B, H, W]`` label maps (0 = background, drawn uncoloured).
        path: output PNG.
    """
    from PIL import Image, ImageDraw

    x = images.detach().float().cpu()
    x = x[:, 0] if x.dim() == 4 else x
    lo = x.flatten(1).amin(1)[:, None, None]
    hi = x.flatten(1).amax(1)[:, None, None]
    gray = ((x - lo) / (hi - lo).clamp_min(1e-6) * 255).round().to(torch.uint8).numpy()
    t, p = truth.cpu().numpy(), pred.cpu().numpy()
    B, H, W = gray.shape
    head = 14
    canvas = np.full((head + B * (H + pad), 3 * (W + pad), 3), 255, np.uint8)
    for i in range(B):
        y = head + i * (H + pad)
        for j, tile in enumerate((np.repeat(gray[i][..., None], 3, -1), _overlay(gray[i], t[i]),
                                  _overlay(gray[i], p[i]))):
            canvas[y:y + H, j * (W + pad):j * (W + pad) + W] = tile
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for j, title in enumerate(titles):
        draw.text((j * (W + pad) + 2, 1), title, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
