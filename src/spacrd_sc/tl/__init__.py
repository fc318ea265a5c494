"""Tools: image features, SpaCRD training, scoring and evaluation."""

from ._evaluate import evaluate
from ._extract import extract_uni
from ._inputs import FeatureSpec
from ._score import cancer_score
from ._train import align, fit_vrbca

__all__ = ["FeatureSpec", "align", "cancer_score", "evaluate", "extract_uni", "fit_vrbca"]
