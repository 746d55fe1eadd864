"""Bad input to the public model APIs: timm LightNet models, LightNetDiTModel and its pipeline, the language models,
``generate`` and the byte tokenizer. Each case gets an error naming the problem, or a correct result."""
from __future__ import annotations

import math

import pytest
import timm
import torch
from diffusers import DDIMScheduler

import lightnet  # noqa: F401  (registers the timm models)
from lightnet.generation import LightNetDiTModel, LightNetDiTPipeline
from lightnet.lm import (
    ByteTokenizer,
    LightNetForCausalLM,
    LightNetForMaskedLM,
    LightNetForSequenceClassification,
    LightNetLMConfig,
)

from tests.test_robustness_kernels import raises


# ----------------------------------------------------------------------------------------------- vision (timm)
@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("test_lightnet", img_size=32, num_classes=3).eval()


def test_vision_wrong_shapes(vit):
    x = torch.randn(2, 3, 32, 32)
    with raises(ValueError, "[b, c, h, w]", "rank-3"):
        vit(x[0])
    with raises(ValueError, "3 input channels", "got 1"):
        vit(torch.randn(2, 1, 32, 32))
    with raises(ValueError, "image size", "(48, 48)", "dynamic_img_size"):
        vit(torch.randn(2, 3, 48, 48))


@pytest.mark.parametrize("dtype, word", [(torch.int64, "long"), (torch.uint8, "unsigned char"),
                                         (torch.float64, "double"), (torch.float16, "half")])
def test_vision_wrong_dtypes_name_the_dtype(vit, dtype, word):
    with raises(RuntimeError, word):
        vit(torch.randn(2, 3, 32, 32).to(dtype))


def test_vision_device_mix(vit):
    with raises(RuntimeError, "meta"):
        vit(torch.randn(2, 3, 32, 32, device="meta"))


def test_vision_empty_batch_and_nan_propagation(vit):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert vit(x[:0]).shape == (0, 3)
        out = vit(torch.cat([x[:1], x[1:] * math.nan]))
    assert torch.isfinite(out[0]).all() and torch.isnan(out[1]).all()  # NaN stays in its own sample
    with torch.no_grad():
        assert torch.allclose(out[0], vit(x[:1])[0], atol=1e-5)


def test_vision_create_model_errors():
    with raises(TypeError, "bogus_kw"):
        timm.create_model("test_lightnet", bogus_kw=3)
    with raises(ValueError, "not divisible by num_heads"):
        timm.create_model("test_lightnet", num_heads=3)
    with raises(ValueError, "num_classes"):
        timm.create_model("test_lightnet", num_classes=-1)
    with raises(RuntimeError, "no pretrained weights"):
        timm.create_model("test_lightnet", pretrained=True)  # never a download
    m = timm.create_model("test_lightnet", img_size=32)
    with raises(ValueError, "out of range"):
        m.forward_intermediates(torch.randn(1, 3, 32, 32), indices=[7])


# ----------------------------------------------------------------------------------------------- diffusion
@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return LightNetDiTModel(sample_size=8, patch_size=2, in_channels=1, hidden_size=32, num_layers=1,
                            num_attention_heads=2, num_classes=3).eval()


def test_dit_wrong_inputs(dit):
    h = torch.randn(2, 1, 8, 8)
    with raises(ValueError, "[b, c, h, w]"):
        dit(h[0], timestep=5)
    with raises(ValueError, "3 channels", "in_channels=1"):
        dit(torch.randn(2, 3, 8, 8), timestep=5)
    with raises(ValueError, "not divisible by patch_size"):
        dit(torch.randn(2, 1, 7, 8), timestep=5)
    with raises(ValueError, "timestep is required"):
        dit(h)
    with raises(ValueError, "timestep", "[b=2]"):
        dit(h, timestep=torch.tensor([1, 2, 3]))
    with raises(ValueError, "timestep", "nan"):
        dit(h, timestep=math.nan)
    with raises(ValueError, "class label out of range", "null class"):
        dit(h, timestep=5, class_labels=torch.tensor([0, 7]))
    with raises(TypeError, "class_labels", "integer"):
        dit(h, timestep=5, class_labels=torch.tensor([0.5, 1.7]))  # was silently truncated to [0, 1]
    with raises(ValueError, "class_labels", "[b=2]"):
        dit(h, timestep=5, class_labels=torch.tensor([0, 1, 2]))
    with raises(RuntimeError, "meta"):
        dit(h.to("meta"), timestep=5)


def test_dit_correct_results_for_edge_inputs(dit):
    h = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert dit(h[:0], timestep=torch.zeros(0)).sample.shape == (0, 1, 8, 8)
        a = dit(h, timestep=5, class_labels=torch.tensor([0, 1])).sample
        b = dit(h, timestep=torch.tensor([5, 5]), class_labels=[0, 1]).sample  # scalar t / list labels broadcast
        assert torch.allclose(a, b)
        other = dit(torch.randn(2, 1, 12, 16), timestep=5).sample  # any size divisible by the patch
        assert other.shape == (2, 1, 12, 16) and torch.isfinite(other).all()
    with raises(ValueError, "not divisible"):
        LightNetDiTModel(sample_size=7, patch_size=2)
    with raises(ValueError, "unknown lightnet-dit preset"):
        LightNetDiTModel.from_preset("LightNet-DiT-Q/3")


def test_pipeline_wrong_arguments(dit):
    pipe = LightNetDiTPipeline(dit, DDIMScheduler(num_train_timesteps=20))
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=2, output_type="pt")
    with raises(ValueError, "out of range", "0..2"):
        pipe([0, 5], **kw)
    with raises(ValueError, "class_labels is empty"):
        pipe([], **kw)
    with raises(TypeError, "class_labels", "integer"):
        pipe([0.5], **kw)  # was silently truncated to class 0
    with raises(ValueError, "batch_size"):
        pipe(None, **kw)
    with raises(ValueError, "batch_size", "positive"):
        pipe(batch_size=0, **kw)
    with raises(ValueError, "output_type"):
        pipe([0], num_inference_steps=2, output_type="jpg")
    with raises(ValueError, "divisible"):
        pipe([0], height=9, **kw)
    with raises(ValueError, "latents", "(1, 1, 8, 8)"):
        pipe([0], latents=torch.randn(1, 1, 4, 4), **kw)
    for steps in (0, -1):  # 0 was a ZeroDivisionError inside the scheduler, -1 silently ran
        with raises(ValueError, "num_inference_steps"):
            pipe([0], num_inference_steps=steps, output_type="pt")
    with raises(ValueError, "class_names"):
        pipe.get_label_ids(["cat"])
    out = pipe([0, 2], **kw).images
    assert out.shape == (2, 1, 8, 8) and out.min() >= 0 and out.max() <= 1


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
        LightNetLMConfig(backend="cuda")
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
