"""Typed training configs: YAML recipes plus ``key=value`` command-line overrides.

Every trainer describes its configuration as a (possibly nested) dataclass, e.g.::

    @dataclass
    class MyConfig:
        name: str = "demo"
        run: RunConfig = field(default_factory=RunConfig)      # nested section
        optim: OptimConfig = field(default_factory=OptimConfig)
        model_kwargs: dict[str, Any] = field(default_factory=dict)  # free-form mapping

and builds it with :func:`build_config`::

    cfg = build_config(MyConfig, recipe="my_recipe", overrides=["optim.lr=1e-3", "run.epochs=5"])

Recipes: a YAML path, or a name looked up in ``./configs`` of the working directory and then among the recipes
shipped inside the package (``lightnet/configs/*.yaml``, read through :mod:`importlib.resources`, so an installed
wheel finds them too); see :func:`find_recipe`.

Rules:

* Keys are dotted paths into nested dataclasses (``optim.lr``). A key that names no field raises
  :class:`ConfigError` naming the key and suggesting close matches (``did you mean 'optim.lr'?``), both
  for YAML files and for overrides.
* Fields typed ``dict`` are free-form: any sub-key is accepted (``model_kwargs.embed_dim=64``). A YAML
  mapping for such a field is merged into the defaults; a whole mapping given as an override
  (``model_kwargs={depth: 2}``) replaces the field.
* Override values are parsed like YAML scalars/flow collections, with the usual number spellings
  (``1e-3`` is a float, ``[1, 2]`` a list, ``null``/``none`` is ``None``, ``true``/``false`` booleans;
  other words such as ``no`` stay strings),
  then checked and converted against the field's type hint (an ``int`` for a ``float`` field becomes a
  float; ``"abc"`` for an ``int`` field is an error naming the key).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar, Union

import yaml

__all__ = [
    "ConfigError",
    "build_config",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "find_recipe",
    "parse_value",
    "save_config",
]

T = TypeVar("T")

_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_INT_RE = re.compile(r"^[-+]?\d+$")


class ConfigError(ValueError):
    """A recipe or override is invalid (unknown key, wrong type, unreadable file)."""


def parse_value(text: str) -> Any:
    """Parse one command-line value: ints, floats (incl. ``1e-3``), booleans, ``null``, YAML lists/dicts.

    Anything else is returned as the original string.
    """
    s = text.strip()
    low = s.lower()
    if low in ("null", "none", "~"):
        return None
    if low == "true":
        return True
    if low == "false":
        return False
    if _INT_RE.match(s):
        return int(s)
    if _FLOAT_RE.match(s) or low in ("inf", "-inf", "+inf", "nan"):
        return float(s)
    if s[:1] in "[{":
        try:
            value = yaml.safe_load(s)
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse value {text!r}: {e}") from e
        if isinstance(value, dict) and any(":" in str(k) and v is None for k, v in value.items()):
            raise ConfigError(f"cannot parse {text!r}: write a space after each colon, e.g. {{depth: 2, dim: 64}}")
        return value
    return text


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``Optional[X]`` → ``(X, True)``; other types unchanged."""
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return Union[tuple(args)], optional  # type: ignore[return-value]
    return tp, False


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the type hint ``tp`` and convert where lossless; raise ``ConfigError`` if not."""
    if tp is Any:
        return value
    base, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{key}' may not be null (expects {_type_name(base)})")
    origin = typing.get_origin(base)
    if origin is Union or origin is types.UnionType:
        for arm in typing.get_args(base):
            try:
                return _coerce(key, value, arm)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' expects {_type_name(base)}, got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(base)
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted `no`/`off` as false, `yes`/`on` as true
            value = next((a for a in allowed if isinstance(a, str) and a.lower() in
                          (("yes", "on", "true") if value else ("no", "off", "false"))), value)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' expects true/false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}' expects a number, got {value!r}")
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' expects a string, got {value!r}")
    if origin in (list, tuple) or base in (list, tuple):
        if isinstance(value, (list, tuple)):
            args = typing.get_args(base)
            if origin is list and args:
                return [_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
            if origin is tuple and args:
                if len(args) == 2 and args[1] is Ellipsis:
                    return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
                if len(args) != len(value):
                    raise ConfigError(f"config key '{key}' expects {len(args)} values, got {len(value)}: {value!r}")
                return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
            return list(value) if (origin is list or base is list) else tuple(value)
        raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
    if origin is dict or base is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"config key '{key}' expects a mapping, got {value!r}")
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, tp in _field_types(cls).items():
        full = f"{prefix}{name}"
        keys.append(full)
        base, _ = _strip_optional(tp)
        if _is_dataclass_type(base):
            keys.extend(_all_keys(base, full + "."))
    return keys


def _unknown_key_error(key: str, root_cls: type) -> ConfigError:
    known = _all_keys(root_cls)
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    close += [k for k in known if k.rsplit(".", 1)[-1] == leaf and k not in close]
    hint = f" (did you mean {', '.join(repr(c) for c in close[:3])}?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _set_path(obj: Any, root_cls: type, path: list[str], value: Any, full_key: str, merge: bool = True) -> None:
    """Set ``obj.<path> = value`` with type checking; ``obj`` is a dataclass instance.

    A mapping given for a free-form ``dict`` field is merged key by key when ``merge`` (YAML layers
    compose) and replaces the field otherwise (a command-line ``model_kwargs={...}``).
    """
    name = path[0]
    hints = _field_types(type(obj))
    if name not in hints:
        raise _unknown_key_error(full_key, root_cls)
    tp = hints[name]
    base, _ = _strip_optional(tp)
    if len(path) == 1:
        if _is_dataclass_type(base):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{full_key}' is a section; give a mapping, got {value!r}")
            current = getattr(obj, name)
            if current is None:
                current = base()
                setattr(obj, name, current)
            prefix = full_key + "."
            for k, v in value.items():
                _set_path(current, root_cls, [str(k)], v, prefix + str(k), merge)
            return
        if typing.get_origin(base) is dict or base is dict:
            # Nested dicts given as a whole are merged key by key so that a YAML file and a later
            # override of one sub-key compose.
            if isinstance(value, dict) and merge:
                current = getattr(obj, name)
                merged = dict(current or {})
                merged.update(value)
                setattr(obj, name, merged)
                return
        setattr(obj, name, _coerce(full_key, value, tp))
        return
    # Deeper path.
    if _is_dataclass_type(base):
        current = getattr(obj, name)
        if current is None:
            current = base()
            setattr(obj, name, current)
        _set_path(current, root_cls, path[1:], value, full_key, merge)
        return
    if typing.get_origin(base) is dict or base is dict or base is Any:
        current = dict(getattr(obj, name) or {})
        cursor = current
        for part in path[1:-1]:
            nxt = cursor.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
            cursor[part] = nxt = dict(nxt)
            cursor = nxt
        cursor[path[-1]] = value
        setattr(obj, name, current)
        return
    raise ConfigError(f"config key '{'.'.join(full_key.split('.')[: -len(path) + 1])}' is not a section; "
                      f"cannot set '{full_key}'")


def config_from_dict(cls: type[T], data: dict[str, Any], base: T | None = None) -> T:
    """Build (or update ``base`` of) dataclass ``cls`` from a nested mapping; unknown keys raise."""
    cfg = base if base is not None else cls()
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of keys to values, got {type(data).__name__}")
    for k, v in data.items():
        _set_path(cfg, cls, [str(k)], v, str(k))
    return cfg


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """Apply ``key=value`` strings (dotted keys) to ``cfg`` in order; returns ``cfg``."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-3)")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        _set_path(cfg, type(cfg), key.split("."), parse_value(raw), key, merge=False)
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with clear errors for missing/invalid files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse YAML config {p}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must contain a mapping at top level, got {type(data).__name__}")
    return data


