"""The shared mixer options (``MixerConfig``), the one table of renamed keys, the kernels' query activation, and
``DropPath`` against timm's."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

import lightnet.layers.mixer as mixer_module
from lightnet.layers import (
    LEGACY_NAMES,
    DropPath,
    LightNetAttention,
    LightNetBlock,
    MixerConfig,
    rename_legacy_keys,
)

NON_DEFAULT = dict(qkv_bias=True, use_lrpe=False, lrpe_base=500.0, q_act="relu", scale="sqrt", gate_rank=4,
                   gate_act="silu", out_norm=False, attn_backend="torch", attn_recompute_output="always")


def mixer_settings(attn: LightNetAttention) -> dict:
    """The MixerConfig fields as a built mixer holds them."""
    return dict(qkv_bias=attn.qkv.bias is not None, use_lrpe=attn.lrpe is not None,
                lrpe_base=None if attn.lrpe is None else attn.lrpe.base, q_act=attn.q_act, scale=attn.scale,
                gate_rank=0 if attn.gate is None else attn.gate[0].out_features, gate_act=attn.gate_act,
                out_norm=not isinstance(attn.out_norm, torch.nn.Identity), attn_backend=attn.backend,
                attn_recompute_output=attn.recompute_output)


def test_mixer_config_builds_what_the_keywords_build():
    assert set(NON_DEFAULT) == set(MixerConfig.field_names())
    cfg = MixerConfig(**NON_DEFAULT)
    torch.manual_seed(0)
    built = cfg.build(32, 2, causal=True, num_axes=1, proj_drop=0.1)
    torch.manual_seed(0)
    direct = LightNetAttention(32, 2, causal=True, num_axes=1, proj_drop=0.1, **cfg.attention_kwargs())
    assert mixer_settings(built) == mixer_settings(direct)
    assert mixer_settings(built)["scale"] == 16 ** -0.5 and built.causal and built.proj_drop.p == 0.1
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), direct.state_dict().values()))
    # the defaults are LightNetAttention's
    assert mixer_settings(MixerConfig().build(32, 2)) == mixer_settings(LightNetAttention(32, 2))
    with pytest.raises(Exception):  # frozen
        cfg.q_act = "silu"


def test_block_takes_a_mixer_config():
    cfg = MixerConfig(**NON_DEFAULT)
    torch.manual_seed(0)
    a = LightNetBlock(32, 2, mixer=cfg, num_axes=2)
    torch.manual_seed(0)
    b = LightNetBlock(32, 2, num_axes=2, **cfg.attention_kwargs())
    assert mixer_settings(a.attn) == mixer_settings(b.attn) and a.attn.num_axes == 2
    assert list(a.state_dict()) == list(b.state_dict())
    with pytest.raises(TypeError):
        LightNetBlock(32, 2, mixer=cfg, q_act="silu")  # an option twice: in the config and as a keyword


def test_mixer_config_pick_and_errors():
    cfg = MixerConfig.pick({"q_act": "elu1", "gate_rank": 0, "hidden_size": 64, "use_tpe": False})
    assert cfg == MixerConfig(q_act="elu1", gate_rank=0)
    for field, bad in (("q_act", "tanh"), ("gate_act", "relu"), ("attn_backend", "cuda"),
                       ("attn_recompute_output", True), ("scale", "bad")):
        with pytest.raises(ValueError, match=field):
            MixerConfig(**{field: bad})


def test_legacy_names_are_renamed_once_and_logged(caplog):
    assert LEGACY_NAMES == {"tpe_decays": "tpe_num_decays", "attention_backend": "attn_backend",
                            "backend": "attn_backend"}
    old = {"depth": 2, "tpe_decays": 3, "attention_backend": "torch"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.INFO, logger="lightnet.layers.config"):
            new = rename_legacy_keys(old, "test loader")
    assert new == {"depth": 2, "tpe_num_decays": 3, "attn_backend": "torch"} and list(new) == list(
        {"depth": 0, "tpe_num_decays": 0, "attn_backend": 0})  # same positions
    assert old == {"depth": 2, "tpe_decays": 3, "attention_backend": "torch"}  # the input is not changed
    messages = [r.getMessage() for r in caplog.records]
    assert any("test loader" in m and "'tpe_decays'" in m and "'tpe_num_decays'" in m for m in messages), messages
    assert all(r.levelno == logging.INFO for r in caplog.records)
    assert rename_legacy_keys({"backend": "torch", "attn_backend": "torch"}, "x") == {"attn_backend": "torch"}
    with pytest.raises(ValueError, match="backend.*attn_backend"):
        rename_legacy_keys({"backend": "torch", "attn_backend": "triton"}, "x")


@pytest.mark.parametrize("q_act, kernel_act", [("silu", "silu"), ("relu", None), ("identity", None)])
def test_silu_queries_are_activated_by_the_kernels(monkeypatch, q_act, kernel_act):
    """``q_act='silu'`` hands the raw queries to the kernels with ``q_activation='silu'`` (no activated copy); other
    activations are applied before the call."""
    calls = []
    real = mixer_module.additive_attention

    def spy(q, k, v, **kw):
        calls.append((q.detach().clone(), kw["q_activation"]))
        return real(q, k, v, **kw)

    monkeypatch.setattr(mixer_module, "additive_attention", spy)
    torch.manual_seed(0)
    attn = LightNetAttention(16, 2, q_act=q_act, use_lrpe=False)
    x = torch.randn(2, 5, 16)
    attn(x)
    (q_seen, act_seen), = calls
    raw = attn.qkv(x).view(2, 5, 3, 2, 8)[:, :, 0]
    assert act_seen == kernel_act
    expected = raw if q_act in ("silu", "identity") else torch.relu(raw)
    assert torch.allclose(q_seen, expected)
    with pytest.raises(TypeError):
        LightNetAttention(16, 2, fuse_q_act=False)  # the switch is gone


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_drop_path_matches_timm(p, scale_by_keep):
    from timm.layers import DropPath as TimmDropPath

    ours, theirs = DropPath(p, scale_by_keep), TimmDropPath(p, scale_by_keep)
    x = torch.randn(6, 4, 5)
    for training in (True, False):
        ours.train(training), theirs.train(training)
        torch.manual_seed(3)
        a = ours(x)
        torch.manual_seed(3)
        b = theirs(x)
        assert torch.equal(a, b)
    assert repr(ours) == repr(theirs) and not list(ours.state_dict())
