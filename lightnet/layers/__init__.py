"""LightNet layers: token mixer and its shared options, positional encodings (MD-LRPE, MD-TPE), channel mixer,
blocks."""
from .block import LightNetBlock, make_norm, split_state, tensor_output
from .config import LEGACY_NAMES, MixerConfig, check_mixer_options, rename_legacy_keys
from .drop import DropPath
from .lrpe import MDLRPE, grid_coordinates
from .mixer import LightNetAttention, set_sequence_parallel_group
from .mlp import GLU
from .norm import RMSNorm
from .patch import TubeletEmbed, check_clip_divisible
from .tpe import DIRECT_MAX_LEN, MDTPE, toeplitz_direct, toeplitz_fft, toeplitz_product

__all__ = [
    "DIRECT_MAX_LEN",
    "DropPath",
    "GLU",
    "LEGACY_NAMES",
    "LightNetAttention",
    "set_sequence_parallel_group",
    "LightNetBlock",
    "MDLRPE",
    "MDTPE",
    "MixerConfig",
    "RMSNorm",
    "TubeletEmbed",
    "check_clip_divisible",
    "check_mixer_options",
    "grid_coordinates",
    "make_norm",
    "rename_legacy_keys",
    "split_state",
    "tensor_output",
    "toeplitz_fft",
    "toeplitz_direct",
    "toeplitz_product",
]
