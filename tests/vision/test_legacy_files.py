"""timm checkpoints and configs written by lightnet 0.1.0 still load: the state-dict keys are unchanged, and the
renamed keyword ``tpe_decays`` (now ``tpe_num_decays``) in a timm hub ``config.json``'s ``model_args`` (or a training
recipe's ``model_kwargs``) is renamed in one place, logged at INFO, with no warning."""
from __future__ import annotations

import json
import logging
import warnings

import timm
import torch
from timm.models import save_for_hf

import lightnet  # noqa: F401  (registers the timm models)

from tests._legacy_files import TIMM_BLOCK_KEYS, TIMM_TEST_LIGHTNET_KEYS


def test_state_dict_keys_are_those_of_the_old_version():
    keys = list(timm.create_model("test_lightnet").state_dict())
    blocks = [k for k in keys if k.startswith("blocks.")]
    assert [k for k in keys if not k.startswith("blocks.")] == TIMM_TEST_LIGHTNET_KEYS
    assert blocks == [f"blocks.{i}.{k}" for i in range(4) for k in TIMM_BLOCK_KEYS]


def test_old_keyword_in_a_hub_config_loads_with_a_logged_rename(tmp_path, caplog):
    torch.manual_seed(0)
    model = timm.create_model("test_lightnet", num_classes=7, tpe_num_decays=2).eval()
    save_for_hf(model, str(tmp_path / "hub"), safe_serialization=True)
    cfg_path = tmp_path / "hub" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    args = cfg["model_args"]
    args["tpe_decays"] = args.pop("tpe_num_decays")  # as the old version's argument name was saved
    cfg_path.write_text(json.dumps(cfg))
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="lightnet"):
        warnings.simplefilter("error")
        loaded = timm.create_model(f"local-dir:{tmp_path / 'hub'}", pretrained=True).eval()
    assert loaded.tpe.axes[0].fwd_logit.shape[1] == 2
    assert any("'tpe_decays'" in r.getMessage() and "'tpe_num_decays'" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # the keyword itself, as a saved training recipe's model_kwargs passes it
    assert timm.create_model("test_lightnet", tpe_decays=3).tpe.axes[0].fwd_logit.shape[1] == 3
