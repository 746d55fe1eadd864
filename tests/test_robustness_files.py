"""Untrusted files and configs: truncated / random / foreign / code-carrying checkpoints through every loader (timm
pretrained path, LM ``from_pretrained``, diffusers ``from_pretrained``, ``lightnet eval``, ``--resume``), YAML recipes
with Python tags, unknown config keys in every trainer CLI. Code in a file must never run: each payload would create a
sentinel file, and the tests check that it does not exist.

(The checkpoint module's own functions are covered in ``test_train_checkpoint.py``.)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import lightnet  # noqa: F401
from lightnet.cli import main as cli_main
from lightnet.generation import LightNetDiTModel
from lightnet.lm import LightNetForCausalLM, LightNetLMConfig
from lightnet.train.checkpoint import CheckpointError, load_model_weights

from tests.test_robustness_kernels import raises


class Payload:
    """Pickles to ``os.system("touch <path>")``: loading it unsafely creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def evil_torch_file(path: Path, sentinel: Path, state: dict | None = None) -> Path:
    torch.save({**(state or {}), "payload": Payload(sentinel)}, path)
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def tiny_vit(**kw):
    return timm.create_model("test_lightnet", img_size=32, num_classes=3, **kw)


# ----------------------------------------------------------------------------------------------- timm pretrained file
def test_timm_pretrained_file_refuses_code(tmp_path):
    sentinel = tmp_path / "pwned"
    evil = evil_torch_file(tmp_path / "evil.pth", sentinel, tiny_vit().state_dict())
    with raises(Exception, "weights_only"):
        tiny_vit(pretrained=True, pretrained_cfg_overlay=dict(file=str(evil)))
    assert not sentinel.exists(), "the pickle payload ran"


def test_timm_pretrained_file_truncated_random_and_foreign(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vit().state_dict().items()}, str(good))
    truncate(good)
    with pytest.raises(Exception) as info:
        tiny_vit(pretrained=True, pretrained_cfg_overlay=dict(file=str(good)))
    assert "deserializ" in str(info.value).lower() or "metadata" in str(info.value).lower()
    rnd = tmp_path / "random.pth"
    rnd.write_bytes(os.urandom(4096))
    with pytest.raises(Exception):
        tiny_vit(pretrained=True, pretrained_cfg_overlay=dict(file=str(rnd)))
    # a checkpoint of another architecture (a torchvision-style CNN state dict): the filter names the keys
    foreign = tmp_path / "cnn.safetensors"
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Linear(8, 3))
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, str(foreign))
    with raises(ValueError, "does not match this lightnet model", "missing keys", "unexpected keys"):
        tiny_vit(pretrained=True, pretrained_cfg_overlay=dict(file=str(foreign)))
    # another size of the same family: shape mismatches are named
    bigger = tmp_path / "bigger.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vit(embed_dim=96, num_heads=2).state_dict().items()}, str(bigger))
    with raises(ValueError, "shape mismatches"):
        tiny_vit(pretrained=True, pretrained_cfg_overlay=dict(file=str(bigger)))


def test_checkpoint_loader_refuses_code_and_foreign_models(tmp_path):
    sentinel = tmp_path / "pwned"
    vit = tiny_vit()
    evil = evil_torch_file(tmp_path / "model.pt", sentinel, vit.state_dict())
    with raises(CheckpointError, "refusing to load"):
        load_model_weights(vit, evil)
    assert not sentinel.exists()
    lm = LightNetForCausalLM(LightNetLMConfig(dim=16, depth=1, num_heads=2))
    other = tmp_path / "lm.safetensors"
    save_file({k: v.contiguous() for k, v in lm.state_dict().items() if k != "lm_head.weight"}, str(other))
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    with raises(CheckpointError, "does not fit", "another architecture"):
        load_model_weights(vit, other)
    # nothing is lost: a refused load leaves the model untouched
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())


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


# ----------------------------------------------------------------------------------------------- diffusers loaders
@pytest.fixture
def dit_folder(tmp_path):
    torch.manual_seed(0)
    model = LightNetDiTModel(sample_size=8, patch_size=2, in_channels=1, hidden_size=32, num_layers=1,
                             num_attention_heads=2, num_classes=3)
    model.save_pretrained(tmp_path / "dit")
    return model, tmp_path / "dit"


def test_dit_from_pretrained_truncated_random_and_pickled(dit_folder, tmp_path):
    model, folder = dit_folder
    loaded = LightNetDiTModel.from_pretrained(folder)
    h = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded(h, timestep=3).sample, model(h, timestep=3).sample)
    weights = folder / "diffusion_pytorch_model.safetensors"
    truncate(weights)
    with raises(OSError, "diffusion_pytorch_model.safetensors"):
        LightNetDiTModel.from_pretrained(folder)
    weights.write_bytes(os.urandom(1024))
    with raises(OSError, "diffusion_pytorch_model.safetensors"):
        LightNetDiTModel.from_pretrained(folder)
    weights.unlink()
    sentinel = tmp_path / "pwned"
    evil_torch_file(folder / "diffusion_pytorch_model.bin", sentinel, model.state_dict())
    with pytest.raises(OSError):
        LightNetDiTModel.from_pretrained(folder)  # diffusers falls back to the .bin, with weights_only=True
    assert not sentinel.exists(), "the pickle payload ran"


def test_dit_from_pretrained_foreign_architecture_is_an_error(dit_folder):
    """diffusers only warns and re-initialises every weight; LightNetDiTModel refuses (strict=False to allow)."""
    model, folder = dit_folder
    lm = LightNetForCausalLM(LightNetLMConfig(dim=16, depth=1, num_heads=2))
    save_file({k: v.contiguous() for k, v in lm.state_dict().items() if k != "lm_head.weight"},
              str(folder / "diffusion_pytorch_model.safetensors"))
    with raises(ValueError, "does not fit", "missing keys", "strict=false"):
        LightNetDiTModel.from_pretrained(folder)
    relaxed = LightNetDiTModel.from_pretrained(folder, strict=False)
    assert isinstance(relaxed, LightNetDiTModel)


