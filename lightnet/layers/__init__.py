"""LightNet layers: token mixer, positional encodings (MD-LRPE, MD-TPE), channel mixer, blocks."""
from .block import LightNetBlock, make_norm
from .lrpe import MDLRPE, grid_coordinates
from .mixer import LightNetAttention
from .mlp import GLU
from .norm import RMSNorm
from .tpe import MDTPE, TPE_TUNING, toeplitz_direct, toeplitz_fft, toeplitz_product

__all__ = [
    "GLU",
    "LightNetAttention",
    "LightNetBlock",
    "MDLRPE",
    "MDTPE",
    "RMSNorm",
    "grid_coordinates",
    "make_norm",
    "toeplitz_fft",
    "toeplitz_direct",
    "toeplitz_product",
    "TPE_TUNING",
]
