"""The shape of the ``lightnet.kernels`` package: its public names, no experiment switches, no import circle among its
modules, and no import of timm / diffusers (the kernels import nothing of ours above them, and no model library)."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lightnet"
KERNELS = PACKAGE / "kernels"
SWITCH = re.compile(r"TUNING|LIGHTNET_")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _kernel_modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted(KERNELS.rglob("*.py"))}


def _imports(name: str, path: Path) -> Set[str]:
    """Modules of ``lightnet`` that ``name`` imports anywhere in its source (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lightnet"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("lightnet"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)  # `from . import x` may name a module
    return found


def _graph() -> Dict[str, Set[str]]:
    modules = _kernel_modules()
    return {name: {m for m in _imports(name, path) if m in modules and m != name} for name, path in modules.items()}


def test_public_names_are_unchanged() -> None:
    import lightnet.kernels as kernels

    assert sorted(kernels.__all__) == sorted([
        "BACKENDS", "State", "additive_attention", "available_backends", "additive_attention_torch",
        "causal_attention_chunked_torch", "causal_attention_recurrent_torch", "noncausal_attention_torch",
    ])
    assert all(hasattr(kernels, name) for name in kernels.__all__)


def test_one_module_per_job() -> None:
    """reference + api + shared Triton helpers + one package per op + the decode kernel; no second causal path."""
    assert set(_kernel_modules()) == {
        "lightnet.kernels", "lightnet.kernels.api", "lightnet.kernels.reference", "lightnet.kernels.triton_utils",
        "lightnet.kernels.decode",
        "lightnet.kernels.noncausal", "lightnet.kernels.noncausal.kernels", "lightnet.kernels.noncausal.op",
        "lightnet.kernels.causal", "lightnet.kernels.causal.kernels", "lightnet.kernels.causal.chunk",
        "lightnet.kernels.causal.scan", "lightnet.kernels.causal.op",
    }


def _switches(root: Path) -> List[str]:
    return [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in sorted(root.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if SWITCH.search(line)]


def test_no_experiment_switches_in_the_kernels() -> None:
    """No ``TUNING`` dict and no ``LIGHTNET_*`` environment variable: launch parameters are explicit arguments."""
    assert not _switches(KERNELS)


def test_no_experiment_switches_in_the_package() -> None:
    assert not _switches(PACKAGE)


def test_the_import_graph_guard_sees_relative_imports() -> None:
    graph = _graph()
    assert "lightnet.kernels.triton_utils" in graph["lightnet.kernels.causal.kernels"]
    assert "lightnet.kernels.noncausal.kernels" in graph["lightnet.kernels.noncausal.op"]
    assert {"lightnet.kernels.noncausal", "lightnet.kernels.causal", "lightnet.kernels.decode"} <= graph[
        "lightnet.kernels.api"]  # imported inside triton_attention


def test_no_import_circle_among_kernel_modules() -> None:
    graph = _graph()
    state: Dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package importing its own submodules is not a circle
                continue
            if state.get(nxt) == 1:
                raise AssertionError(f"import circle: {' -> '.join(path + [nxt])}")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_each_kernel_module_imports_without_model_libraries() -> None:
    """In a fresh interpreter, with the top-level ``lightnet`` package stubbed (its ``__init__`` registers the timm
    models), every kernel module imports and none pulls in timm or diffusers."""
    code = f"""
import importlib, json, sys, types
pkg = types.ModuleType("lightnet"); pkg.__path__ = [{str(PACKAGE)!r}]; sys.modules["lightnet"] = pkg
for name in {sorted(_kernel_modules())!r}:
    importlib.import_module(name)
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & {{"timm", "diffusers", "transformers"}})))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
