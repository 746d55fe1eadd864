"""The package as users get it: what each import pulls in (fresh interpreters), the timm registration on
``import lightnet`` whatever the import order, and a wheel installed into a fresh venv running ``lightnet train`` from
an empty folder with its packaged recipe."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests._subprocess_env import ROOT, subprocess_env


def _python(code: str, env=None, cwd=None) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=env or subprocess_env(), cwd=cwd, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


HEAVY = "print(sorted(m for m in ('timm', 'diffusers', 'transformers') if m in sys.modules))"


@pytest.mark.parametrize("module", ["lightnet", "lightnet.kernels", "lightnet.layers"])
def test_low_rooms_import_neither_timm_nor_diffusers(module):
    assert _python(f"import sys, {module}; {HEAVY}") == "[]"


@pytest.mark.parametrize("code", [
    "import lightnet; import timm",
    "import timm, lightnet",
    "import lightnet, timm.layers",  # a submodule first: timm itself is imported on the way
    "import lightnet, importlib.util; assert importlib.util.find_spec('timm'); import timm",  # a probe first
    "import lightnet.vision, timm",
    "import lightnet.generation, timm",
])
def test_lightnet_models_are_registered_whatever_the_import_order(code):
    out = _python(code + "; import sys; m = timm.create_model('lightnet_tiny'); "
                         "print(type(m).__name__, [type(f).__name__ for f in sys.meta_path"
                         " if 'Timm' in type(f).__name__], type(timm.__spec__.loader).__name__)")
    assert out == "LightNet [] SourceFileLoader", out  # the hook is gone and timm keeps its own loader


def test_subpackages_load_on_attribute_access():
    out = _python("import lightnet; print(lightnet.vision.LightNet.__name__, lightnet.__version__)")
    assert out == "LightNet 0.1.0"


def _build_wheel(tmp: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the package sources (the build writes nothing into the checkout)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "lightnet", src / "lightnet", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # this environment's setuptools when it has one (no index needed), else pip's isolated build environment
    flags = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *flags, "-q", str(src), "-w",
                          str(tmp / "dist")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("lightnet_yoso-*.whl")
    return wheel


def test_wheel_in_a_fresh_venv_trains_from_an_empty_folder(tmp_path):
    """The wheel ships the recipes: ``lightnet train`` (default recipe ``digits``, a tiny override) runs from an empty
    folder in a venv holding only the wheel, with the dependencies of this environment (a ``.pth`` path, which does
    not run this environment's editable-install hooks) and writes its run folder with a checkpoint."""
    wheel = _build_wheel(tmp_path)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_deps_of_the_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                          "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    work = tmp_path / "empty"
    work.mkdir()
    code = "import lightnet, lightnet.train.config as c; print(lightnet.__file__); print(c.configs_dir())"
    where = subprocess.run([str(py), "-c", code], env=env, cwd=work, capture_output=True, text=True, timeout=300)
    assert where.returncode == 0, where.stderr[-3000:]
    module_file, recipes = where.stdout.split()
    assert Path(module_file).is_relative_to(env_dir) and Path(recipes).is_relative_to(env_dir), where.stdout
    run = subprocess.run(
        [str(env_dir / "bin" / "lightnet"), "train", "run.epochs=1", "run.max_steps=2", "model_kwargs.embed_dim=16",
         "model_kwargs.depth=1", "model_kwargs.num_heads=2", "data.num_workers=0", "run.progress=false"],
        env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    (run_dir,) = (work / "runs").glob("*-digits")
    assert (run_dir / "config.yaml").is_file() and (run_dir / "final_metrics.json").is_file()
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert (run_dir / "checkpoints" / latest / "model.safetensors").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
