"""AdaBN at prediction time: BatchNorm statistics of the scored spots, the model itself unchanged."""

from __future__ import annotations

import numpy as np
import torch

from spacrd_sc.model._train import adapt_batchnorm


def _bn_state(net):
    return {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}


def test_statistics_are_the_scored_spots_and_the_model_is_unchanged(fitted_image, target):
    before = _bn_state(fitted_image.net)
    args = (target["x_gene"], target["x_image"], target["neighbors"])
    plain = fitted_image.predict_proba(*args)
    adapted = fitted_image.predict_proba(*args, adapt_batchnorm=True)
    assert not np.allclose(plain, adapted, atol=1e-4)  # the target's statistics differ from the training spots'
    after = _bn_state(fitted_image.net)
    assert all(torch.equal(before[k], after[k]) for k in before)
    np.testing.assert_array_equal(fitted_image.predict_proba(*args), plain)

    # the first BatchNorm's running mean is the mean of its input over the target's spots
    x = torch.from_numpy(target["x_gene"])
    net = adapt_batchnorm(fitted_image.net, [torch.from_numpy(target["x_image"]), x], batch_size=4096)
    enc = net.gene_encoder
    with torch.no_grad():
        first = enc.net[0]((x - enc.pca_mean) @ enc.pca_basis if enc.n_pcs is not None else x)
    bn = enc.net[1]
    assert isinstance(bn, torch.nn.BatchNorm1d)
    np.testing.assert_allclose(bn.running_mean.numpy(), first.mean(0).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), first.var(0).numpy(), rtol=1e-3, atol=1e-5)


def test_batches_accumulate_to_the_one_batch_mean(fitted_expression, target):
    x = [torch.from_numpy(target["x_gene"])]
    whole = adapt_batchnorm(fitted_expression.net, x, batch_size=4096).gene_encoder.net[1].running_mean
    parts = adapt_batchnorm(fitted_expression.net, x, batch_size=64).gene_encoder.net[1].running_mean
    np.testing.assert_allclose(parts.numpy(), whole.numpy(), rtol=1e-4, atol=1e-5)  # 256 spots = 4 equal batches
