"""LightNet vision backbones, registered with timm on import (``timm.create_model('lightnet_small')``)."""
from .lightnet_vit import LightNet, checkpoint_filter_fn

__all__ = ["LightNet", "checkpoint_filter_fn"]
