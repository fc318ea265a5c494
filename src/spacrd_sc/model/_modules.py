"""Plain :class:`torch.nn.Module` building blocks of SpaCRD, built from integers only.

Nothing here knows about AnnData, genes or files: the modules take float tensors and return float
tensors. :class:`SpaCRDNet` wires them together for the three modes (``"both"``, ``"expression"``,
``"image"``) and the ablation switches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Hidden sizes of the VAE encoder (the decoder mirrors them), as in the reference method.
VAE_HIDDEN = (256, 128)
#: Hidden size of the cancer discriminator.
DISCRIMINATOR_HIDDEN = 64
#: Initial s.d. (times √latent_dim) of the learnable class prior means: ‖μ_0 − μ_1‖ ≈ PRIOR_SPREAD·√2.
PRIOR_SPREAD = 3.0
#: Dropout on the attention weights inside the cross-attention blocks (reference: 0.1).
ATTENTION_DROPOUT = 0.1


class MLPEncoder(nn.Module):
    """Modality encoder: ``in → h1 → h2 → … → out`` with BatchNorm, ReLU and dropout between layers.

    The output is L2-normalised along the feature axis (the last axis), so every token lies on the unit
    sphere; this is the space in which the stage-1 contrastive loss compares modalities.

    With ``n_pcs`` (smaller than ``in_dim``) the input is first projected onto fixed principal axes,
    ``(x − mean) @ basis``, held as buffers (saved with the weights, never trained) and set by
    :meth:`fit_pca` from the training spots; the first linear layer then reads ``n_pcs`` values.

    Parameters
    ----------
    in_dim
        Number of input features.
    hidden_dims
        Output sizes of the linear layers; the last one is the embedding size.
    dropout
        Dropout probability after each hidden ReLU.
    n_pcs
        Principal components in front of the MLP, or ``None`` (also when ``n_pcs >= in_dim``) for none.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int] = (1024, 512, 512),
        dropout: float = 0.2,
        n_pcs: int | None = None,
    ):
        super().__init__()
        self.n_pcs = int(n_pcs) if n_pcs is not None and n_pcs < in_dim else None
        if self.n_pcs is not None:
            self.register_buffer("pca_mean", torch.zeros(int(in_dim)))
            self.register_buffer("pca_basis", torch.zeros(int(in_dim), self.n_pcs))
        dims = [self.n_pcs or int(in_dim), *(int(d) for d in hidden_dims)]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers)
        self.out_dim = dims[-1]

    @torch.no_grad()
    def fit_pca(self, x: np.ndarray, seed: int) -> float:
        """Set the projection to the top ``n_pcs`` principal axes of ``x`` (rows = spots); return the
        fraction of variance they explain. No-op returning 1.0 without a projection."""
        if self.n_pcs is None:
            return 1.0
        mean, basis, explained = principal_axes(x, self.n_pcs, seed)
        self.pca_mean.copy_(torch.from_numpy(mean))
        self.pca_basis.copy_(torch.from_numpy(basis))
        return explained

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed principal-component projection of ``(n, in_dim)`` rows (the rows themselves without one)."""
        return (x - self.pca_mean) @ self.pca_basis if self.n_pcs is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``(n, in_dim)`` rows to unit-norm ``(n, out_dim)`` embeddings."""
        return F.normalize(self.net(self.project(x)), dim=-1)


def principal_axes(x: np.ndarray, k: int, seed: int, n_iter: int = 4) -> tuple[np.ndarray, np.ndarray, float]:
    """Top-``k`` principal axes of ``x`` by a seeded randomized SVD (float64, power iterations).

    Returns ``(mean, basis, explained)``: the column means ``(d,)``, the axes as columns ``(d, k)``
    (float32, each with its largest-magnitude loading positive, so the result does not depend on
    LAPACK's sign choice) and the fraction of total variance the ``k`` axes explain.
    """
    xc = np.asarray(x, dtype=np.float64)
    mean = xc.mean(axis=0)
    xc = xc - mean
    n, d = xc.shape
    q = min(k + 10, n, d)
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(xc @ rng.standard_normal((d, q)))[0]
    for _ in range(n_iter):
        basis = np.linalg.qr(xc.T @ basis)[0]
        basis = np.linalg.qr(xc @ basis)[0]
    _, s, vt = np.linalg.svd(basis.T @ xc, full_matrices=False)
    axes = np.zeros((d, k))
    r = min(k, vt.shape[0])
    axes[:, :r] = vt[:r].T
    flip = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(k)])
    axes *= np.where(flip == 0, 1.0, flip)
    total = float((xc**2).sum())
    explained = float((s[:r] ** 2).sum() / total) if total > 0 else 1.0
    return mean.astype(np.float32), axes.astype(np.float32), explained


