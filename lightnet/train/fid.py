"""``lightnet fid``: a Fréchet-distance *proxy* for diffusion samples, on features of our own classifier.

The real FID uses an ImageNet-trained Inception-v3 whose weights we cannot download. Instead we train a small CNN
classifier on the same dataset the generator was trained on (e.g. Fashion-MNIST), take its 256-d penultimate
activations as the feature space, and compute the Fréchet distance between the Gaussian fits of real held-out
images and generated images:

    FD = ‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})

in float64 (the trace of the matrix square root comes from a symmetric eigen-decomposition, no complex sqrtm).
Numbers are comparable only between runs that use the same classifier file, dataset, resolution and sample count
(``--classifier`` caches and reuses it). They are **not** comparable with published Inception FIDs.

``lightnet fid --pipeline RUN_A/pipeline [RUN_B/pipeline ...] --dataset fashion_mnist [--num-samples 2000]``
prints a table (FID proxy, and the fraction of samples that the classifier assigns to their conditioning label)
plus the real-vs-real floor (a train subset of the same size against the held-out split).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "FeatureCNN",
    "extract_features",
    "feature_stats",
    "fid_from_features",
    "fid_main",
    "frechet_distance",
    "load_classifier",
    "load_image_tensor",
    "save_classifier",
    "train_feature_classifier",
]


# --------------------------------------------------------------------------- the math
def feature_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and covariance ``[F, F]`` (unbiased, float64) of features ``[N, F]``."""
    f = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    f = f.astype(np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, F], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``tr((Σ₁Σ₂)^{1/2}) = tr((Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})``: both square roots are of symmetric PSD matrices and come
    from ``eigh`` (negative round-off eigenvalues clipped to 0).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid_from_features(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between the Gaussian fits of two feature sets ``[N, F]`` and ``[M, F]``."""
    return frechet_distance(*feature_stats(real), *feature_stats(fake))


# --------------------------------------------------------------------------- the feature network
class FeatureCNN(nn.Module):
    """Small VGG-style classifier; ``features(x)`` is the 256-d penultimate layer used for the FID proxy.

    Input ``[B, C, H, W]`` in [0, 1] (any ``H, W ≥ 8``); output logits ``[B, num_classes]``.
    """

    def __init__(self, in_chans: int = 1, num_classes: int = 10, width: int = 32, feature_dim: int = 256) -> None:
        super().__init__()
        self.config = dict(in_chans=in_chans, num_classes=num_classes, width=width, feature_dim=feature_dim)

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.body = nn.Sequential(
            *conv(in_chans, w), *conv(w, w), nn.MaxPool2d(2),
            *conv(w, 2 * w), *conv(2 * w, 2 * w), nn.MaxPool2d(2),
            *conv(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(4 * w, feature_dim), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` in [0, 1] → ``[B, feature_dim]``."""
        return self.fc(self.body(x * 2.0 - 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))


def train_feature_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int = 3,
                             batch_size: int = 256, lr: float = 2e-3, device: str | torch.device = "cpu",
                             seed: int = 0, width: int = 32) -> FeatureCNN:
    """Train :class:`FeatureCNN` on ``images [N, C, H, W]`` in [0, 1] with integer ``labels [N]`` (AdamW, one-cycle).

    Small datasets get smaller batches (at least ~50 updates per epoch).
    """
    batch_size = max(16, min(batch_size, len(images) // 50))
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = FeatureCNN(images.shape[1], num_classes, width).to(device)
    steps = epochs * max(1, len(images) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    done = 0
    while done < steps:
        order = torch.randperm(len(images), generator=g)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[i:i + batch_size]
            x, y = images[idx].to(device), labels[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            if done >= steps:
                break
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: FeatureCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy (in [0, 1]) of ``model`` on ``images [N, C, H, W]`` in [0, 1]."""
    device = next(model.parameters()).device
    hits = 0
    for i in range(0, len(images), batch_size):
        hits += int((model(images[i:i + batch_size].to(device)).argmax(-1).cpu() == labels[i:i + batch_size]).sum())
    return hits / max(1, len(images))


@torch.no_grad()
def extract_features(model: FeatureCNN, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate features ``[N, feature_dim]`` (float64, CPU) of ``images [N, C, H, W]`` in [0, 1]."""
    device = next(model.parameters()).device
    out = [model.features(images[i:i + batch_size].to(device).float()).double().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def save_classifier(model: FeatureCNN, path: str | Path, meta: Optional[dict] = None) -> Path:
    """Write ``path/classifier.safetensors`` and ``path/classifier.json`` (architecture + ``meta``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(path / "classifier.safetensors"))
    (path / "classifier.json").write_text(json.dumps({"config": model.config, **(meta or {})}, indent=1))
    return path


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[FeatureCNN, dict]:
    """Inverse of :func:`save_classifier`: ``(model in eval mode, metadata)``."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "classifier.json").is_file():
        raise FileNotFoundError(f"no FID classifier in {path} (expected classifier.json + classifier.safetensors)")
    meta = json.loads((path / "classifier.json").read_text())
    model = FeatureCNN(**meta["config"])
    model.load_state_dict(load_file(str(path / "classifier.safetensors")))
    return model.to(device).eval(), meta


# --------------------------------------------------------------------------- data
def load_image_tensor(dataset: str, split: str, img_size: int, root: Optional[str] = None, limit: Optional[int] = None,
                      in_chans: Optional[int] = None, num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images ``[N, C, S, S]`` in [0, 1] (resized like ``lightnet train-dit`` does), labels ``[N]``, class names."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms as T

    from .datasets import build_image_dataset

    tf = T.Compose([T.Resize(img_size, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                    T.CenterCrop(img_size), T.ToTensor()])
    ds, info = build_image_dataset(dataset, split, root, tf, in_chans)
    if limit is not None and limit < len(ds):
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:limit].tolist()
        ds = Subset(ds, idx)
    xs, ys = [], []
    for x, y in DataLoader(ds, batch_size=1000, num_workers=num_workers):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys).long(), list(info.class_names)


# --------------------------------------------------------------------------- CLI
def fid_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lightnet fid``."""
    from .sample import AUTOCAST_DTYPES, SCHEDULERS, load_pipeline, sample_images, set_scheduler

    from .entry import HelpFormatter, plain_text

    p = argparse.ArgumentParser(prog="lightnet fid", formatter_class=HelpFormatter,
                                description=plain_text(__doc__.split("\n\n")[0]) + " See docs/generation.md.")
    p.add_argument("--pipeline", "-p", nargs="+", required=True, help="one or more saved pipeline folders")
    p.add_argument("--dataset", default="fashion_mnist", help="dataset the generators were trained on")
    p.add_argument("--root", default=None, help="dataset root (fashion_mnist idx folder / imagefolder tree)")
    p.add_argument("--img-size", type=int, default=32, help="image side the pipelines sample and the classifier sees")
    p.add_argument("--num-samples", type=int, default=2000, help="generated images per pipeline (and real images)")
    p.add_argument("--classifier", default=None,
                   help="folder of a cached FID classifier (trained and written there if missing)")
    p.add_argument("--classifier-epochs", type=int, default=3, help="epochs of the FID classifier (when trained)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps")
    p.add_argument("--guidance", type=float, default=1.5, help="classifier-free guidance scale (<= 1: off)")
    p.add_argument("--scheduler", default="ddim", choices=sorted(SCHEDULERS), help="sampling scheduler")
    p.add_argument("--batch-size", type=int, default=500, help="images per sampling batch")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--autocast", default="no", choices=["no", *AUTOCAST_DTYPES],
                   help="sample under torch.autocast in this dtype (meant for GPUs; recorded in the results)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    try:
        for path in args.pipeline:  # fail before the (minutes-long) classifier training, not after it
            if not (Path(path) / "model_index.json").is_file():
                raise FileNotFoundError(f"{path} is not a saved pipeline folder (no model_index.json); pass the "
                                        f"'pipeline' folder of a train-dit run")
        results = compute_fid_table(args.pipeline, args.dataset, args.root, args.img_size, args.num_samples,
                                    args.classifier, args.classifier_epochs, args.steps, args.guidance, args.scheduler,
                                    args.batch_size, args.seed, args.device, load_pipeline, sample_images,
                                    set_scheduler, autocast=args.autocast)
    except (FileNotFoundError, ValueError) as e:
        print(f"lightnet fid: error: {e}", file=sys.stderr)
        return 2
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def format_table(results: dict) -> str:
    """Markdown table of :func:`compute_fid_table` results."""
    lines = [f"FID proxy ({results['feature_net']}, {results['num_samples']} samples, classifier test accuracy "
             f"{100 * results['classifier_test_acc']:.2f}%)", "",
             "| source | FID proxy | samples classified as their label |", "|---|---|---|"]
    lines.append(f"| real train subset vs test (floor) | {results['real_floor']:.3f} | "
                 f"{100 * results['real_label_acc']:.1f}% |")
    for row in results["pipelines"]:
        lines.append(f"| {row['pipeline']} | {row['fid_proxy']:.3f} | {100 * row['label_acc']:.1f}% |")
    return "\n".join(lines)


def compute_fid_table(pipelines: Sequence[str], dataset: str, root: Optional[str], img_size: int, num_samples: int,
                      classifier_dir: Optional[str], classifier_epochs: int, steps: int, guidance: float,
                      scheduler: str, batch_size: int, seed: int, device: str, load_pipeline, sample_images,
                      set_scheduler, autocast: Optional[str] = None) -> dict:
    """Train/load the classifier, fit real test statistics, sample each pipeline, and return all numbers.
    ``autocast`` (``'bf16'`` / ``'fp16'`` / None) is passed to ``sample_images``."""
    train_x, train_y, _ = load_image_tensor(dataset, "train", img_size, root)
    test_x, test_y, _ = load_image_tensor(dataset, "test", img_size, root)
    num_classes = int(train_y.max()) + 1
    cdir = Path(classifier_dir) if classifier_dir else Path(pipelines[0]).resolve().parent / "fid_classifier"
    if (cdir / "classifier.json").is_file():
        clf, meta = load_classifier(cdir, device)
        if meta.get("dataset") != dataset or meta.get("img_size") != img_size:
            raise ValueError(f"cached classifier {cdir} was trained on {meta.get('dataset')} at {meta.get('img_size')}px, "
                             f"not {dataset} at {img_size}px; pass another --classifier folder")
    else:
        clf = train_feature_classifier(train_x, train_y, num_classes, epochs=classifier_epochs, device=device, seed=seed)
        save_classifier(clf, cdir, {"dataset": dataset, "img_size": img_size, "epochs": classifier_epochs})
    test_acc = classifier_accuracy(clf, test_x, test_y)
    real_feats = extract_features(clf, test_x)
    mu_r, sig_r = feature_stats(real_feats)
    g = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(train_x), generator=g)[:num_samples]
    floor = frechet_distance(mu_r, sig_r, *feature_stats(extract_features(clf, train_x[subset])))
    results = {"feature_net": f"FeatureCNN trained on {dataset} {img_size}px, 256-d penultimate features",
               "classifier": str(cdir), "classifier_test_acc": test_acc, "num_samples": num_samples,
               "reference": f"{dataset} test split ({len(test_x)} images)", "real_floor": floor,
               "real_label_acc": classifier_accuracy(clf, train_x[subset], train_y[subset]),
               "sampling": {"steps": steps, "guidance": guidance, "scheduler": scheduler,
                            "autocast": autocast or "no"}, "pipelines": []}
    for path in pipelines:
        pipe = load_pipeline(path, device)
        set_scheduler(pipe, scheduler)
        labels = [i % pipe.num_classes for i in range(num_samples)]
        images = sample_images(pipe, labels, batch_size, seed, guidance, steps, autocast=autocast)
        feats = extract_features(clf, images)
        results["pipelines"].append({
            "pipeline": str(path), "transformer": type(pipe.transformer).__name__,
            "fid_proxy": frechet_distance(mu_r, sig_r, *feature_stats(feats)),
            "label_acc": classifier_accuracy(clf, images, torch.tensor(labels)),
        })
        del pipe
    return results


if __name__ == "__main__":
    sys.exit(fid_main())
