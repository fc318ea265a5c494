"""The linear skip (``SpaCRD(linear_skip=True)``): a linear term on the neighbourhood-mean gene inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from spacrd_sc.model import SpaCRD
from spacrd_sc.model._data import neighbourhood_tokens
from spacrd_sc.model._modules import LinearSkip, SpaCRDNet
from spacrd_sc.model._train import adapt_batchnorm


def test_mean_over_the_neighbourhood_leaves_padding_out():
    torch.manual_seed(0)
    skip = LinearSkip(3).eval()
    skip.norm.running_mean.normal_()
    skip.norm.running_var.uniform_(0.5, 2.0)
    skip.linear.weight.data.normal_()
    rows = torch.randn(5, 3)
    inverse = torch.tensor([[0, 1, 2], [3, 4, 3]])
    mask = torch.tensor([[False, False, True], [False, False, True]])
    mean = torch.stack([rows[[0, 1]].mean(0), rows[[3, 4]].mean(0)])
    expected = skip.linear(skip.norm(mean)).squeeze(-1)
    torch.testing.assert_close(skip(rows, inverse, mask), expected)
    moved = torch.where(mask, torch.tensor(2), inverse)  # padding pointing at another row changes nothing
    torch.testing.assert_close(skip(rows, moved, mask), expected)


def test_untrained_skip_leaves_the_logit_unchanged():
    torch.manual_seed(0)
    net = SpaCRDNet(10, None, hidden_dims=(16, 8), n_heads=2, latent_dim=3, n_pcs=4, linear_skip=True).eval()
    x = torch.randn(6, 10)
    unique, inverse, mask = neighbourhood_tokens(torch.tensor([0, 1]), torch.tensor([[1, 2]] * 6))
    tokens = [net.gene_encoder(x[unique])]
    h, logit, *_ = net(tokens, inverse, mask, x[unique])
    torch.testing.assert_close(logit, net.head(h)[0])
    assert net.linear_skip.linear.in_features == 4  # reads the principal components, not the genes
    with pytest.raises(ValueError, match="gene_rows"):
        net(tokens, inverse, mask)


def test_image_only_model_has_no_gene_input_to_skip():
    with pytest.raises(ValueError, match="linear_skip"):
        SpaCRD([], 8, modality="image", linear_skip=True)


@pytest.fixture(scope="module")
def skipped(section, train):
    return train(section, image=False, linear_skip=True)


def test_skip_learns_the_tumour_direction_and_round_trips(skipped, section, target, tmp_path):
    skip = skipped.net.linear_skip
    assert skip is not None and skip.linear.weight.abs().sum() > 0  # trained from its zero start
    assert skipped.config["linear_skip"] is True
    assert "linear term" in skipped.mode_description
    # the skip's own term ranks the training spots' classes: the linear path carries tumour signal
    x = torch.from_numpy(section["x_gene"])
    nbr = torch.from_numpy(section["neighbors"])
    unique, inverse, mask = neighbourhood_tokens(torch.arange(len(x)), nbr)
    with torch.no_grad():
        term = skip.eval()(skipped.net.gene_encoder.project(x[unique]), inverse, mask).numpy()
    assert roc_auc_score(section["y"], term) > 0.8
    args = (target["x_gene"], None, target["neighbors"])
    proba = skipped.predict_proba(*args)
    assert roc_auc_score(target["y"], proba) > 0.8
    skipped.save(tmp_path / "m")
    np.testing.assert_array_equal(SpaCRD.load(tmp_path / "m").predict_proba(*args), proba)


def test_adabn_re_estimates_the_encoders_only(skipped, target):
    before = skipped.net.linear_skip.norm.running_mean.clone()
    net = adapt_batchnorm(skipped.net, [torch.from_numpy(target["x_gene"])], batch_size=4096)
    torch.testing.assert_close(net.linear_skip.norm.running_mean, before)
    assert not torch.allclose(net.gene_encoder.net[1].running_mean, skipped.net.gene_encoder.net[1].running_mean)
