"""LightNetDiTModel: diffusers model contract, shapes, errors, save/load, gradient checkpointing."""
from __future__ import annotations

import pytest
import torch

from lightnet.generation import DIT_PRESETS, LightNetDiTModel, list_presets
from lightnet.generation.embeddings import ClassEmbedding

TINY = dict(sample_size=8, patch_size=2, in_channels=4, hidden_size=32, num_layers=2, num_attention_heads=2, num_classes=10)


def tiny_model(**overrides) -> LightNetDiTModel:
    """A tiny model whose zero-initialised adaLN/output layers are randomised, so outputs depend on the input."""
    torch.manual_seed(0)
    model = LightNetDiTModel(**dict(TINY, **overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer.linear" in name:
                p.normal_(0, 0.05)
    return model.eval()


def test_output_shapes_and_learned_sigma():
    model = tiny_model(out_channels=8)
    x = torch.randn(3, 4, 8, 8)
    out = model(x, timestep=torch.tensor([1, 500, 999]), class_labels=torch.tensor([0, 9, 10]))
    assert out.sample.shape == (3, 8, 8, 8)
    assert model.config.out_channels == 8
    assert torch.isfinite(out.sample).all()


def test_out_channels_default_is_recorded_as_int():
    model = LightNetDiTModel(**TINY)
    assert model.config.out_channels == 4  # DiTPipeline computes config.out_channels // 2


@pytest.mark.parametrize("size", [(8, 8), (12, 20)])
def test_other_resolutions(size):
    model = tiny_model()
    x = torch.randn(2, 4, *size)
    out = model(x, timestep=10, class_labels=torch.tensor([1, 2])).sample
    assert out.shape == x.shape


def test_zero_init_gives_zero_output():
    """adaLN-Zero: a freshly initialised model predicts exactly zero."""
    model = LightNetDiTModel(**TINY).eval()
    out = model(torch.randn(2, 4, 8, 8), timestep=3, class_labels=torch.tensor([0, 1])).sample
    assert torch.count_nonzero(out) == 0


def test_conditioning_changes_output():
    model = tiny_model()
    x = torch.randn(2, 4, 8, 8)
    base = model(x, timestep=5, class_labels=torch.tensor([1, 1])).sample
    other_label = model(x, timestep=5, class_labels=torch.tensor([2, 2])).sample
    other_time = model(x, timestep=900, class_labels=torch.tensor([1, 1])).sample
    assert not torch.allclose(base, other_label)
    assert not torch.allclose(base, other_time)


def test_return_dict_false_matches():
    model = tiny_model()
    x = torch.randn(2, 4, 8, 8)
    y = torch.tensor([3, 4])
    (tup,) = model(x, timestep=7, class_labels=y, return_dict=False)
    assert torch.equal(tup, model(x, timestep=7, class_labels=y).sample)


def test_save_load_round_trip_bit_exact(tmp_path):
    model = tiny_model(out_channels=8)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = LightNetDiTModel.from_pretrained(tmp_path).eval()
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(model.config)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    x = torch.randn(2, 4, 8, 8)
    y = torch.tensor([0, 10])
    assert torch.equal(model(x, timestep=9, class_labels=y).sample, loaded(x, timestep=9, class_labels=y).sample)


def test_gradient_checkpointing_equivalence():
    model = tiny_model()
    model.train()
    model.embedding.class_embedder.dropout_prob = 0.0  # deterministic labels for the comparison
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 20])
    y = torch.tensor([1, 2])

    def loss_and_grads():
        model.zero_grad()
        loss = model(x, timestep=t, class_labels=y).sample.pow(2).mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss_a, grads_a = loss_and_grads()
    assert not model.gradient_checkpointing
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    loss_b, grads_b = loss_and_grads()
    assert torch.allclose(loss_a, loss_b, rtol=1e-6, atol=1e-7)
    assert grads_a.keys() == grads_b.keys()
    for n in grads_a:
        assert torch.allclose(grads_a[n], grads_b[n], rtol=1e-4, atol=1e-6), n


def test_every_parameter_gets_a_gradient():
    model = tiny_model()
    model.train()
    model(torch.randn(2, 4, 8, 8), timestep=torch.tensor([1, 2]), class_labels=torch.tensor([0, 1])).sample.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    # the null-class row is only reached through label dropout; the other rows must all be trained
    assert missing == []