# ----------------------------------------------------------------------------------------------- configs and CLIs
def _cli(capsys, *argv):
    rc = cli_main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_yaml_recipe_with_python_tags_is_refused(tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"name: !!python/object/apply:os.system ['touch {sentinel}']\n")
    for command in ("train", "train-lm", "train-dit"):
        rc, text = _cli(capsys, command, "-c", str(recipe), "--print-config")
        assert rc == 2 and "cannot parse yaml" in text.lower(), (command, text)
    assert not sentinel.exists()


@pytest.mark.parametrize("command, override, words", [
    ("train", "optim.lrr=1", ["unknown config key", "optim.lr"]),
    ("train", "run.max_step=1", ["unknown config key", "run.max_steps"]),
    ("train", "model.dimm=3", ["model", "not a section"]),
    ("train", "run.epochs=ten", ["run.epochs", "integer"]),
    ("train", "run.mixed_precision=fp8", ["run.mixed_precision", "one of"]),
    ("train-lm", "data.seq_lenn=3", ["unknown config key", "data.seq_len"]),
    ("train-lm", "task=translate", ["task", "one of"]),
    ("train-dit", "noise.bogus=1", ["unknown config key", "noise.bogus"]),
    ("train-dit", "ema.decay=fast", ["ema.decay", "number"]),
])
def test_trainer_cli_unknown_or_mistyped_keys(capsys, command, override, words):
    rc, text = _cli(capsys, command, override, "--print-config")
    assert rc == 2, text
    for w in words:
        assert w.lower() in text.lower(), (w, text)


def test_unknown_model_fields_fail_before_training(tmp_path, capsys):
    """Free-form model sections are checked when the model is built: a clear error, not a traceback."""
    rc, text = _cli(capsys, "train-lm", "model.dimm=3", "run.max_steps=1", f"run.run_dir={tmp_path / 'lm'}",
                    "data.eval_max_bytes=1024")
    assert rc == 2 and "dimm" in text and "did you mean 'dim'" in text, text
    rc, text = _cli(capsys, "train-dit", "model.kwargs.bogus=1", "run.max_steps=1", "data.eval_samples=0",
                    f"run.run_dir={tmp_path / 'dit'}", "run.progress=false")
    assert rc == 2 and "bogus" in text and "model.kwargs" in text, text


def test_cli_unknown_command_and_missing_files(tmp_path, capsys):
    rc, text = _cli(capsys, "trian")
    assert rc == 2 and "did you mean 'train'" in text
    rc, text = _cli(capsys, "eval", "--checkpoint", str(tmp_path / "absent"))
    assert rc == 2 and "not found" in text
    rc, text = _cli(capsys, "sample", "--pipeline", str(tmp_path))
    assert rc == 2 and "model_index.json" in text
    rc, text = _cli(capsys, "fid", "--pipeline", str(tmp_path), "--num-samples", "8")
    assert rc == 2 and "model_index.json" in text  # before (not after) training the FID classifier
    rc, text = _cli(capsys, "train", "--resume", str(tmp_path))
    assert rc == 2 and "no complete checkpoint" in text


TINY = ["model_kwargs.embed_dim=16", "model_kwargs.depth=1", "model_kwargs.num_heads=2", "model_kwargs.patch_size=4",
        "data.img_size=8", "run.progress=false", "run.tensorboard=false", "run.plot=false"]


def _fake_checkpoint(run_dir: Path) -> Path:
    """A complete-looking checkpoint folder of a tiny digits run (built without training)."""
    from lightnet.train.classify import ClassifyConfig, build_classifier
    from lightnet.train.config import build_config, save_config

    cfg = build_config(ClassifyConfig, "digits", TINY + [f"run.run_dir={run_dir}"])
    ckpt = run_dir / "checkpoints" / "step_00000001"
    ckpt.mkdir(parents=True)
    save_config(cfg, run_dir / "config.yaml")
    save_config(cfg, ckpt / "config.yaml")
    model = build_classifier(cfg, 10, 1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / "model.safetensors"))
    (ckpt / "meta.json").write_text(json.dumps({"step": 1, "epoch": 0, "complete": True}))
    (run_dir / "checkpoints" / "latest").write_text("step_00000001\n")
    return ckpt


def test_resume_and_eval_refuse_code_carrying_checkpoints(tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    ckpt = _fake_checkpoint(tmp_path / "run")
    evil_torch_file(ckpt / "training_state.pt", sentinel, {"state": {}, "optimizer": {}})
    rc, text = _cli(capsys, "train", "--resume", str(tmp_path / "run"), *TINY)
    assert rc == 2 and "refusing to load" in text and "training_state.pt" in text, text
    assert not sentinel.exists()
    # nothing is lost: the refused resume left the checkpoint and the `latest` pointer as they were
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_00000001"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.yaml", "meta.json", "model.safetensors",
                                                      "training_state.pt"]
    # eval of a pickle "weights" file next to the run's config
    evil_torch_file(ckpt / "weights.pt", sentinel, {})
    rc, text = _cli(capsys, "eval", "--checkpoint", str(ckpt / "weights.pt"))
    assert rc == 2 and "refusing to load" in text, text
    assert not sentinel.exists()
    # a truncated model file in the checkpoint: named, and the resume stops before training
    truncate(ckpt / "model.safetensors")
    rc, text = _cli(capsys, "eval", "--checkpoint", str(ckpt))
    assert rc == 2 and "truncated" in text, text
