"""Test-session settings: hypothesis keeps no example database (it would write ``.hypothesis/`` into the working
directory; tests write only to temporary folders)."""
from hypothesis import settings

settings.register_profile("lightnet", database=None)
settings.load_profile("lightnet")
