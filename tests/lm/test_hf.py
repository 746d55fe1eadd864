"""Hugging Face ``transformers`` integration (``lightnet.lm.hf``): config, forward, loss, cache, generate, save/load.

Small models on the CPU. ``transformers`` is in the ``dev`` extra, so these tests run in CI (not skipped).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from lightnet.lm import LightNetCache, LightNetForCausalLM, LightNetForMaskedLM, LightNetLMConfig, left_pad

# not importorskip: transformers is in the dev extra, and a missing install must fail loudly, not skip
import lightnet.lm.hf as H  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM  # noqa: E402

SMALL = dict(dim=32, depth=2, num_heads=2, attn_backend="torch")


def _causal(seed: int = 0, **kw) -> "H.LightNetHFForCausalLM":
    torch.manual_seed(seed)
    return H.LightNetHFForCausalLM(LightNetLMConfig(**{**SMALL, **kw})).eval()


def _ids(B: int = 2, N: int = 12, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, N), generator=g)


# ---------------------------------------------------------------------------------------------------- import / config
def test_plain_api_works_without_transformers_and_hf_import_error_is_clear():
    code = textwrap.dedent(
        """
        import sys
        import lightnet, lightnet.lm
        assert "transformers" not in sys.modules, "lightnet.lm imported transformers"
        sys.modules["transformers"] = None  # behave as if it were not installed
        from lightnet.lm import LightNetForCausalLM, LightNetLMConfig
        m = LightNetForCausalLM(LightNetLMConfig(dim=16, depth=1, num_heads=2, attn_backend="torch"))
        assert m.generate([[257, 1, 2]], max_new_tokens=2).shape == (1, 5)
        try:
            import lightnet.lm.hf
        except ImportError as e:
            assert 'pip install "lightnet-yoso[hf]"' in str(e), str(e)
            print("OK")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("OK")


def test_config_conversion_round_trip_and_auto_config(tmp_path):
    cfg = LightNetLMConfig(dim=48, depth=3, num_heads=3, mlp_ratio=2.0, use_lrpe=False, gate_rank=0, norm="layernorm",
                           tie_word_embeddings=False, num_labels=3, scale="sqrt", extra={"note": "x"})
    hc = H.LightNetHFConfig.from_lightnet_config(cfg)
    assert hc.model_type == "lightnet-yoso" and hc.dim == 48 and hc.num_labels == 3
    assert hc.to_lightnet_config() == cfg
    hc.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "lightnet-yoso" and saved["dim"] == 48
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is H.LightNetHFConfig
    assert loaded.to_lightnet_config() == cfg
    assert type(AutoConfig.for_model("lightnet-yoso")) is H.LightNetHFConfig
    assert H.LightNetHFConfig().to_lightnet_config() == LightNetLMConfig()  # same defaults
    assert loaded == hc and H.LightNetHFConfig(**SMALL) != H.LightNetHFConfig(**{**SMALL, "dim": 64})


def test_config_unknown_keys_and_bad_values_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown config key.*'num_haeds' \\(did you mean 'num_heads'\\?\\)"):
        H.LightNetHFConfig(num_haeds=4)
    with pytest.raises(ValueError, match="not divisible"):
        H.LightNetHFConfig(dim=30, num_heads=4)
    # a typo in a saved config.json is reported when loading through AutoConfig as well
    H.LightNetHFConfig(**SMALL).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["dpeth"] = 3
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'dpeth' \\(did you mean 'depth'\\?\\)"):
        AutoConfig.from_pretrained(tmp_path)


def test_register_is_idempotent_and_auto_classes_resolve():
    H.register()
    H.register()
    cfg = H.LightNetHFConfig(**SMALL)
    assert type(AutoModelForCausalLM.from_config(cfg)) is H.LightNetHFForCausalLM
    assert type(AutoModelForMaskedLM.from_config(H.LightNetHFConfig(**SMALL, causal=False))) is H.LightNetHFForMaskedLM