class CrossAttentionBlock(nn.Module):
    """One guided attention block: a query token attends over a (masked) token sequence.

    Multi-head attention (its own q/k/v and output projections) followed by a LayerNorm. Only the
    centre spot's query is computed: the block's output at the centre position does not depend on the
    other queries, so this is exactly the centre row of the full ``(T × T)`` attention.

    Keys and values are projected once per distinct spot (a spot is a token of up to ``k + 1``
    neighbourhoods in a batch) and gathered into the sequences afterwards: the same result as projecting
    every sequence position, at ``1 / (k + 1)`` of the cost. The weights are those of
    :class:`torch.nn.MultiheadAttention` (``attn``), so saved models keep their format.

    Parameters
    ----------
    embed_dim
        Token size.
    n_heads
        Number of attention heads (must divide ``embed_dim``).
    dropout
        Dropout on the attention weights.
    """

    def __init__(self, embed_dim: int, n_heads: int, dropout: float = ATTENTION_DROPOUT):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dim, n_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(
        self, query: torch.Tensor, tokens: torch.Tensor, inverse: torch.Tensor, padding_mask: torch.Tensor
    ) -> torch.Tensor:
        """Attend from ``query`` (B, D) over the sequences ``tokens[inverse]``.

        ``tokens`` (U, D) holds each distinct spot once, ``inverse`` (B, T) the row of ``tokens`` at each
        sequence position, ``padding_mask`` (B, T) True where a position is padding (ignored).
        """
        a = self.attn
        d, h = a.embed_dim, a.num_heads
        q = F.linear(query, a.in_proj_weight[:d], a.in_proj_bias[:d])
        k, v = F.linear(tokens, a.in_proj_weight[d:], a.in_proj_bias[d:]).chunk(2, dim=-1)
        b, t = inverse.shape
        q = q.view(b, h, 1, d // h)
        k, v = (x[inverse].view(b, t, h, d // h).transpose(1, 2) for x in (k, v))
        keep = ~padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=a.dropout if self.training else 0.0)
        return self.norm(a.out_proj(out.reshape(b, d)))


class Fusion(nn.Module):
    """Bidirectional cross-attention fusion of a spot's neighbourhood into ``h*``.

    With two modalities (image tokens ``I`` and gene tokens ``G``, position 0 = the centre spot)::

        h* = LayerNorm(Linear([CA_img(I_0 → G), CA_gene(G_0 → I)]))

    With one modality ``M`` the single block attends from the centre token over its own neighbourhood,
    ``h* = LayerNorm(Linear(CA(M_0 → M)))``. With ``use_cross_attention=False`` the centre tokens are
    concatenated and projected directly (ablation).

    Parameters
    ----------
    embed_dim
        Token size (also the size of ``h*``).
    n_streams
        1 (one modality) or 2 (image + expression).
    n_heads
        Attention heads.
    use_cross_attention
        Whether to use the attention blocks at all.
    """

    def __init__(self, embed_dim: int, n_streams: int, n_heads: int, use_cross_attention: bool = True):
        super().__init__()
        if n_streams not in (1, 2):
            raise ValueError(f"n_streams must be 1 or 2, got {n_streams}.")
        self.n_streams = n_streams
        self.use_cross_attention = use_cross_attention
        if use_cross_attention:
            # blocks[0]: queries from the first stream (image when there are two); blocks[1]: the second.
            self.blocks = nn.ModuleList([CrossAttentionBlock(embed_dim, n_heads) for _ in range(n_streams)])
        self.proj = nn.Linear(n_streams * embed_dim, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(
        self, streams: Sequence[torch.Tensor], inverse: torch.Tensor, padding_mask: torch.Tensor
    ) -> torch.Tensor:
        """``h*`` ``(B, D)`` of B neighbourhoods.

        ``streams``: one or two ``(U, D)`` token tensors (image first), one row per distinct spot;
        ``inverse`` ``(B, T)``: the row of each sequence position, position 0 the centre spot;
        ``padding_mask`` ``(B, T)``: True where a position is padding (see
        :func:`~spacrd_sc.model._data.neighbourhood_tokens`).
        """
        if len(streams) != self.n_streams:
            raise ValueError(f"expected {self.n_streams} token streams, got {len(streams)}")
        centre = inverse[:, 0]
        if not self.use_cross_attention:
            parts = [s[centre] for s in streams]
        elif self.n_streams == 2:
            img, gene = streams
            parts = [
                self.blocks[0](img[centre], gene, inverse, padding_mask),
                self.blocks[1](gene[centre], img, inverse, padding_mask),
            ]
        else:
            (tok,) = streams
            parts = [self.blocks[0](tok[centre], tok, inverse, padding_mask)]
        return self.norm(self.proj(torch.cat(parts, dim=-1)))


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class CategoryVAE(nn.Module):
    """Category-regularised VAE on ``h*``: ``q(z | h*) = N(μ, σ²)`` with class prior ``N(μ_y, I)``.

    Parameters
    ----------
    in_dim
        Size of ``h*``.
    latent_dim
        Size of ``z``.
    """

    def __init__(self, in_dim: int, latent_dim: int = 64):
        super().__init__()
        self.encoder = nn.Sequential(_mlp([in_dim, *VAE_HIDDEN]), nn.ReLU())
        self.fc_mu = nn.Linear(VAE_HIDDEN[-1], latent_dim)
        self.fc_logvar = nn.Linear(VAE_HIDDEN[-1], latent_dim)
        self.decoder = _mlp([latent_dim, *reversed(VAE_HIDDEN), in_dim])
        # Row c is the prior mean μ_c of class c (learnable). The reference starts both at ~0 (randn·0.01)
        # and adds an unbounded separation term -0.1·‖μ_0 - μ_1‖; without that term two almost equal
        # priors let the VAE collapse (q = prior for every spot, h* constant, the discriminator sees no
        # signal). Starting them apart (expected distance ≈ 4 prior s.d.) breaks the symmetry with
        # nothing unbounded in the loss.
        self.prior_mu = nn.Parameter(torch.randn(2, latent_dim) * (PRIOR_SPREAD / latent_dim**0.5))

    def encode(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, log σ²)`` of ``q(z | h)``; log σ² is clamped to [-10, 10] for numerical safety."""
        e = self.encoder(h)
        return self.fc_mu(e), self.fc_logvar(e).clamp(-10.0, 10.0)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ĥ, μ, log σ²)``; ``z`` is sampled in training mode and ``z = μ`` in eval mode."""
        mu, logvar = self.encode(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decoder(z), mu, logvar

    def loss(
        self, h: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean-squared reconstruction error and ``KL(q ‖ N(μ_y, I))`` (summed over z, mean over spots)."""
        mse = F.mse_loss(recon, h)
        target = self.prior_mu[y.long()]
        kl = 0.5 * (logvar.exp() + (mu - target).pow(2) - logvar - 1.0).sum(dim=1).mean()
        return mse, kl


class SpaCRDNet(nn.Module):
    """All SpaCRD weights in one module.

    Parameters
    ----------
    n_genes
        Expression features, or ``None`` when the mode uses no expression (``modality="image"``).
    n_image_features
        Image features, or ``None`` when the mode uses no image.
    hidden_dims
        Encoder layer sizes; the last one is the token and ``h*`` size.
    dropout
        Encoder dropout.
    n_heads
        Attention heads.
    latent_dim
        VAE latent size.
    use_cross_attention
        Attention fusion (True) or concatenation of centre tokens (False).
    use_vae
        Category-regularised VAE between ``h*`` and the discriminator (True), or the discriminator on
        ``h*`` itself (False).
    n_pcs
        Principal components in front of the gene encoder (see :class:`MLPEncoder`), or ``None``.
    """

    def __init__(
        self,
        n_genes: int | None,
        n_image_features: int | None,
        *,
        hidden_dims: Sequence[int] = (1024, 512, 512),
        dropout: float = 0.2,
        n_heads: int = 8,
        latent_dim: int = 64,
        use_cross_attention: bool = True,
        use_vae: bool = True,
        n_pcs: int | None = None,
    ):
        super().__init__()
        if n_genes is None and n_image_features is None:
            raise ValueError("SpaCRDNet needs at least one modality.")
        embed = int(hidden_dims[-1])
        self.embed_dim = embed
        self.image_encoder = MLPEncoder(n_image_features, hidden_dims, dropout) if n_image_features else None
        self.gene_encoder = MLPEncoder(n_genes, hidden_dims, dropout, n_pcs) if n_genes else None
        n_streams = int(self.image_encoder is not None) + int(self.gene_encoder is not None)
        self.fusion = Fusion(embed, n_streams, n_heads, use_cross_attention)
        self.vae = CategoryVAE(embed, latent_dim) if use_vae else None
        disc_in = 2 * latent_dim if use_vae else embed
        self.discriminator = _mlp([disc_in, DISCRIMINATOR_HIDDEN, 1])

    def encoders(self) -> list[MLPEncoder]:
        """The encoders in stream order (image first)."""
        return [e for e in (self.image_encoder, self.gene_encoder) if e is not None]

    def head(
        self, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """From ``h*`` to ``(logit, ĥ, μ, log σ²)`` (the last three are ``None`` without the VAE)."""
        if self.vae is None:
            return self.discriminator(h).squeeze(-1), None, None, None
        recon, mu, logvar = self.vae(h)
        logit = self.discriminator(torch.cat([mu, logvar], dim=-1)).squeeze(-1)
        return logit, recon, mu, logvar

    def forward(
        self,
        tokens: Sequence[torch.Tensor],
        inverse: torch.Tensor,
        padding_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """``(h*, logit, ĥ, μ, log σ²)`` of B neighbourhoods (see :meth:`Fusion.forward` for ``tokens``,
        ``inverse``, ``padding_mask``, and :meth:`head`)."""
        h = self.fusion(tokens, inverse, padding_mask).float()
        logit, recon, mu, logvar = self.head(h)
        return h, logit, recon, mu, logvar


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    """Symmetric InfoNCE of paired unit vectors: ``α·CE(a→b) + (1−α)·CE(b→a)``, logits ``a·bᵀ/τ``."""
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return alpha * F.cross_entropy(logits, target) + (1.0 - alpha) * F.cross_entropy(logits.T, target)
