"""Test-session settings: tests write only to temporary folders, so hypothesis keeps no example database and its
storage (the example database, the constants cache) lives in a temporary folder removed at the end of the session
instead of ``.hypothesis/`` in the working directory. Worker subprocesses that run hypothesis (e.g. the Triton
interpreter worker) inherit that folder through ``HYPOTHESIS_STORAGE_DIRECTORY``."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

settings.register_profile("lightnet", database=None)
settings.load_profile("lightnet")

_HYPOTHESIS_HOME = Path(tempfile.mkdtemp(prefix="lightnet-tests-hypothesis-"))
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = str(_HYPOTHESIS_HOME)  # for worker subprocesses


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)


# Tests write only to tmp_path: a run folder or hypothesis store that appears in the repository root during the session
# fails the session, naming what appeared (e.g. a trainer called without run.output_dir / run.run_dir in tmp_path).
_REPO_ROOT = Path(__file__).resolve().parents[1]
_WATCHED = ("runs", ".hypothesis")
_BEFORE = {name: set((_REPO_ROOT / name).iterdir()) if (_REPO_ROOT / name).is_dir() else None for name in _WATCHED}


def _new_in_repo_root() -> list[str]:
    new = []
    for name, before in _BEFORE.items():
        path = _REPO_ROOT / name
        if not path.exists():
            continue
        if before is None:
            new.append(f"{name}/")
        else:
            new += [str(p.relative_to(_REPO_ROOT)) for p in path.iterdir() if p not in before]
    return new


def pytest_sessionfinish(session, exitstatus) -> None:
    new = _new_in_repo_root()
    if new:
        import sys

        print(f"\ntests wrote into the repository root (tests must write only to tmp_path): {new}", file=sys.stderr)
        session.exitstatus = 1
