"""Files written by lightnet 0.1.0 before the option renames still load: a DiT ``config.json`` with
``attention_backend`` (``LightNetDiTModel.from_pretrained``, ``from_config``, a saved pipeline), renamed in one place
(``rename_legacy_keys``), logged at INFO and without diffusers' "unexpected config attributes" warning; the
state-dict keys are unchanged."""
from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager

import torch
from diffusers import DDIMScheduler

from lightnet.generation import LightNetDiTModel, LightNetDiTPipeline
from lightnet.layers import rename_legacy_keys

from tests._legacy_files import DIT_CONFIG_JSON, DIT_KEYS


@contextmanager
def records():
    """Log records of ``lightnet`` (INFO and up) and ``diffusers`` (WARNING and up), and Python warnings as errors."""
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    handler = Keep()
    loggers = [(logging.getLogger("lightnet"), logging.INFO), (logging.getLogger("diffusers"), logging.WARNING)]
    saved = [(lg, lg.level) for lg, _ in loggers]
    for lg, level in loggers:
        lg.addHandler(handler)
        lg.setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield got
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)


def old_folder(tmp_path):
    """A model folder as the old version wrote it: its ``config.json`` verbatim, weights of that architecture."""
    old = json.loads(DIT_CONFIG_JSON)
    init = {k: v for k, v in rename_legacy_keys(old, "test").items() if not k.startswith("_")}
    torch.manual_seed(0)
    model = LightNetDiTModel(**init)
    model.save_pretrained(tmp_path / "dit")
    (tmp_path / "dit" / "config.json").write_text(DIT_CONFIG_JSON)
    return model, tmp_path / "dit"


def test_old_dit_config_loads_with_a_logged_rename(tmp_path):
    model, folder = old_folder(tmp_path)
    assert list(model.state_dict()) == DIT_KEYS  # the old checkpoint's keys
    with records() as got:
        loaded = LightNetDiTModel.from_pretrained(folder)
    assert loaded.config.attn_backend == "torch" and "attention_backend" not in loaded.config
    assert loaded.config.tpe_num_decays == 2
    assert all(b.attn.backend == "torch" for b in loaded.transformer_blocks)
    levels = {r.name: r.levelno for r in got}
    assert not [r for r in got if r.levelno >= logging.WARNING], [r.getMessage() for r in got]
    renames = [r.getMessage() for r in got if r.name == "lightnet.layers.config"]
    assert any("'attention_backend'" in m and "'attn_backend'" in m for m in renames), levels
    h = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(h, timestep=3).sample, model(h, timestep=3).sample)
    # saved again: the new name only
    loaded.save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert saved["attn_backend"] == "torch" and "attention_backend" not in saved


def test_old_config_through_from_config_and_a_saved_pipeline(tmp_path):
    _, folder = old_folder(tmp_path)
    with records() as got:
        m = LightNetDiTModel.from_config(json.loads(DIT_CONFIG_JSON))
    assert m.config.attn_backend == "torch" and not [r for r in got if r.levelno >= logging.WARNING]
    pipe = LightNetDiTPipeline(LightNetDiTModel.from_pretrained(folder), DDIMScheduler(num_train_timesteps=20))
    pipe.save_pretrained(tmp_path / "pipe")
    (tmp_path / "pipe" / "transformer" / "config.json").write_text(DIT_CONFIG_JSON)
    with records() as got:
        loaded = LightNetDiTPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.transformer.config.attn_backend == "torch"
    assert not [r for r in got if r.levelno >= logging.WARNING], [r.getMessage() for r in got]
    loaded.set_progress_bar_config(disable=True)
    assert loaded([0], num_inference_steps=2, output_type="pt").images.shape == (1, 1, 8, 8)
