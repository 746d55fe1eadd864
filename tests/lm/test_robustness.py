"""Bad input to the language-model APIs (the models, ``generate``, the byte tokenizer, the config) and untrusted files
through ``from_pretrained``. Each case gets an error naming the problem, or a correct result; code in a file never
runs."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
from safetensors.torch import save_file

from lightnet.generation import LightNetDiTModel
from lightnet.lm import (
    ByteTokenizer,
    LightNetForCausalLM,
    LightNetForMaskedLM,
    LightNetForSequenceClassification,
    LightNetLMConfig,
)

from tests._assertions import raises
from tests._untrusted_files import evil_torch_file, truncate


# ----------------------------------------------------------------------------------------------- language models
@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return LightNetForCausalLM(LightNetLMConfig(dim=16, depth=1, num_heads=2)).eval()


def test_lm_wrong_ids_and_masks(lm):
    ids = torch.randint(0, 256, (2, 5))
    with raises(TypeError, "input_ids", "integer"):
        lm(input_ids=ids.float())
    with raises(TypeError, "input_ids", "torch.tensor"):
        lm(input_ids=ids.tolist())
    with raises(ValueError, "input_ids", "[b, n]"):
        lm(input_ids=ids[0])
    for empty in (ids[:, :0], ids[:0]):
        with raises(ValueError, "input_ids is empty"):
            lm(input_ids=empty)
    with raises(ValueError, "token id 300", "vocabulary"):
        lm(input_ids=ids.clamp(max=0) + 300)
    with raises(ValueError, "token id -1"):
        lm(input_ids=ids.clamp(max=0) - 1)
    with raises(ValueError, "attention_mask shape"):
        lm(input_ids=ids, attention_mask=torch.ones(2, 4))
    with raises(ValueError, "attention_mask", "0", "1"):
        lm(input_ids=ids, attention_mask=torch.full((2, 5), 2))
    with raises(ValueError, "labels shape"):
        lm(input_ids=ids, labels=ids[:, :4])
    with raises(ValueError, "labels", "1000", "vocabulary"):
        lm(input_ids=ids, labels=ids.clamp(max=0) + 1000)
    with raises(RuntimeError, "meta"):
        lm(input_ids=ids.to("meta"))


def test_lm_masks_give_correct_results(lm):
    ids = torch.randint(0, 256, (2, 5))
    with torch.no_grad():
        full = lm(input_ids=ids).logits
        # left padding: the padded row's real tokens see exactly what they see without the padding
        padded = torch.cat([torch.full((2, 2), 256), ids], 1)
        mask = torch.cat([torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 5, dtype=torch.long)], 1)
        out = lm(input_ids=padded, attention_mask=mask).logits[:, 2:]
        assert torch.allclose(out, full, atol=1e-4)
        # an all-padding row gives finite logits (no NaN from an empty normaliser)
        assert torch.isfinite(lm(input_ids=ids, attention_mask=torch.zeros(2, 5)).logits).all()
        # a batch without labelled positions: zero loss, not NaN
        loss = lm(input_ids=ids, labels=torch.full_like(ids, -100)).loss
    assert loss.item() == 0.0


def test_lm_no_label_batch_trains_without_nan():
    torch.manual_seed(0)
    model = LightNetForCausalLM(LightNetLMConfig(dim=16, depth=1, num_heads=2))
    ids = torch.randint(0, 256, (2, 5))
    model(input_ids=ids, labels=torch.full_like(ids, -100)).loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.equal(g, torch.zeros_like(g)) for g in grads)


def test_generate_wrong_arguments(lm):
    with raises(TypeError, "encode", "text"):
        lm.generate("hello", max_new_tokens=2)
    with raises(ValueError, "prompt 0 is empty"):
        lm.generate([[]], max_new_tokens=3)
    with raises(ValueError, "no prompts"):
        lm.generate([], max_new_tokens=3)
    with raises(ValueError, "token id 999"):
        lm.generate([[999]], max_new_tokens=3)
    with raises(TypeError, "integer"):
        lm.generate(torch.ones(1, 3), max_new_tokens=3)
    with raises(ValueError, "max_new_tokens"):
        lm.generate([[1]], max_new_tokens=-1)
    with raises(ValueError, "left padding"):
        lm.generate(torch.tensor([[1, 2, 0]]), attention_mask=torch.tensor([[1, 1, 0]]), max_new_tokens=2)
    for t in (0.0, -1.0, math.nan, math.inf):
        with raises(ValueError, "temperature"):
            lm.generate([[1]], max_new_tokens=3, do_sample=True, temperature=t)
    with raises(ValueError, "top_k"):
        lm.generate([[1]], max_new_tokens=3, do_sample=True, top_k=0)
    with raises(ValueError, "top_p"):
        lm.generate([[1]], max_new_tokens=3, do_sample=True, top_p=1.5)
    with raises(ValueError, "seed or generator"):
        lm.generate([[1]], max_new_tokens=1, do_sample=True, seed=1, generator=torch.Generator())
    out = lm.generate([[1, 2, 3]], max_new_tokens=0)
    assert out.tolist() == [[1, 2, 3]]


def test_tokenizer_bad_input():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("héllo ✓", add_bos=True, add_eos=True)) == "héllo ✓"
    with raises(TypeError, "expected str", "bytes"):
        tok.encode(b"abc")
    with raises(TypeError, "expected str"):
        tok.encode(None)
    for bad in (300, -1):
        with raises(ValueError, f"id {bad}", "vocabulary"):
            tok.decode([bad])
    assert tok.decode([0xFF, 0xFE]) == "\ufffd\ufffd"  # invalid UTF-8 is replaced, not an exception
    assert tok.decode(torch.tensor([104, 105])) == "hi"


def test_lm_config_errors():
    with raises(ValueError, "unknown config key", "dimm", "did you mean 'dim'"):
        LightNetLMConfig.from_dict({"dimm": 3})
    with raises(ValueError, "model_type"):
        LightNetLMConfig.from_dict({"model_type": "gpt2"})
    with raises(ValueError, "not divisible"):
        LightNetLMConfig(dim=10, num_heads=3)
    with raises(TypeError, "dim", "integer"):
        LightNetLMConfig(dim="16")
    with raises(ValueError, "backend"):
        LightNetLMConfig(attn_backend="cuda")
    with raises(ValueError, "pad_token_id", "vocabulary"):
        LightNetLMConfig(vocab_size=100)
    with raises(ValueError, "causal=false"):
        LightNetForMaskedLM(LightNetLMConfig(dim=16, depth=1, num_heads=2))
    with raises(ValueError, "norm"):
        LightNetForCausalLM(LightNetLMConfig(dim=16, depth=1, num_heads=2, norm="bn"))


def test_sequence_classifier_labels():
    torch.manual_seed(0)
    sc = LightNetForSequenceClassification(LightNetLMConfig(dim=16, depth=1, num_heads=2, causal=False, num_labels=3))
    ids = torch.randint(0, 256, (2, 5))
    with raises(ValueError, "labels", "[0, 3)"):
        sc(input_ids=ids, labels=torch.tensor([0, 5]))
    with raises(TypeError, "labels", "integer"):
        sc(input_ids=ids, labels=torch.tensor([0.0, 1.0]))
    with raises(ValueError, "labels", "[b]"):
        sc(input_ids=ids, labels=torch.tensor([0, 1, 2]))
    assert torch.isfinite(sc(input_ids=ids, attention_mask=torch.zeros(2, 5)).logits).all()


# ----------------------------------------------------------------------------------------------- LM from_pretrained
@pytest.fixture
def lm_folder(tmp_path):
    torch.manual_seed(0)
    model = LightNetForCausalLM(LightNetLMConfig(dim=16, depth=1, num_heads=2))
    return model, model.save_pretrained(tmp_path / "lm")


def test_lm_from_pretrained_roundtrip_and_bad_weights(lm_folder, tmp_path):
    model, folder = lm_folder
    loaded = LightNetForCausalLM.from_pretrained(folder)
    ids = torch.randint(0, 256, (1, 6))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    weights = folder / "model.safetensors"
    truncate(weights)
    with raises(ValueError, "model.safetensors", "truncated"):
        LightNetForCausalLM.from_pretrained(folder)
    weights.write_bytes(os.urandom(512))
    with raises(ValueError, "model.safetensors"):
        LightNetForCausalLM.from_pretrained(folder)
    dit = LightNetDiTModel(sample_size=8, patch_size=2, in_channels=1, hidden_size=32, num_layers=1,
                           num_attention_heads=2, num_classes=3)
    save_file({k: v.contiguous() for k, v in dit.state_dict().items()}, str(weights))
    with raises(ValueError, "does not fit", "missing"):
        LightNetForCausalLM.from_pretrained(folder)


def test_lm_from_pretrained_bad_config_and_pickles(lm_folder, tmp_path):
    model, folder = lm_folder
    cfg = folder / "config.json"
    cfg.write_bytes(os.urandom(64) + b"\xff")
    with raises(ValueError, "config.json", "json"):
        LightNetForCausalLM.from_pretrained(folder)
    cfg.write_text(json.dumps({"model_type": "lightnet_yoso", "dimm": 16}))
    with raises(ValueError, "unknown config key", "dimm"):
        LightNetForCausalLM.from_pretrained(folder)
    # only a pickle checkpoint next to a valid config: never unpickled, the safetensors file is required
    model.config.save(cfg)
    (folder / "model.safetensors").unlink()
    sentinel = tmp_path / "pwned"
    evil_torch_file(folder / "pytorch_model.bin", sentinel, model.state_dict())
    with raises(FileNotFoundError, "model.safetensors"):
        LightNetForCausalLM.from_pretrained(folder)
    assert not sentinel.exists()
