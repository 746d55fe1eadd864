"""LightNet: You Only Scan Once."""
__version__ = "0.1.0"
from . import vision  # noqa: E402,F401  registers the lightnet_* models with timm
