"""Plotting: score maps (on squidpy's ``spatial_scatter``), score distributions and training curves."""

from ._plots import score_distribution, score_map, training_history

__all__ = ["score_distribution", "score_map", "training_history"]