# ---------------------------------------------------------------------------------------------------- forward / loss
def test_logits_equal_plain_model_and_same_init():
    torch.manual_seed(0)
    plain = LightNetForCausalLM(LightNetLMConfig(**SMALL)).eval()
    hf = _causal(seed=0)  # same seed → same weights: post_init does not re-initialise LightNet's own init
    for (k, a), b in zip(plain.state_dict().items(), hf.lightnet.state_dict().values()):
        assert torch.equal(a, b), k
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding in row 1
    out = hf(ids, attention_mask=mask)
    ref = plain(ids, mask)
    assert out.logits.shape == (2, 12, 260)
    assert torch.equal(out.logits, ref.logits)
    assert out.past_key_values is None  # use_cache defaults to False outside generate
    assert hf.get_input_embeddings() is hf.lightnet.model.embed
    assert hf.get_output_embeddings().weight is hf.get_input_embeddings().weight  # tied like the plain model
    wrapped = H.LightNetHFForCausalLM.from_lightnet(plain)
    assert wrapped.lightnet is plain and torch.equal(wrapped(ids).logits, plain(ids).logits)


def test_loss_is_shifted_cross_entropy_like_hf():
    hf = _causal()
    ids = _ids(N=10)
    labels = ids.clone()
    labels[0, :3] = -100
    labels[1, 7] = -100
    out = hf(ids, labels=labels)
    manual = F.cross_entropy(out.logits[:, :-1].reshape(-1, 260).double(), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert abs(out.loss.item() - manual.item()) / manual.item() < 1e-6
    n_items = int((labels[:, 1:] != -100).sum())
    out_sum = hf(ids, labels=labels, num_items_in_batch=torch.tensor(n_items * 2))
    assert abs(out_sum.loss.item() - manual.item() / 2) / manual.item() < 1e-6
    out.loss.backward()
    g = hf.lightnet.model.blocks[0].attn.qkv.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    tup = hf(ids, labels=labels, return_dict=False)
    assert torch.equal(tup[0], out.loss) and torch.equal(tup[1], out.logits)
    bad = labels.clone()
    bad[0, 5] = 999  # outside the 260-token vocabulary: the same clear error with and without num_items_in_batch
    for kwargs in ({}, {"num_items_in_batch": n_items}):
        with pytest.raises(ValueError, match="labels contain id 999, outside the vocabulary"):
            hf(ids, labels=bad, **kwargs)


def test_logits_to_keep_and_unsupported_arguments():
    hf = _causal()
    ids = _ids()
    full = hf(ids).logits
    # the head runs on the last position only: the same logits up to float rounding (a [B, 1, C] product may take
    # another BLAS kernel than the [B, N, C] one, so bitwise equality is not promised)
    kept = hf(ids, logits_to_keep=1).logits
    assert kept.shape == (ids.shape[0], 1, full.shape[-1])
    torch.testing.assert_close(kept, full[:, -1:], rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="output_attentions"):
        hf(ids, output_attentions=True)
    with pytest.raises(NotImplementedError, match="inputs_embeds"):
        hf(ids, inputs_embeds=torch.zeros(2, 12, 32))


def test_cache_continuation_matches_full_forward():
    hf = _causal()
    ids = _ids(N=16)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    full = hf(ids, attention_mask=mask).logits
    first = hf(ids[:, :9], attention_mask=mask[:, :9], use_cache=True)
    cache = first.past_key_values
    assert isinstance(cache, LightNetCache) and cache.seen_tokens == 9 and cache.get_seq_length() == 9
    size = cache.memory_bytes()
    # the HF-style history mask [B, 16] is accepted together with the cache (only the new columns are used)
    second = hf(ids[:, 9:], attention_mask=mask, past_key_values=cache, use_cache=True)
    assert second.past_key_values.memory_bytes() == size  # constant-size state
    got = torch.cat([first.logits, second.logits], dim=1)
    assert ((got - full).abs().max() / full.abs().max()).item() < 1e-5
    with pytest.raises(TypeError, match="LightNetCache"):
        hf(ids[:, 9:], past_key_values=((torch.zeros(1),),), use_cache=True)
    with pytest.raises(ValueError, match="only accepted together with past_key_values"):
        hf(ids[:, 9:], attention_mask=mask)
    # the same state under the name later transformers releases use (`cache=`); both names at once is refused
    again = hf(ids[:, :9], attention_mask=mask[:, :9], use_cache=True).past_key_values
    third = hf(ids[:, 9:], attention_mask=mask, cache=again, use_cache=True)
    assert torch.equal(third.logits, second.logits)
    other = hf(ids[:, :9], attention_mask=mask[:, :9], use_cache=True).past_key_values
    with pytest.raises(ValueError, match="not both"):
        hf(ids[:, 9:], past_key_values=other, cache=again, use_cache=True)


# ---------------------------------------------------------------------------------------------------- generate
def test_hf_greedy_generate_equals_lightnet_generate_equal_lengths():
    hf = _causal()
    ids = _ids(N=8)
    ours = hf.lightnet.generate(ids, max_new_tokens=10, eos_token_id=hf.config.eos_token_id)
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False)
    assert theirs.shape == (2, 18)
    assert torch.equal(theirs, ours)
    # without a cache (full recomputation every step) HF generate gives the same tokens
    assert torch.equal(hf.generate(ids, max_new_tokens=10, do_sample=False, use_cache=False), ours)