def configs_dir() -> Path:
    """The folder of the recipes shipped with the package (``lightnet/configs``, package data), located through
    :mod:`importlib.resources` (the checkout's folder in an editable install, site-packages' in a wheel install)."""
    return Path(str(importlib.resources.files("lightnet") / "configs"))


def find_recipe(recipe: str | Path) -> Path:
    """Resolve a recipe: an existing path as it is; else a bare name or file name (``digits``, ``digits.yaml``) in
    ``./configs`` of the working directory (your own recipes), else the packaged recipe of that name."""
    p = Path(recipe)
    if p.is_file():
        return p
    name = p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml"
    for d in (Path.cwd() / "configs", configs_dir()):
        if (d / name).is_file():
            return d / name
    available = sorted(q.stem for q in configs_dir().glob("*.yaml")) if configs_dir().is_dir() else []
    raise ConfigError(f"recipe {str(recipe)!r} not found (looked for {p}, and for {name} in ./configs and in the "
                      f"packaged recipes {configs_dir()}); available recipes: {available}")


def build_config(cls: type[T], recipe: str | Path | None = None, overrides: Iterable[str] = (),
                 base: dict[str, Any] | None = None) -> T:
    """Defaults of ``cls`` ← ``base`` mapping ← recipe YAML ← ``key=value`` overrides."""
    cfg = cls()
    if base:
        config_from_dict(cls, base, cfg)
    if recipe is not None:
        config_from_dict(cls, load_yaml(find_recipe(recipe)), cfg)
    return apply_overrides(cfg, overrides)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-Python dict of a dataclass config (tuples become lists; YAML-safe)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Dump ``cfg`` as YAML (readable back with :func:`build_config` ``base=``)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
