"""Run logs: CSV rows, TensorBoard events, truncation on resume, the curves PNG."""

from __future__ import annotations

import csv
from pathlib import Path

from lightnet.train.run_log import RunLogger


def test_logger_resume_truncates_csv_and_tensorboard(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLogger(tmp_path)
    for s in range(1, 11):
        log.log_step(s, {"loss": 1.0 / s, "lr": 0.1})
    log.log_epoch(1, 10, {"train_loss": 0.5, "eval_top1": 50.0, "eval_samples": 10})
    log.close(plot=False)
    # a resumed run continues from step 5: later rows of the first run disappear
    log = RunLogger(tmp_path)
    log.truncate_after(5)
    for s in range(6, 9):
        log.log_step(s, {"loss": 2.0, "lr": 0.1, "grad_norm": 1.0})  # a new column widens the CSV
    png = log.close(plot=True)
    with open(tmp_path / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert rows[-1]["grad_norm"] == "1" and rows[0]["grad_norm"] == ""
    with open(tmp_path / "epochs.csv") as f:
        assert list(csv.DictReader(f)) == []  # the epoch row was logged at step 10 > 5
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    events = [(e.step, round(e.value, 4)) for e in ea.Scalars("train/loss")]
    assert events[4:] == [(5, 0.2), (6, 2.0), (7, 2.0), (8, 2.0)]
    assert png is not None and png.is_file() and png.stat().st_size > 10_000


def test_disabled_logger_writes_nothing(tmp_path: Path):
    log = RunLogger(tmp_path / "r", enabled=False)
    log.log_step(1, {"loss": 1.0})
    assert log.close() is None and not (tmp_path / "r").exists()
