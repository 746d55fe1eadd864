"""Run logging: CSV (per-step and per-epoch), TensorBoard, args YAML, a training-curve PNG.

Everything is written only when ``enabled`` (pass ``accelerator.is_main_process``), so trainers can
call the logger unconditionally on every process.

Files in the run folder::

    config.yaml      # the full config of the run
    steps.csv        # one row every log_every updates: step, epoch, loss, lr, throughput, ...
    epochs.csv       # one row per epoch: epoch, step, train_loss, eval metrics, time, ...
    tb/              # TensorBoard event files (train/*, eval/* scalars)
    curves.png       # loss / metric / lr curves, drawn from the CSVs at the end

On resume, :meth:`RunLogger.truncate_after` drops CSV rows logged after the checkpoint being resumed
from, so the logs have no duplicate steps.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping

__all__ = ["RunLogger", "plot_curves"]


class _CsvLog:
    """Appends dict rows to a CSV; columns are fixed by the first row (or the existing header)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.is_file():
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
            self.fields = header or None

    def write(self, row: Mapping[str, Any]) -> None:
        new_file = self.fields is None
        if new_file:
            self.fields = list(row.keys())
        missing = [k for k in row if k not in self.fields]
        if missing:  # new columns: rewrite the file with the widened header
            rows = self.read()
            self.fields = self.fields + missing
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.fields)
                w.writeheader()
                w.writerows(rows)
            new_file = False
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, restval="")
            if new_file:
                w.writeheader()
            w.writerow({k: _fmt(v) for k, v in row.items()})

    def read(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def truncate(self, key: str, max_value: float) -> None:
        rows = [r for r in self.read() if r.get(key, "") == "" or float(r[key]) <= max_value]
        if self.fields is None:
            return
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(rows)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


class RunLogger:
    """CSV + TensorBoard logger for one run folder.

    Args:
        run_dir: the run folder (created if needed).
        enabled: write anything at all (main process only).
        tensorboard: also write TensorBoard event files to ``run_dir/tb``.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.steps = _CsvLog(self.run_dir / "steps.csv")
        self.epochs = _CsvLog(self.run_dir / "epochs.csv")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def log_step(self, step: int, values: Mapping[str, Any]) -> None:
        """One per-step row (``step`` is the optimizer-update count); numbers also go to TensorBoard ``train/``."""
        if not self.enabled:
            return
        self.steps.write({"step": step, **values})
        self._scalars("train", step, values)

    def log_epoch(self, epoch: int, step: int, values: Mapping[str, Any]) -> None:
        """One per-epoch row; keys starting with ``eval_`` go to TensorBoard ``eval/``, others to ``epoch/``."""
        if not self.enabled:
            return
        self.epochs.write({"epoch": epoch, "step": step, **values})
        self._scalars("eval", step, {k[5:]: v for k, v in values.items() if k.startswith("eval_")})
        self._scalars("epoch", step, {k: v for k, v in values.items() if not k.startswith("eval_")})

    def _scalars(self, prefix: str, step: int, values: Mapping[str, Any]) -> None:
        if self._tb is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
                self._tb.add_scalar(f"{prefix}/{k}", float(v), step)

    def truncate_after(self, step: int) -> None:
        """Drop CSV rows (and TensorBoard events) with a step greater than ``step`` (logged after the checkpoint)."""
        if not self.enabled:
            return
        self.steps.truncate("step", step)
        self.epochs.truncate("step", step)
        if self._tb is not None:  # reopen so TensorBoard hides events logged after `step` by the earlier run
            from torch.utils.tensorboard import SummaryWriter

            self._tb.close()
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=step + 1)

    def close(self, plot: bool = True) -> Path | None:
        """Flush TensorBoard and (if ``plot``) draw ``curves.png``; returns the PNG path if drawn."""
        if not self.enabled:
            return None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if plot:
            return plot_curves(self.run_dir)
        return None


def _series(rows: list[dict[str, str]], x: str, y: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        try:
            xv, yv = float(r[x]), float(r[y])
        except (KeyError, ValueError, TypeError):
            continue
        xs.append(xv)
        ys.append(yv)
    return xs, ys


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Draw loss, evaluation metrics and learning rate from ``steps.csv``/``epochs.csv`` into a PNG.

    Returns the PNG path, or None if there is nothing to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    steps = _CsvLog(run_dir / "steps.csv").read()
    epochs = _CsvLog(run_dir / "epochs.csv").read()
    if not steps and not epochs:
        return None
    metric_keys = [k for k in (epochs[0].keys() if epochs else []) if k.startswith("eval_") and "loss" not in k
                   and "samples" not in k]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ax.plot(*_series(steps, "step", "loss"), lw=0.8, label="train loss (step)")
    ax.plot(*_series(epochs, "step", "train_loss"), "o-", label="train loss (epoch mean)")
    ax.plot(*_series(epochs, "step", "eval_loss"), "s-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("loss")
    ax = axes[1]
    for k in metric_keys:
        ax.plot(*_series(epochs, "step", k), "o-", label=k)
    ax.set_xlabel("optimizer step")
    ax.set_title("evaluation")
    if metric_keys:
        ax.legend()
    ax = axes[2]
    ax.plot(*_series(steps, "step", "lr"))
    ax.set_xlabel("optimizer step")
    ax.set_title("learning rate")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    path = Path(out) if out else run_dir / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
