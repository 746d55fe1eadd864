"""LightNet: You Only Scan Once."""
__version__ = "0.1.0"
