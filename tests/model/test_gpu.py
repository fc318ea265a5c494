"""CPU and CUDA give close scores (runs only where CUDA is present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers.sections import SMALL

from spacrd_sc.model import SpaCRD

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cpu_and_cuda_scores_close(fitted_image, target, tmp_path):
    args = (target["x_gene"], target["x_image"], target["neighbors"])
    p_cpu = fitted_image.predict_proba(*args, device="cpu")
    fitted_image.save(tmp_path / "m")
    on_gpu = SpaCRD.load(tmp_path / "m", device="cuda")
    assert on_gpu.device == "cuda"
    p_gpu = on_gpu.predict_proba(*args)
    np.testing.assert_allclose(p_cpu, p_gpu, atol=1e-4)


def test_cuda_training_repeatable_and_as_good_as_cpu(section, target):
    def fit(device):
        m = SpaCRD(section["genes"], section["x_image"].shape[1], **SMALL)
        m.fit_alignment(
            section["x_gene"],
            section["x_image"],
            section["neighbors"],
            epochs=3,
            device=device,
            progress_bar=False,
        )
        m.fit_fusion(
            section["x_gene"],
            section["x_image"],
            section["neighbors"],
            section["y"],
            epochs=6,
            lr=2e-3,
            batch_size=64,
            device=device,
            progress_bar=False,
        )
        return m.predict_proba(target["x_gene"], target["x_image"], target["neighbors"])

    a, b = fit("cuda"), fit("cuda")
    np.testing.assert_array_equal(a, b)
    # different RNG streams on the two devices: compare quality, not values
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(target["y"], a) > 0.9 and roc_auc_score(target["y"], fit("cpu")) > 0.9
