"""Plotting: score distributions and training curves (spot maps: ``squidpy.pl.spatial_scatter``)."""

from ._plots import score_distribution, training_history

__all__ = ["score_distribution", "training_history"]
