"""Assertion helpers shared by the test packages (imported as ``from tests._assertions import raises``)."""
from __future__ import annotations

import pytest


def raises(exc, *words):
    """``pytest.raises`` that also checks that every word appears in the message (case-insensitive)."""
    class _Ctx:
        def __enter__(self):
            self.cm = pytest.raises(exc)
            self.info = self.cm.__enter__()
            return self.info

        def __exit__(self, *a):
            out = self.cm.__exit__(*a)
            msg = str(self.info.value).lower()
            missing = [w for w in words if w.lower() not in msg]
            assert not missing, f"error message lacks {missing}: {self.info.value!r}"
            return out
    return _Ctx()
