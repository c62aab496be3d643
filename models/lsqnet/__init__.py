"""lsqnet - PyTorch side of lsq: timm-compatible EfficientNet/MixNet and the checkpoint format.

The C engine (engine/) is checked against these models, and the LSQ+ trainer builds on them.
"""
from . import safetensors_io
from .nets import ARCHS, LayerFactory, create, default_preprocess, export, load, randomize

__all__ = ["ARCHS", "LayerFactory", "create", "default_preprocess", "export", "load", "randomize", "safetensors_io"]
