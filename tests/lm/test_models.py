"""LightNet language models: recurrent == parallel, left padding, generation, save/load, bad input."""
from __future__ import annotations

import json

import pytest
import torch

from lightnet.lm import (
    ByteTokenizer,
    LightNetCache,
    LightNetForCausalLM,
    LightNetForMaskedLM,
    LightNetForSequenceClassification,
    LightNetLMConfig,
    encode_text,
    left_pad,
    sample_next_token,
)


def tiny_config(**kw) -> LightNetLMConfig:
    base = dict(dim=32, depth=2, num_heads=2, tpe_num_decays=2, attn_backend="torch")
    base.update(kw)
    return LightNetLMConfig(**base)


@pytest.fixture(scope="module")
def causal_lm() -> LightNetForCausalLM:
    torch.manual_seed(0)
    model = LightNetForCausalLM(tiny_config()).eval()
    # larger TPE weights than the near-identity init, so the test exercises the TPE state too
    with torch.no_grad():
        for p in model.model.tpe.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def _max_state_diff(a: LightNetCache, b: LightNetCache) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a.tensors(), b.tensors()))


# ---------------------------------------------------------------- recurrent == parallel
def test_prefill_plus_decode_matches_full_forward(causal_lm):
    torch.manual_seed(1)
    ids = torch.randint(0, 256, (2, 75))
    with torch.no_grad():
        full = causal_lm(ids, use_cache=True)
    # prefill in uneven chunks (chunk boundaries inside the kernel's own 32-token chunks), then token by token
    logits, cache = causal_lm.prefill(ids[:, :50], chunk_size=19)
    torch.testing.assert_close(logits, full.logits[:, 49].float(), rtol=1e-4, atol=1e-4)
    for t in range(50, 75):
        logits, cache = causal_lm.decode_step(ids[:, t], cache)
        torch.testing.assert_close(logits, full.logits[:, t].float(), rtol=1e-4, atol=1e-4)
    assert cache.seen_tokens == 75 == full.cache.seen_tokens
    assert _max_state_diff(cache, full.cache) < 1e-4


def test_cache_size_is_constant_in_context_length(causal_lm):
    ids = torch.randint(0, 256, (1, 200))
    _, short = causal_lm.prefill(ids[:, :10])
    _, long = causal_lm.prefill(ids)
    assert short.memory_bytes() == long.memory_bytes() > 0
    D = causal_lm.config.dim // causal_lm.config.num_heads
    S, z = long.layer_states[0]
    assert tuple(S.shape) == (1, causal_lm.config.num_heads, 2 * D, D)  # LRPE doubles the key width
    assert tuple(z.shape) == (1, causal_lm.config.num_heads, D)


def test_bidirectional_model_refuses_cache():
    model = LightNetForMaskedLM(tiny_config(causal=False))
    with pytest.raises(ValueError, match="causal"):
        model.model(torch.randint(0, 256, (1, 8)), use_cache=True)


# ---------------------------------------------------------------- padding
def test_left_padding_equals_rows_alone(causal_lm):
    torch.manual_seed(2)
    prompts = [torch.randint(0, 256, (n,)).tolist() for n in (23, 5, 1, 36)]
    ids, mask = left_pad(prompts, pad_token_id=causal_lm.config.pad_token_id)
    with torch.no_grad():
        batch_logits = causal_lm(ids, mask).logits
        for i, p in enumerate(prompts):
            alone = causal_lm(torch.tensor([p])).logits[0]
            torch.testing.assert_close(batch_logits[i, -len(p):], alone, rtol=1e-4, atol=1e-4)
    # segmented prefill where the short rows' first segments are all padding
    last, _ = causal_lm.prefill(ids, mask, chunk_size=8)
    torch.testing.assert_close(last, batch_logits[:, -1].float(), rtol=1e-4, atol=1e-4)
    out = causal_lm.generate(prompts, max_new_tokens=8)
    assert out.shape == (4, 36 + 8)
    for i, p in enumerate(prompts):
        alone = causal_lm.generate([p], max_new_tokens=8)
        assert out[i, -8:].tolist() == alone[0, -8:].tolist()


