"""The SpaCRD network and its array-level training, prediction and save/load (torch only, no AnnData)."""

from __future__ import annotations

from ._spacrd import NotFittedError, SpaCRD

__all__ = ["NotFittedError", "SpaCRD"]
