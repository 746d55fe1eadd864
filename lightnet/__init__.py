"""LightNet: You Only Scan Once.

``import lightnet`` registers the ``lightnet_*`` image and video models with timm (``timm.create_model('lightnet_small')``)
without importing timm itself: if timm is already imported they are registered now, otherwise right after timm's
first import (a one-shot import hook on the top-level ``timm`` module; see ``docs/models.md``). So
``import lightnet.kernels`` / ``lightnet.layers`` pull in neither timm nor diffusers, and both ``import lightnet;
import timm`` and ``import timm, lightnet`` make the models available. Subpackages load on first use
(``lightnet.vision``, ``lightnet.generation``, ...).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("kernels", "layers", "vision", "video", "generation", "lm", "train")


def _register_timm_models() -> None:
    """Import :mod:`lightnet.vision` and :mod:`lightnet.video`, whose ``@register_model`` functions add the models to
    timm's registry."""
    try:
        importlib.import_module("lightnet.vision")
        importlib.import_module("lightnet.video")
    except Exception as e:  # never break the user's `import timm` because of us
        warnings.warn(f"lightnet: could not register the lightnet_* timm models ({type(e).__name__}: {e})",
                      RuntimeWarning, stacklevel=2)


class _RegisterAfterTimmLoader(importlib.abc.Loader):
    """Runs timm's own loader, gives the module its own loader back, then registers the LightNet models."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        _remove_hook()
        module.__spec__.loader = module.__loader__ = self._loader
        self._loader.exec_module(module)
        _register_timm_models()


class _TimmImportHook(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder for the top-level ``timm`` module only: it returns the spec the other finders give,
    with its loader wrapped in :class:`_RegisterAfterTimmLoader`. It leaves ``sys.meta_path`` when timm is loaded
    (not when a library only probes with ``importlib.util.find_spec('timm')``)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        spec = None
        for finder in list(sys.meta_path):  # what the import system would ask next, in its order
            find = getattr(finder, "find_spec", None)
            if finder is not self and find is not None:
                spec = find(fullname, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _RegisterAfterTimmLoader(spec.loader)
        return spec


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TimmImportHook)]


def __getattr__(name: str) -> Any:
    """``lightnet.vision`` etc. without an explicit import (PEP 562)."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"lightnet.{name}")
    raise AttributeError(f"module 'lightnet' has no attribute {name!r}")


if "timm" in sys.modules:
    _register_timm_models()
elif not any(isinstance(f, _TimmImportHook) for f in sys.meta_path):
    sys.meta_path.insert(0, _TimmImportHook())