def test_padding_tokens_do_not_change_real_outputs(causal_lm):
    """Whatever ids sit under the padding, the outputs at real positions are the same (TPE input is zeroed)."""
    ids, mask = left_pad([[5, 6, 7, 8], [9, 10]], pad_token_id=256)
    other = ids.clone()
    other[1, :2] = torch.tensor([100, 200])
    with torch.no_grad():
        a = causal_lm(ids, mask).logits
        b = causal_lm(other, mask).logits
    torch.testing.assert_close(a[1, 2:], b[1, 2:])


def test_mlm_right_padding_equals_unpadded():
    torch.manual_seed(3)
    model = LightNetForMaskedLM(tiny_config(causal=False)).eval()
    with torch.no_grad():
        for p in model.model.tpe.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    row = torch.randint(0, 256, (1, 9))
    padded = torch.cat([row, torch.full((1, 4), 256)], dim=1)
    mask = torch.cat([torch.ones(1, 9), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        a = model(row).logits
        b = model(padded, mask).logits
    torch.testing.assert_close(b[:, :9], a, rtol=1e-4, atol=1e-4)


def test_mlm_is_bidirectional():
    torch.manual_seed(4)
    model = LightNetForMaskedLM(tiny_config(causal=False)).eval()
    ids = torch.randint(0, 256, (1, 12))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 256
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-5  # the first position sees the last token


# ---------------------------------------------------------------- generation
def test_generate_sampling_is_deterministic_with_seed(causal_lm):
    prompts = [[257, 72, 105], [257, 65]]
    kw = dict(max_new_tokens=8, do_sample=True, temperature=0.9, top_k=50, top_p=0.9)
    a = causal_lm.generate(prompts, seed=123, **kw)
    b = causal_lm.generate(prompts, seed=123, **kw)
    g = torch.Generator().manual_seed(123)
    c = causal_lm.generate(prompts, generator=g, **kw)
    assert torch.equal(a, b) and torch.equal(a, c)
    others = [causal_lm.generate(prompts, seed=s, **kw) for s in (1, 2)]
    assert any(not torch.equal(a, o) for o in others)


def test_generate_stops_at_eos_and_pads(causal_lm):
    prompt = [[257, 1, 2, 3]]
    greedy = causal_lm.generate(prompt, max_new_tokens=6)
    first = int(greedy[0, 4])
    stopped = causal_lm.generate(prompt, max_new_tokens=6, eos_token_id=first)
    assert stopped.shape[1] == 5 and int(stopped[0, 4]) == first  # ended right after the stop token
    # two rows: the finished one is padded while the other continues
    two = causal_lm.generate([[257, 1, 2, 3], [257, 9]], max_new_tokens=6, eos_token_id=first)
    row0 = two[0, 4:].tolist()
    assert row0[0] == first and all(t == causal_lm.config.pad_token_id for t in row0[1:])


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next_token(logits, True, top_k=2, generator=g)) for _ in range(200)}
    assert draws == {0, 1}
    # p(0)≈0.72, p(1)≈0.26: top_p=0.5 keeps only token 0, top_p=0.9 keeps tokens 0 and 1
    assert {int(sample_next_token(logits, True, top_p=0.5, generator=g)) for _ in range(100)} == {0}
    assert {int(sample_next_token(logits, True, top_p=0.9, generator=g)) for _ in range(300)} == {0, 1}
    assert int(sample_next_token(logits)) == 0


def test_long_prompt_chunked_prefill(causal_lm):
    ids = torch.randint(0, 256, (1, 600))
    a, _ = causal_lm.prefill(ids, chunk_size=128)
    b, _ = causal_lm.prefill(ids, chunk_size=None)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    out = causal_lm.generate(ids, max_new_tokens=3, prefill_chunk_size=256)
    assert out.shape == (1, 603)


# ---------------------------------------------------------------- save / load, config
@pytest.mark.parametrize("cls,causal", [(LightNetForCausalLM, True), (LightNetForMaskedLM, False),
                                        (LightNetForSequenceClassification, False)])
