"""The SpaCRD network and its array-level training, prediction and save/load (torch only, no AnnData)."""

from __future__ import annotations

from ._backbones import BackboneSpec, available_backbones, build_backbone, get_backbone_spec
from ._config import ModelConfig, TrainingConfig
from ._spacrd import NotFittedError, Prediction, SpaCRD

__all__ = [
    "BackboneSpec",
    "ModelConfig",
    "NotFittedError",
    "Prediction",
    "SpaCRD",
    "TrainingConfig",
    "available_backbones",
    "build_backbone",
    "get_backbone_spec",
]
