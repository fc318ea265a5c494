"""The nn.Modules alone: shapes, normalisation and masking."""

from __future__ import annotations

import torch

from spacrd_sc.model._data import neighbourhood_tokens
from spacrd_sc.model._modules import CrossAttentionBlock, Fusion, MLPEncoder, SpaCRDNet, info_nce


def test_encoder_unit_norm_along_features():
    enc = MLPEncoder(20, (16, 8, 8)).eval()
    z = enc(torch.randn(5, 20))
    assert z.shape == (5, 8)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(5))


def test_attention_equals_multihead_attention_over_the_gathered_sequences():
    # K/V projected once per distinct row and gathered == torch's attention over the full sequences
    torch.manual_seed(0)
    block = CrossAttentionBlock(16, 4).eval()
    pool = torch.randn(6, 16)
    inverse = torch.tensor([[0, 1, 2, 0], [3, 4, 5, 1], [2, 2, 5, 0]])
    mask = torch.tensor([[False, False, False, True], [False] * 4, [False, True, False, False]])
    query = torch.randn(3, 16)
    seq = pool[inverse]
    ref, _ = block.attn(query[:, None], seq, seq, key_padding_mask=mask, need_weights=False)
    torch.testing.assert_close(block(query, pool, inverse, mask), block.norm(ref[:, 0]))


def test_fusion_ignores_padded_tokens():
    torch.manual_seed(0)
    fusion = Fusion(8, 2, n_heads=2).eval()
    img, gene = torch.randn(6, 8), torch.randn(6, 8)
    inverse = torch.tensor([[0, 1, 0, 0], [2, 2, 3, 2], [4, 5, 1, 3]])
    mask = torch.tensor([[False, False, True, True], [False, True, False, True], [False] * 4])
    h = fusion([img, gene], inverse, mask)
    assert h.shape == (3, 8)
    moved = torch.where(mask, torch.tensor(5), inverse)  # padding now points at another spot
    torch.testing.assert_close(fusion([img, gene], moved, mask), h)
    assert not torch.allclose(fusion([img, gene], moved, torch.zeros_like(mask)), h)


def test_single_stream_and_concatenation_shapes():
    tok = torch.randn(9, 8)
    inverse = torch.randint(0, 9, (4, 7))
    mask = torch.zeros(4, 7, dtype=torch.bool)
    assert Fusion(8, 1, n_heads=2)([tok], inverse, mask).shape == (4, 8)
    assert Fusion(8, 2, n_heads=2, use_cross_attention=False)([tok, tok], inverse, mask).shape == (4, 8)


def test_net_head_shapes():
    net = SpaCRDNet(10, None, hidden_dims=(16, 8), n_heads=2, latent_dim=3).eval()
    logit, recon, mu, logvar = net.head(torch.randn(5, 8))
    assert logit.shape == (5,) and recon.shape == (5, 8) and mu.shape == logvar.shape == (5, 3)
    net = SpaCRDNet(10, 4, hidden_dims=(16, 8), n_heads=2, use_vae=False)
    assert net.vae is None and net.head(torch.randn(5, 8))[0].shape == (5,)


def test_info_nce_prefers_matched_pairs():
    a = torch.nn.functional.normalize(torch.randn(16, 8), dim=-1)
    matched = info_nce(a, a, 0.07, 0.5)
    shuffled = info_nce(a, a[torch.randperm(16)], 0.07, 0.5)
    assert matched < shuffled


def test_neighbourhood_tokens_unique_rows_and_mask():
    neighbors = torch.tensor([[1, -1], [0, 2], [1, -1], [2, 1]])
    unique, inverse, mask = neighbourhood_tokens(torch.tensor([0, 3]), neighbors)
    assert unique.tolist() == [0, 1, 2, 3]
    assert mask.tolist() == [[False, False, True], [False, False, False]]
    assert unique[inverse].tolist() == [[0, 1, 0], [3, 2, 1]]
