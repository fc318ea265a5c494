"""The SpaCRD network and its array-level training, prediction and save/load (torch only, no AnnData)."""

from __future__ import annotations

from ._config import ModelConfig
from ._spacrd import NotFittedError, Prediction, SpaCRD

__all__ = ["ModelConfig", "NotFittedError", "Prediction", "SpaCRD"]
