"""A reduced run of ``experiments/stability.py`` (slow): 100 bf16 and 100 fp16+GradScaler CPU steps of
``lightnet_tiny`` on Fashion-MNIST 32x32 and of the causal LM, with the script's per-step finiteness checks."""
from __future__ import annotations

import pytest
import torch

from experiments import stability as stability_script


@pytest.mark.slow
@pytest.mark.parametrize("task", ["vision", "lm"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_stay_finite(task, precision, tmp_path, monkeypatch):
    stability = stability_script
    # the GradScaler's start-up skips (scale 65536 -> ~4096) are a fixed cost: allow 10 % of a short run
    monkeypatch.setattr(stability, "MAX_SKIP_FRACTION", 0.1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        result = stability.train_run(stability.build_task(task, None), precision, steps=100, out=tmp_path,
                                     progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result.ok, result.failures
    assert result.loss_last50 < result.loss_first50
    assert (tmp_path / f"{task}_{precision}.csv").is_file()
    if precision == "fp16":
        assert result.final_scale is not None and result.final_scale >= 1.0
