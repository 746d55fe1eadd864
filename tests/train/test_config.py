"""Config loading: YAML recipes, key=value overrides, typed parsing, unknown keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from lightnet.train.classify import ClassifyConfig
from lightnet.train.config import (
    ConfigError,
    apply_overrides,
    build_config,
    config_to_dict,
    configs_dir,
    find_recipe,
    parse_value,
    save_config,
)


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    maybe: Optional[int] = None


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    kwargs: dict[str, Any] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=lambda: [1, 2])


def test_parse_value_types():
    assert parse_value("1e-3") == pytest.approx(1e-3) and isinstance(parse_value("1e-3"), float)
    assert parse_value("5") == 5 and isinstance(parse_value("5"), int)
    assert parse_value("null") is None and parse_value("None") is None
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("[1, 2, 3]") == [1, 2, 3]
    assert parse_value("{a: 1}") == {"a": 1}
    with pytest.raises(ConfigError, match="space after each colon"):
        parse_value("{a:1}")
    assert parse_value("adamw") == "adamw" and parse_value("no") == "no"


def test_precision_no_from_yaml_and_cli(tmp_path: Path):
    assert apply_overrides(ClassifyConfig(), ["run.mixed_precision=no"]).run.mixed_precision == "no"
    p = tmp_path / "r.yaml"
    p.write_text("run:\n  mixed_precision: no\n")  # YAML 1.1 reads this as false
    assert build_config(ClassifyConfig, p).run.mixed_precision == "no"


def test_overrides_are_typed_and_nested():
    cfg = apply_overrides(Outer(), ["inner.lr=2e-4", "inner.steps=7", "kwargs.depth=3", "kwargs.sub.deep=1.5",
                                    "sizes=[4,5]", "name=run1", "inner.maybe=3", "inner.mode=b"])
    assert cfg.inner.lr == pytest.approx(2e-4) and isinstance(cfg.inner.lr, float)
    assert cfg.inner.steps == 7
    assert cfg.kwargs == {"depth": 3, "sub": {"deep": 1.5}}
    assert cfg.sizes == [4, 5] and cfg.name == "run1" and cfg.inner.maybe == 3 and cfg.inner.mode == "b"
    # an int for a float field becomes a float
    assert isinstance(apply_overrides(Outer(), ["inner.lr=1"]).inner.lr, float)


@pytest.mark.parametrize("override, fragment", [
    ("inner.lrr=1", "unknown config key 'inner.lrr'"),
    ("innr.lr=1", "unknown config key 'innr.lr'"),
    ("inner.steps=abc", "'inner.steps' expects an integer"),
    ("inner.steps=1.5", "'inner.steps' expects an integer"),
    ("inner.mode=c", "'inner.mode' must be one of"),
    ("inner.steps=null", "'inner.steps' may not be null"),
    ("name", "not of the form key=value"),
    ("name.sub=1", "is not a section"),
])
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        apply_overrides(Outer(), [override])


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError) as e:
        apply_overrides(ClassifyConfig(), ["optim.lrr=1e-3"])
    assert "optim.lr" in str(e.value) and "did you mean" in str(e.value)
    with pytest.raises(ConfigError, match="unknown config key 'run.epoch'.*run.epochs"):
        apply_overrides(ClassifyConfig(), ["run.epoch=3"])


def test_unknown_key_in_yaml(tmp_path: Path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: t\noptim:\n  opt: adamw\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'optim.learning_rate'"):
        build_config(ClassifyConfig, p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(ClassifyConfig, p)


def test_missing_recipe_lists_available():
    with pytest.raises(ConfigError, match="not found.*available recipes"):
        find_recipe("no_such_recipe_xyz")


def test_recipe_lookup_order(tmp_path, monkeypatch):
    """A path as given; else ``./configs/<name>.yaml`` of the working directory; else the packaged recipe (package
    data inside ``lightnet/``, found through importlib.resources)."""
    import lightnet

    packaged = configs_dir()
    assert packaged == Path(lightnet.__file__).parent / "configs" and (packaged / "digits.yaml").is_file()
    monkeypatch.chdir(tmp_path)
    assert find_recipe("digits") == packaged / "digits.yaml" == find_recipe("digits.yaml")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "digits.yaml").write_text("name: mine\n")
    assert find_recipe("digits") == tmp_path / "configs" / "digits.yaml"
    assert build_config(ClassifyConfig, "digits").name == "mine"
    own = tmp_path / "elsewhere.yaml"
    own.write_text("name: path\n")
    assert find_recipe(own) == own and find_recipe("dit_digits") == packaged / "dit_digits.yaml"


def test_all_shipped_recipes_parse():
    recipes = sorted(configs_dir().glob("*.yaml"))
    names = {r.stem for r in recipes}
    assert {"digits", "fashion_mnist", "imagenet_tiny", "imagenet_small"} <= names
    for r in recipes:
        if r.stem in ("digits", "fashion_mnist") or r.stem.startswith("imagenet"):
            cfg = build_config(ClassifyConfig, r)
            assert cfg.model and cfg.run.epochs > 0


def test_imagenet_recipe_follows_deit_schedule():
    cfg = build_config(ClassifyConfig, "imagenet_small")
    assert cfg.run.epochs == 300 and cfg.optim.opt == "adamw" and cfg.optim.lr is None
    assert cfg.optim.lr_base == pytest.approx(5e-4) and cfg.optim.lr_base_size == 512
    assert cfg.optim.weight_decay == pytest.approx(0.05) and cfg.sched.sched == "cosine"
    assert cfg.aug.auto_augment == "rand-m9-mstd0.5-inc1" and cfg.aug.smoothing == pytest.approx(0.1)
    assert cfg.aug.mixup == pytest.approx(0.8) and cfg.aug.cutmix == pytest.approx(1.0)
    assert cfg.aug.re_prob == pytest.approx(0.25) and cfg.drop_path == pytest.approx(0.1)


def test_dict_override_replaces_yaml_merges(tmp_path: Path):
    cfg = build_config(ClassifyConfig, "digits", ["model_kwargs={depth: 2}"])
    assert cfg.model_kwargs == {"depth": 2}
    cfg = build_config(ClassifyConfig, "digits", ["model_kwargs.depth=2"])
    assert cfg.model_kwargs["depth"] == 2 and "embed_dim" in cfg.model_kwargs
    p = tmp_path / "r.yaml"
    p.write_text("model_kwargs:\n  depth: 3\n")
    merged = build_config(ClassifyConfig, p, base={"model_kwargs": {"embed_dim": 8}})
    assert merged.model_kwargs == {"embed_dim": 8, "depth": 3}


def test_save_and_reload_roundtrip(tmp_path: Path):
    cfg = build_config(ClassifyConfig, "digits", ["optim.lr=3e-3", "model_kwargs.depth=2"])
    save_config(cfg, tmp_path / "c.yaml")
    again = build_config(ClassifyConfig, tmp_path / "c.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)