def test_class_dropout_uses_null_class():
    emb = ClassEmbedding(num_classes=5, dim=4, dropout_prob=0.5)
    with torch.no_grad():
        emb.embedding_table.weight.copy_(torch.arange(6.0)[:, None].expand(6, 4))
    labels = torch.zeros(4000, dtype=torch.long)
    emb.train()
    torch.manual_seed(0)
    rows = emb(labels)[:, 0]
    assert set(rows.unique().tolist()) == {0.0, 5.0}
    assert 0.45 < (rows == 5.0).float().mean() < 0.55
    emb.eval()
    assert torch.all(emb(labels)[:, 0] == 0.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_states=torch.randn(1, 3, 8, 8)), "in_channels=4"),
        (dict(hidden_states=torch.randn(1, 4, 8, 7)), "not divisible by patch_size"),
        (dict(class_labels=torch.tensor([11])), "out of range"),
        (dict(class_labels=torch.tensor([-1])), "out of range"),
        (dict(timestep=None), "timestep is required"),
        (dict(timestep=torch.tensor([1, 2, 3])), "timestep must be"),
    ],
)
def test_bad_input_errors(kwargs, message):
    model = tiny_model()
    args = dict(hidden_states=torch.randn(1, 4, 8, 8), timestep=1, class_labels=torch.tensor([0]))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        model(**args)


def test_bad_config_errors():
    with pytest.raises(ValueError, match="out_channels"):
        LightNetDiTModel(**dict(TINY, out_channels=5))
    with pytest.raises(ValueError, match="not divisible by num_attention_heads"):
        LightNetDiTModel(**dict(TINY, num_attention_heads=3))
    with pytest.raises(ValueError, match="unknown LightNet-DiT preset"):
        LightNetDiTModel.from_preset("LightNet-DiT-M/2")


def test_presets_mirror_dit_grid():
    assert len(list_presets()) == 12
    assert DIT_PRESETS["LightNet-DiT-XL/2"] == dict(num_layers=28, hidden_size=1152, num_attention_heads=16, patch_size=2)
    assert DIT_PRESETS["LightNet-DiT-B/4"]["hidden_size"] == 768
    model = LightNetDiTModel.from_preset("LightNet-DiT-S/8", in_channels=4, num_classes=10, sample_size=32, learn_sigma=True)
    assert model.config.out_channels == 8 and model.config.patch_size == 8 and len(model.transformer_blocks) == 12
    n_params = sum(p.numel() for p in model.parameters())
    assert 25e6 < n_params < 40e6  # DiT-S is 33M


# ---------------------------------------------------------------------------- diffusers model-tester style checks
# The checks of diffusers' ModelTesterMixin (determinism, from_config, save/load, output shape, gradient
# checkpointing), on tiny_model(): its adaLN / output layers are randomised, so an equality check compares real
# outputs, not the zeros of the adaLN-Zero initialisation.
def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(2, 4, 8, 8, generator=g), timestep=torch.tensor([3, 700]),
                class_labels=torch.tensor([1, 10]))


def test_mixin_checks_use_a_non_zero_model():
    out = tiny_model()(**_inputs()).sample
    assert out.abs().mean() > 1e-3  # a zero-initialised model would make every equality below trivial


def test_mixin_determinism_and_output_shape():
    model = tiny_model()
    with torch.no_grad():
        first, second = model(**_inputs()).sample, model(**_inputs()).sample
    assert first.shape == _inputs()["hidden_states"].shape
    assert torch.equal(first, second)
    assert not torch.equal(first, model(**_inputs(seed=1)).sample)


def test_mixin_from_config_builds_the_same_architecture():
    model = tiny_model(out_channels=8)
    clone = LightNetDiTModel.from_config(model.config).eval()
    assert dict(clone.config) == dict(model.config)
    assert {n: p.shape for n, p in clone.state_dict().items()} == {n: p.shape for n, p in model.state_dict().items()}
    assert clone.load_state_dict(model.state_dict()) is not None
    with torch.no_grad():
        assert torch.equal(clone(**_inputs()).sample, model(**_inputs()).sample)


@pytest.mark.parametrize("safe_serialization", [True, False])
def test_mixin_save_load_round_trip(tmp_path, safe_serialization):
    model = tiny_model()
    model.save_pretrained(tmp_path, safe_serialization=safe_serialization)
    loaded = LightNetDiTModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(**_inputs()).sample, loaded(**_inputs()).sample)


def test_mixin_gradient_checkpointing_matches_in_train_mode_with_dropout_off():
    model = tiny_model().train()
    model.embedding.class_embedder.dropout_prob = 0.0
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.zero_grad()
        model(**_inputs()).sample.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert model.is_gradient_checkpointing
    nonzero = [n for n, g in grads[0].items() if g.abs().max() > 0]
    assert len(nonzero) == len(grads[0])  # randomised adaLN: every parameter has a non-zero gradient
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6, msg=n)