def test_save_load_round_trip(tmp_path, cls, causal):
    torch.manual_seed(5)
    model = cls(tiny_config(causal=causal, num_labels=3)).eval()
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "lightnet_yoso" and cfg["architectures"] == [cls.__name__]
    loaded = cls.from_pretrained(tmp_path / "m").eval()
    ids = torch.randint(0, 256, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    if model.config.tie_word_embeddings and hasattr(loaded, "lm_head"):
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed.weight.data_ptr()


def test_mlm_checkpoint_initialises_classifier(tmp_path):
    torch.manual_seed(6)
    mlm = LightNetForMaskedLM(tiny_config(causal=False))
    mlm.save_pretrained(tmp_path)
    clf = LightNetForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    torch.testing.assert_close(clf.model.embed.weight, mlm.model.embed.weight)
    out = clf(torch.randint(0, 256, (3, 10)), labels=torch.tensor([0, 1, 3]))
    assert out.logits.shape == (3, 4) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="does not fit"):
        LightNetForSequenceClassification.from_pretrained(tmp_path, strict=True)


def test_config_json_round_trip_and_unknown_keys(tmp_path):
    cfg = tiny_config(dim=48, num_heads=3)
    path = cfg.save(tmp_path)
    assert LightNetLMConfig.load(path) == cfg
    data = json.loads(path.read_text())
    data["num_haeds"] = 4
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"unknown config key.*'num_haeds'.*did you mean 'num_heads'"):
        LightNetLMConfig.load(tmp_path)
    # the constructor gives the same ValueError as the loaders, not Python's TypeError
    with pytest.raises(ValueError, match=r"unknown config key.*'num_haeds' \(did you mean 'num_heads'\?\)"):
        LightNetLMConfig(num_haeds=2)
    with pytest.raises(ValueError, match="divisible"):
        LightNetLMConfig(dim=30, num_heads=4)


def test_sequence_classification_pooling_ignores_padding():
    torch.manual_seed(7)
    for pooling in ("mean", "last"):
        model = LightNetForSequenceClassification(tiny_config(causal=True, classifier_pooling=pooling)).eval()
        ids, mask = left_pad([[1, 2, 3, 4, 5], [6, 7]], pad_token_id=256)
        with torch.no_grad():
            batch = model(ids, mask).logits
            alone = model(torch.tensor([[6, 7]])).logits
        torch.testing.assert_close(batch[1], alone[0], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- tokenizer
def test_byte_tokenizer_round_trip_and_external_tokenizers():
    tok = ByteTokenizer()
    text = "héllo, wörld — ✓"
    ids = tok.encode(text, add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and max(ids[1:-1]) < 256
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=False).startswith("<bos>")

    class Encoding:  # shaped like a `tokenizers` Encoding
        def __init__(self, ids):
            self.ids = ids

    class Other:
        def encode(self, s):
            return Encoding([ord(c) % 7 for c in s])

    assert encode_text(Other(), "abc") == [ord("a") % 7, ord("b") % 7, ord("c") % 7]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([300])


# ---------------------------------------------------------------- bad input
def test_bad_input_errors(causal_lm):
    with pytest.raises(ValueError, match="token id 260, outside the vocabulary"):
        causal_lm(torch.tensor([[1, 260]]))
    with pytest.raises(ValueError, match="token id -1"):
        causal_lm(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="empty"):
        causal_lm(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        causal_lm.generate([[1, 2], []])
    with pytest.raises(ValueError, match="attention_mask shape"):
        causal_lm(torch.ones(2, 5, dtype=torch.long), torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="left padding"):
        causal_lm.generate(torch.ones(1, 3, dtype=torch.long), torch.tensor([[1, 1, 0]]))
    with pytest.raises(ValueError, match="empty"):
        causal_lm.generate(torch.ones(1, 3, dtype=torch.long), torch.tensor([[0, 0, 0]]))
    with pytest.raises(TypeError, match="integer"):
        causal_lm(torch.ones(1, 3))
    with pytest.raises(ValueError, match="temperature"):
        causal_lm.generate([[1]], do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="causal=False"):
        LightNetForMaskedLM(tiny_config(causal=True))
