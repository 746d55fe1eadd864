"""Language-model files written by lightnet 0.1.0 before the option renames still load: the plain ``config.json``
and the transformers ``config.json`` with ``backend`` (now ``attn_backend``), renamed in one place
(``rename_legacy_keys``) with an INFO log and no warning; the weight keys are unchanged."""
from __future__ import annotations

import json
import logging
import warnings

import pytest
import torch
from safetensors.torch import load_file

from lightnet.lm import LightNetForCausalLM, LightNetLMConfig
from lightnet.train.lm import LMTrainConfig, lm_config

from tests._legacy_files import HF_CONFIG_JSON, LM_CONFIG_JSON, LM_KEYS

RENAMED = ("'backend'", "'attn_backend'")


def _renames(caplog) -> list:
    return [r.getMessage() for r in caplog.records if all(w in r.getMessage() for w in RENAMED)]


@pytest.fixture
def old_lm_folder(tmp_path):
    torch.manual_seed(0)
    model = LightNetForCausalLM(LightNetLMConfig(dim=16, depth=1, num_heads=2, attn_backend="torch", tpe_num_decays=2))
    model.save_pretrained(tmp_path / "lm")
    (tmp_path / "lm" / "config.json").write_text(LM_CONFIG_JSON)
    return model, tmp_path / "lm"


def test_old_lm_config_json_loads_with_a_logged_rename(old_lm_folder, caplog):
    model, folder = old_lm_folder
    assert list(model.state_dict()) == LM_KEYS
    assert sorted(load_file(str(folder / "model.safetensors"))) == sorted(LM_KEYS[:-1])  # lm_head: tied, not stored
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="lightnet"):
        warnings.simplefilter("error")
        loaded = LightNetForCausalLM.from_pretrained(folder)
    assert loaded.config.attn_backend == "torch" and _renames(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(b.attn.backend == "torch" for b in loaded.model.blocks)
    ids = torch.randint(0, 256, (1, 6))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    loaded.save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["attn_backend"] == "torch" and "backend" not in saved


def test_old_training_config_model_section_is_renamed(caplog):
    """A run's saved ``config.yaml`` (``--resume``) with ``model.backend``."""
    with caplog.at_level(logging.INFO, logger="lightnet"):
        config = lm_config(LMTrainConfig(model={"dim": 16, "depth": 1, "num_heads": 2, "backend": "torch"}))
    assert config.attn_backend == "torch" and _renames(caplog)


def test_old_transformers_config_json_loads(tmp_path, caplog):
    pytest.importorskip("transformers")
    from transformers import AutoConfig, AutoModelForCausalLM

    from lightnet.lm.hf import LightNetHFConfig, LightNetHFForCausalLM

    torch.manual_seed(0)
    model = LightNetHFForCausalLM(LightNetLMConfig(dim=16, depth=1, num_heads=2, attn_backend="torch",
                                                   tpe_num_decays=2)).eval()
    model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text(HF_CONFIG_JSON)
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="lightnet"):
        warnings.simplefilter("error")
        cfg = AutoConfig.from_pretrained(tmp_path / "hf")
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert isinstance(cfg, LightNetHFConfig) and cfg.attn_backend == "torch" and not hasattr(cfg, "backend")
    assert isinstance(loaded, LightNetHFForCausalLM) and loaded.config.attn_backend == "torch"
    assert _renames(caplog) and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    ids = torch.randint(0, 256, (1, 6))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert cfg.to_lightnet_config() == LightNetLMConfig.from_dict(json.loads(LM_CONFIG_JSON))
    cfg.save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert saved["attn_backend"] == "torch" and "backend" not in saved
