"""Tools: image features, SpaCRD training, scoring, regions and evaluation."""

from ._evaluate import evaluate, evaluate_groups
from ._extract import extract_uni
from ._inputs import FeatureSpec
from ._region_shapes import region_shapes
from ._regions import tumour_regions
from ._score import cancer_score
from ._train import align, fit_vrbca
from ._zarr import extract_zarr, score_zarr

__all__ = [
    "FeatureSpec",
    "align",
    "cancer_score",
    "evaluate",
    "evaluate_groups",
    "extract_uni",
    "extract_zarr",
    "fit_vrbca",
    "region_shapes",
    "score_zarr",
    "tumour_regions",
]
