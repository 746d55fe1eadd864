"""Test-session settings: tests write only to temporary folders, so hypothesis keeps no example database and its
storage (the example database, the constants cache) lives in a temporary folder removed at the end of the session
instead of ``.hypothesis/`` in the working directory."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

settings.register_profile("lightnet", database=None)
settings.load_profile("lightnet")

_HYPOTHESIS_HOME = Path(tempfile.mkdtemp(prefix="lightnet-tests-hypothesis-"))
set_hypothesis_home_dir(_HYPOTHESIS_HOME)


def pytest_unconfigure(config) -> None:
    shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)
