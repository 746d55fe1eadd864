"""The model families cannot drift apart: vision (timm kwargs), DiT (diffusers config) and LM (``LightNetLMConfig``)
name their mixer/block options with the shared names only, with the same defaults as :class:`MixerConfig` and as each
other, and every mixer option a family exposes reaches every block's ``LightNetAttention``."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import timm

import lightnet  # noqa: F401  (registers the timm models)
from lightnet.generation import LightNetDiTModel
from lightnet.layers import LEGACY_NAMES, MixerConfig
from lightnet.lm import LightNetForCausalLM, LightNetLMConfig
from lightnet.vision import LightNet

from tests.layers.test_config import NON_DEFAULT, mixer_settings

#: the names docs/models.md lists (DESIGN.md of issue 23)
SHARED = ("use_tpe", "tpe_num_decays", "use_lrpe", "lrpe_base", "q_act", "scale", "gate_rank", "gate_act", "out_norm",
          "qkv_bias", "norm", "mlp_act", "mlp_ratio", "attn_backend", "attn_recompute_output")


def _signature_defaults(fn) -> dict:
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if n != "self"}


FAMILIES = {
    "vision": _signature_defaults(LightNet.__init__),
    "dit": _signature_defaults(LightNetDiTModel.__init__),
    "lm": {f.name: f.default for f in dataclasses.fields(LightNetLMConfig)},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_no_old_names_and_mixer_defaults_are_mixer_config_defaults(family):
    options = FAMILIES[family]
    assert not set(options) & set(LEGACY_NAMES), family
    defaults = MixerConfig()
    for name in MixerConfig.field_names():
        if name in options:
            assert options[name] == getattr(defaults, name), (family, name)
    assert {"use_lrpe", "lrpe_base", "q_act", "gate_rank", "attn_backend", "mlp_ratio", "use_tpe",
            "tpe_num_decays"} <= set(options), family


def test_shared_block_options_have_one_default():
    for name in SHARED:
        values = {family: options[name] for family, options in FAMILIES.items() if name in options}
        assert len(set(map(repr, values.values()))) <= 1, (name, values)


def _models(options: dict):
    vision = timm.create_model("test_lightnet", img_size=32,
                               **{k: v for k, v in options.items() if k in FAMILIES["vision"]})
    dit = LightNetDiTModel(sample_size=8, patch_size=2, in_channels=1, hidden_size=32, num_layers=2,
                           num_attention_heads=2, num_classes=3, **{k: v for k, v in options.items()
                                                                   if k in FAMILIES["dit"]})
    lm = LightNetForCausalLM(LightNetLMConfig(dim=32, depth=2, num_heads=2, **{k: v for k, v in options.items()
                                                                             if k in FAMILIES["lm"]}))
    return {"vision": [b.attn for b in vision.blocks], "dit": [b.attn for b in dit.transformer_blocks],
            "lm": [b.attn for b in lm.model.blocks]}


def test_every_exposed_mixer_option_reaches_every_block():
    built = _models(NON_DEFAULT)
    for family, attns in built.items():
        exposed = [n for n in MixerConfig.field_names() if n in FAMILIES[family]]
        want = MixerConfig(**{n: NON_DEFAULT[n] for n in exposed})
        for attn in attns:
            got, reference = mixer_settings(attn), mixer_settings(want.build(attn.dim, attn.num_heads))
            assert {n: got[n] for n in exposed} == {n: reference[n] for n in exposed}, family
