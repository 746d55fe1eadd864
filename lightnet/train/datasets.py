"""Built-in image-classification datasets that need no download, plus any ImageFolder tree.

``build_image_dataset(name, split, root=None, transform=None, in_chans=None)`` returns a map-style
dataset of ``(transformed image, int label)`` and a :class:`DatasetInfo`:

* ``digits`` — scikit-learn's ``load_digits`` (1,797 real 8×8 handwritten digits shipped in the wheel,
  10 classes). Deterministic stratified split: 1,437 train / 360 test (``random_state=0``).
* ``fashion_mnist`` — Fashion-MNIST (28×28, 10 classes, 60k/10k) read from the idx files of the Debian
  package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/*-idx*-ubyte[.gz]``), or from
  ``root`` if given. The idx format is parsed here (no torchvision download code involved).
* ``imagefolder`` — an ImageNet-style tree ``root/<split>/<class>/<image>`` (``split`` ``train``, and
  ``val``/``validation``/``test`` for evaluation), read with timm's ``ImageDataset``; class indices
  come from the training folder so that train and eval agree.

Images are PIL images (mode ``L`` for 1 channel, ``RGB`` for 3) handed to ``transform`` (typically
``timm.data.create_transform``).
"""

from __future__ import annotations

import functools
import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["DatasetInfo", "DatasetError", "DATASETS", "build_image_dataset", "read_idx", "FASHION_MNIST_DIR"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetError(ValueError):
    """A dataset is unknown, missing on disk or malformed."""


@dataclass
class DatasetInfo:
    """What a model and transform need to know about a dataset."""

    name: str
    num_classes: int
    in_chans: int
    native_size: Optional[int]  # side of the stored images, None if they vary (ImageFolder)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)


class ArrayImageDataset(Dataset):
    """In-memory uint8 images ``[N, H, W]`` (grayscale) with int labels ``[N]``, yielded as PIL images."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None) -> None:
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DatasetError(f"expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise DatasetError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, labels.astype(np.int64), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = Image.fromarray(self.images[i], mode="L")
        return (self.transform(img) if self.transform else img), int(self.labels[i])


@functools.lru_cache(maxsize=2)
def _digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # [1797, 8, 8], 0..16 → 0..255
    x_tr, x_te, y_tr, y_te = train_test_split(images, d.target, test_size=0.2, random_state=0, stratify=d.target)
    return (x_tr, y_tr) if split == "train" else (x_te, y_te)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (``.gz`` or raw) into a NumPy array; see http://yann.lecun.com/exdb/mnist/ for the format.

    Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one big-endian
    uint32 per dimension; the data follows in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"cannot read idx file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path} is not an idx file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = data[2], data[3]
    if code not in dtypes:
        raise DatasetError(f"{path}: unknown idx element type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated idx header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(dtypes[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetError(f"{path}: expected {expected} data bytes for shape {shape}, found {len(data) - header} "
                           f"(truncated or corrupt file)")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DatasetError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}. Install the Debian package with "
        f"`apt-get install dataset-fashion-mnist` (it provides {FASHION_MNIST_DIR}/*-idx*-ubyte.gz), or set "
        f"data.root to a folder holding the idx files."
    )


@functools.lru_cache(maxsize=2)
def _fashion_split(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"Fashion-MNIST files in {root} have inconsistent shapes {images.shape} / {labels.shape}")
    return images.astype(np.uint8), labels


def _imagefolder_split_dir(root: Path, split: str) -> Path:
    if not root.is_dir():
        raise DatasetError(f"ImageFolder root not found: {root} (expected {root}/train/<class>/<image> and "
                           f"{root}/val/<class>/<image>)")
    names = ["train"] if split == "train" else [split, "val", "validation", "test"]
    for n in dict.fromkeys(names):
        if (root / n).is_dir():
            return root / n
    raise DatasetError(f"no '{names[0]}' folder in ImageFolder root {root} (looked for {', '.join(names)}); "
                       f"layout: {root}/train/<class>/<image>, {root}/val/<class>/<image>")


def _class_names(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{folder} has no class sub-folders (expected {folder}/<class>/<image>)")
    return classes


def build_image_dataset(name: str, split: str, root: str | Path | None = None, transform: Callable | None = None,
                        in_chans: int | None = None) -> tuple[Dataset, DatasetInfo]:
    """Build dataset ``name`` (``digits``, ``fashion_mnist``, ``imagefolder``), split ``train`` or an eval split.

    Args:
        name: dataset name (see module docstring).
        split: ``train`` or ``test``/``val`` (any non-train split is the held-out split).
        root: folder for ``imagefolder`` (required) and ``fashion_mnist`` (optional override).
        transform: applied to each PIL image.
        in_chans: for ``imagefolder``: 1 loads grayscale, 3 RGB (default 3).
    Returns:
        ``(dataset, info)``; ``dataset[i] = (transform(image), label)``.
    """
    key = name.lower().replace("-", "_")
    if key == "digits":
        x, y = _digits_split(split)
        tr_x, _ = _digits_split("train")
        mean, std = float(tr_x.mean() / 255.0), float(tr_x.std() / 255.0)
        info = DatasetInfo("digits", 10, 1, 8, (mean,), (std,), [str(i) for i in range(10)])
        return ArrayImageDataset(x, y, transform), info
    if key in ("fashion_mnist", "fashionmnist"):
        r = Path(root) if root else FASHION_MNIST_DIR
        x, y = _fashion_split(split, r)
        info = DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), list(FASHION_MNIST_CLASSES))
        return ArrayImageDataset(x, y, transform), info
    if key in ("imagefolder", "image_folder", "folder", "imagenet"):
        if root is None:
            raise DatasetError("dataset 'imagefolder' needs data.root (a folder with train/<class>/ and val/<class>/)")
        from timm.data import ImageDataset

        r = Path(root)
        classes = _class_names(_imagefolder_split_dir(r, "train"))
        folder = _imagefolder_split_dir(r, split)
        chans = 3 if in_chans is None else in_chans
        if chans not in (1, 3):
            raise DatasetError(f"imagefolder supports in_chans 1 (grayscale) or 3 (RGB), got {chans}")
        extra = sorted(set(_class_names(folder)) - set(classes))
        if extra:
            raise DatasetError(f"{folder} has classes not present in the training folder: {extra[:5]}")
        ds = ImageDataset(str(folder), split=split, class_map={c: i for i, c in enumerate(classes)},
                          input_img_mode="L" if chans == 1 else "RGB", transform=transform)
        if len(ds) == 0:
            raise DatasetError(f"no images found under {folder}")
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if chans == 3 else ((0.5,), (0.5,))
        return ds, DatasetInfo("imagefolder", len(classes), chans, None, mean, std, classes)
    raise DatasetError(f"unknown dataset {name!r}; choose one of {DATASETS}")


DATASETS = ["digits", "fashion_mnist", "imagefolder"]