def test_hf_greedy_generate_left_padding_equals_rows_alone():
    hf = _causal(seed=3)
    prompts = [[257, 10, 20, 30, 40, 50, 60], [257, 7, 8]]
    ids, mask = left_pad(prompts, pad_token_id=256)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    ours = hf.lightnet.generate(prompts, max_new_tokens=8, eos_token_id=258)
    assert torch.equal(theirs, ours)
    for i, p in enumerate(prompts):  # each row generates what it generates alone
        alone = hf.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False)
        assert torch.equal(alone[0, len(p):], theirs[i, ids.shape[1]:])


def test_hf_generate_stops_at_eos_like_lightnet_generate():
    hf = _causal(seed=5)
    ids = _ids(N=6)
    free = hf.lightnet.generate(ids, max_new_tokens=6)
    stop = int(free[0, 8])  # the 3rd token row 0 emits becomes the stop token
    ours = hf.lightnet.generate(ids, max_new_tokens=6, eos_token_id=stop)
    theirs = hf.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=stop)
    assert torch.equal(theirs, ours)
    assert (ours[0, 9:] == hf.config.pad_token_id).all()  # finished row padded


@pytest.mark.skipif(int(transformers.__version__.split(".")[0]) < 5, reason="needs transformers 5 (CI installs it)")
def test_hf_generate_continues_from_a_user_cache():
    hf = _causal(seed=7)
    ids = _ids(N=9)
    plain = hf.generate(ids, max_new_tokens=5, do_sample=False)
    cache = hf(ids[:, :6], use_cache=True).past_key_values  # holds the first 6 prompt tokens
    assert torch.equal(hf.generate(ids, past_key_values=cache, max_new_tokens=5, do_sample=False), plain)


def test_hf_generate_logs_no_cache_deprecation():
    """generate (greedy, beam search) and forward use the installed transformers' name for the state (``cache`` in
    later 5.x), so transformers logs no ``past_key_values/cache_params are deprecated`` message."""
    import logging

    from transformers.utils import logging as hf_logging

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    hf_logger = hf_logging.get_logger("transformers")
    hf_logger.addHandler(handler)
    hf_logging.warning_once.cache_clear()  # a message logged once earlier in the session would be suppressed
    try:
        hf = _causal(seed=3)
        ids = _ids(N=5)
        hf.generate(ids, max_new_tokens=3, do_sample=False)
        hf.generate(ids, max_new_tokens=3, num_beams=2, do_sample=False)
        out = hf(ids, use_cache=True)
        assert isinstance(getattr(out, H._CACHE_FIELD), H.LightNetHFCache)
    finally:
        hf_logger.removeHandler(handler)
    assert not [r for r in records if "deprecated" in r], records


