"""Compatibility only (no tests): ``raises`` moved to :mod:`tests._assertions` and the kernel robustness tests to
``tests/kernels/test_robustness.py``. ``tests/test_robustness_files.py`` and ``tests/test_robustness_models.py``
still import it from here; delete this module once they import ``from tests._assertions import raises``."""
from tests._assertions import raises  # noqa: F401
