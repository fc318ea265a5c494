"""Tools: image features, SpaCRD training, scoring, regions and evaluation."""

from ._evaluate import evaluate, evaluate_groups
from ._extract import extract_uni
from ._inputs import FeatureSpec
from ._region_shapes import region_shapes
from ._regions import tumour_regions
from ._score import cancer_score
from ._train import align, fit_vrbca

__all__ = [
    "FeatureSpec",
    "align",
    "cancer_score",
    "evaluate",
    "evaluate_groups",
    "extract_uni",
    "fit_vrbca",
    "region_shapes",
    "tumour_regions",
]
