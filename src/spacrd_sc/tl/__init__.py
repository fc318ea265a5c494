"""Tools: image features, SpaCRD training, scoring and evaluation."""

from ._evaluate import evaluate, evaluate_groups
from ._extract import extract_uni
from ._regions import tumour_regions
from ._score import cancer_score
from ._train import align, fit_vrbca

__all__ = ["align", "cancer_score", "evaluate", "extract_uni", "fit_vrbca"]
__all__ += ["evaluate_groups", "tumour_regions"]
