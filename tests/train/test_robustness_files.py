"""Untrusted files and configs in training: code-carrying / foreign checkpoints through the trainers' loaders
(``load_model_weights``, ``lightnet eval``, ``--resume``), YAML recipes with Python tags, unknown config keys in every
trainer CLI. Code in a file must never run: each payload would create a sentinel file, and the tests check that it does
not exist.

The model loaders (timm pretrained path, LM and diffusers ``from_pretrained``) are covered in
``tests/{vision,lm,generation}/test_robustness.py``; the checkpoint module's own functions in
``tests/train/test_checkpoint.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import lightnet  # noqa: F401
from lightnet.cli import main as cli_main
from lightnet.lm import LightNetForCausalLM, LightNetLMConfig
from lightnet.train.checkpoint import CheckpointError, load_model_weights

from tests._assertions import raises
from tests._untrusted_files import evil_torch_file, truncate


def tiny_vit(**kw):
    return timm.create_model("test_lightnet", img_size=32, num_classes=3, **kw)


# ----------------------------------------------------------------------------------------------- training checkpoints
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