def test_beam_search_reorders_the_recurrent_state():
    hf = _causal(seed=2)
    ids = _ids(N=7)
    with_cache = hf.generate(ids, max_new_tokens=6, num_beams=3, do_sample=False)
    recompute = hf.generate(ids, max_new_tokens=6, num_beams=3, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, recompute)
    torch.manual_seed(0)
    sampled = hf.generate(ids, max_new_tokens=5, do_sample=True, top_k=5)
    assert sampled.shape == (2, 12) and torch.equal(sampled[:, :7], ids)


# ---------------------------------------------------------------------------------------------------- save / load
def test_save_pretrained_auto_model_round_trip(tmp_path):
    hf = _causal(seed=4)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is H.LightNetHFForCausalLM
    assert loaded.lightnet.lm_head.weight is loaded.lightnet.model.embed.weight  # still tied
    ids = _ids()
    assert torch.equal(loaded(ids).logits, hf(ids).logits)
    assert torch.equal(loaded.generate(ids, max_new_tokens=5, do_sample=False),
                       hf.generate(ids, max_new_tokens=5, do_sample=False))
    freqs = [b.attn.lrpe.freqs for b in loaded.lightnet.model.blocks]  # non-persistent tables rebuilt after meta init
    assert all(torch.equal(f, b.attn.lrpe.freqs) for f, b in zip(freqs, hf.lightnet.model.blocks))


def test_missing_keys_get_lightnet_init(tmp_path):
    hf = _causal(seed=6, dim=64)
    hf.save_pretrained(tmp_path)
    untied = H.LightNetHFForCausalLM.from_pretrained(tmp_path, tie_word_embeddings=False)
    head = untied.lightnet.lm_head.weight
    assert head is not untied.lightnet.model.embed.weight
    assert head.device.type == "cpu" and torch.isfinite(head).all()
    assert abs(head.std().item() - 0.02) < 0.003  # LightNet's init (normal, init_std), not garbage
    assert torch.equal(untied.lightnet.model.embed.weight, hf.lightnet.model.embed.weight)


def test_masked_lm_wrapper(tmp_path):
    torch.manual_seed(0)
    mlm = H.LightNetHFForMaskedLM(LightNetLMConfig(**SMALL, causal=False)).eval()
    assert isinstance(mlm.lightnet, LightNetForMaskedLM)
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    labels = torch.full_like(ids, -100)
    labels[:, 4] = ids[:, 4]
    out = mlm(ids, attention_mask=mask, labels=labels)
    ref = mlm.lightnet(ids, mask, labels=labels)
    assert torch.equal(out.logits, ref.logits)
    manual = F.cross_entropy(out.logits[:, 4].double(), ids[:, 4])
    assert abs(out.loss.item() - manual.item()) / manual.item() < 1e-6
    mlm.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is H.LightNetHFForMaskedLM
    assert torch.equal(loaded(ids, attention_mask=mask).logits, out.logits)
    with pytest.raises(ValueError, match="causal=True"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_from_lightnet_shares_parameters_and_checks_type():
    plain = LightNetForCausalLM(LightNetLMConfig(**SMALL))
    hf = H.LightNetHFForCausalLM.from_lightnet(plain)
    assert hf.lightnet is plain and hf.to_lightnet() is plain
    assert hf.config.to_lightnet_config() == plain.config
    with pytest.raises(TypeError, match="wraps a LightNetForCausalLM"):
        H.LightNetHFForCausalLM(plain.config, model=LightNetForMaskedLM(LightNetLMConfig(**SMALL, causal=False)))


def test_trainer_runs_and_checkpoint_reloads(tmp_path):
    from transformers import Trainer, TrainingArguments

    hf = _causal(seed=8)
    before = hf.lightnet.model.blocks[0].attn.qkv.weight.detach().clone()
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 256, (32, 16), generator=g)]
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=8, gradient_accumulation_steps=2, max_steps=4,
                             learning_rate=1e-3, save_steps=4, report_to=[], use_cpu=True, logging_steps=2)
    result = Trainer(model=hf, args=args, train_dataset=data).train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(hf.lightnet.model.blocks[0].attn.qkv.weight, before)  # trained
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint-4").eval()
    ids = _ids()
    assert torch.equal(loaded(ids).logits, hf.eval()(ids).logits)
