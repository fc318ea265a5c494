"""The :class:`SpaCRD` model: array-level training, prediction and save/load (no AnnData here)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from .._logging import logger
from .._utils import _resolve_device
from . import _io
from ._config import DEFAULT_N_MEMBERS, DEFAULT_N_PCS, ModelConfig, json_record
from ._data import check_inputs, check_loop_args, check_sections, resolve_fused_epochs
from ._modules import SpaCRDNet
from ._train import adapt_batchnorm as _adapt
from ._train import build_net, infer, run_alignment, run_fusion

#: Defaults measured on a 2-core CPU (≈3000 spots × 3000 genes, k = 6): see the class docstring. Fusion epochs:
#: 8 (4 + 4), chosen over 30, 16 and 4 by nested leave-one-section-out CV on her2st (benchmarks/results/
#: her2st_nested.md): shorter training leaves the scores on unseen patients graded instead of pinned at 0 and 1.
#: Alignment epochs of the single-encoder modes (the neighbourhood contrast): 5 (was 20), non-inferior by the same
#: nested CV on the image-less model and 40 % less time per fit (sixth round). The image-gene alignment keeps 20:
#: it could not be measured (no H&E for the labelled her2st sections).
DEFAULT_ALIGN_EPOCHS = 5
DEFAULT_ALIGN_EPOCHS_IMAGE_GENE = 20
DEFAULT_ALIGN_LR = 1e-3
DEFAULT_FUSION_EPOCHS = 8
DEFAULT_FUSION_LR = 5e-4
_INIT_SEED = 0


class Prediction(NamedTuple):
    """What :meth:`SpaCRD.predict` returns: one inference pass, both outputs."""

    #: ``(n,)`` float32 cancer probability.
    proba: np.ndarray
    #: ``(n, d)`` float32 fused representation ``h*``.
    embedding: np.ndarray


class NotFittedError(ValueError):
    """The model has not been trained far enough for the requested call."""


class SpaCRD:
    """SpaCRD: contrastive alignment, bidirectional cross-attention fusion and a cancer discriminator.

    Array-level model (AnnData translation lives in :mod:`spacrd_sc.tl`). Every spot is a sequence
    of itself plus up to ``n_neighbors`` spatial neighbours; each token is encoded by a modality MLP
    (``in → 1024 → 512 → 512``, BatchNorm, ReLU, dropout; L2-normalised along the feature axis). Gene
    features first pass a fixed projection on their top ``n_pcs`` principal components, computed from the
    training spots when training starts (``n_pcs=None``: the genes themselves).

    * Stage 1 (:meth:`fit_alignment`): InfoNCE between image and gene embeddings of the same spot
      (``α·CE(img→gene) + (1−α)·CE(gene→img)``, temperature τ).
    * Stage 2 + 3 (:meth:`fit_fusion`): two cross-attention blocks (image tokens query gene tokens and
      vice versa, padded neighbours masked) give ``h* = LayerNorm(Linear([CA_img, CA_gene]))``; a
      category-regularised VAE (prior ``N(μ_y, I)``, learnable ``μ_0, μ_1``) gives
      ``L_fused = MSE(ĥ*, h*) + β·KL``; a discriminator on ``[μ, log σ²]`` gives
      ``L_cls = BCE + γ·L_fused``. The first ``fused_epochs`` optimise ``L_fused``, the rest ``L_cls``;
      the encoders keep training.
    * Prediction uses ``z = μ`` and needs no label.

    Single-modality modes (``modality="expression"``, also chosen when ``n_image_features is None``, and
    ``modality="image"``): one encoder and one attention block in which the centre token attends over its
    own neighbourhood, ``h* = LayerNorm(Linear(CA(centre → neighbourhood)))``. Stage 1 becomes a
    label-free neighbourhood contrast: each spot's features and the mean features of its neighbours are
    a positive pair (same encoder, InfoNCE against the other spots of the batch). See
    :attr:`mode_description`.

    Default training (measured on a 2-core CPU with 3000 spots × 3000 genes, no image): alignment
    5 epochs (20 for the image-gene alignment), Adam lr 1e-3; fusion 8 epochs (4 + 4), lr 5e-4, batch 512,
    neighbourhood-grouped batches; three networks from consecutive seeds (``n_members``). The reference
    (lr 1e-5, 100 + 100 epochs) under-trains at this budget; 30, 16 and 4 fusion epochs (the earlier default and
    candidates) scored lower in the inner folds of a nested leave-one-section-out comparison on her2st, and 30
    epochs pin most scores of unseen patients near 0 or 1; 5 alignment epochs scored as well as 20 in the same
    comparison (seed by seed: inner AUC +0.001, inner F1 +0.006) at 40 % less time per fit.

    Parameters
    ----------
    genes
        Gene names, in the column order of ``x_gene``.
    n_image_features
        Size of the image features (e.g. 1024 for UNI), or ``None`` for an image-less model.
    hidden_dims
        Encoder layer sizes; the last is the token and ``h*`` size.
    dropout
        Encoder dropout.
    temperature
        InfoNCE temperature τ.
    alpha
        Weight α of the image→gene direction of InfoNCE.
    n_heads
        Attention heads (must divide ``hidden_dims[-1]``).
    n_neighbors
        Neighbours per spot (columns of ``neighbors``; the centre is added internally).
    latent_dim
        VAE latent size.
    beta
        KL weight β in ``L_fused``.
    gamma
        Weight γ of ``L_fused`` in ``L_cls``.
    use_contrastive
        Train stage 1 (False: :meth:`fit_alignment` only records that it was skipped).
    use_cross_attention
        Attention fusion (False: concatenate the centre tokens).
    use_vae
        VAE between ``h*`` and the discriminator (False: discriminator on ``h*``, loss = BCE).
    modality
        ``"both"``, ``"expression"`` or ``"image"``.
    n_pcs
        Principal components of the gene features in front of the gene encoder (fitted on the training
        spots when training starts, stored with the weights, applied unchanged to new sections), or
        ``None`` to feed the genes directly. Ignored when it is not smaller than the number of genes.
    n_members
        Networks in the model (a seed ensemble). Each is trained on the same data from its own seed (member
        ``i`` from ``seed + i``, exactly like a single model with that seed); predictions average their cancer
        probabilities, and the embedding is the first member's. Training and scoring take ``n_members``
        times as long. Saved and loaded as one model. Default 3: in a nested leave-one-section-out comparison
        on her2st, two independent 3-network ensembles had inner-fold AUCs of 0.884 and 0.881, six single
        networks 0.876–0.881 (the F1 differences were within seed noise); ``n_members=1`` trains a third as
        long.
    linear_skip
        Add a linear term on the gene inputs to the discriminator's logit: the mean over the spot and its
        neighbours of the gene encoder's inputs (principal components), standardised, times learned weights (zero at
        the start), trained with the rest (a "wide" path beside the deep one; the model a smoothed logistic
        regression fits). Not with ``modality="image"``.
    preprocessing
        JSON-able record of how the caller prepared the features; stored and saved as is.

    Attributes
    ----------
    history
        Per-epoch losses: ``align`` (stage 1), ``fused``, ``recon``, ``kl`` (every fusion epoch, with
        the VAE), ``bce`` and ``cls`` (classifier epochs). Repeated fits append.
    """

    def __init__(
        self,
        genes: Sequence[str],
        n_image_features: int | None = None,
        *,
        hidden_dims: Sequence[int] = (1024, 512, 512),
        dropout: float = 0.2,
        temperature: float = 0.07,
        alpha: float = 0.5,
        n_heads: int = 8,
        n_neighbors: int = 6,
        latent_dim: int = 64,
        beta: float = 0.5,
        gamma: float = 0.1,
        use_contrastive: bool = True,
        use_cross_attention: bool = True,
        use_vae: bool = True,
        modality: str = "both",
        n_pcs: int | None = DEFAULT_N_PCS,
        n_members: int = DEFAULT_N_MEMBERS,
        linear_skip: bool = False,
        preprocessing: dict | None = None,
    ):
        args = {k: v for k, v in locals().items() if k not in ("self", "preprocessing")}
        self._cfg = ModelConfig.build(**args)
        self.preprocessing: dict = json_record(preprocessing, "preprocessing")
        self.genes: list[str] = list(self._cfg.genes)
        self.n_image_features = self._cfg.n_image_features
        self.mode = self._cfg.mode
        if self.mode == "expression" and modality == "both":
            logger.info("SpaCRD: no image features (n_image_features=None): image-less, expression-only model.")
        self.history: dict[str, list[float]] = {}
        self.alignment: str = "not run"
        self.training_params: dict[str, Any] = {}
        self.is_aligned = False
        self.is_fitted = False
        self._device = "cpu"
        self.nets: list[SpaCRDNet] = [self._build(_INIT_SEED + i) for i in range(self._cfg.n_members)]

    # ------------------------------------------------------------------ properties
    @property
    def n_genes(self) -> int:
        """Number of genes."""
        return len(self.genes)

    @property
    def image_less(self) -> bool:
        """True when the model uses no image features."""
        return self.mode == "expression"

    @property
    def uses_genes(self) -> bool:
        """True when the model uses expression features."""
        return self.mode != "image"

    @property
    def net(self) -> SpaCRDNet:
        """The network (the first member of an ensemble; all of them are in :attr:`nets`)."""
        return self.nets[0]

    @property
    def device(self) -> str:
        """Device holding the weights."""
        return self._device

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able; ``SpaCRD(**config, preprocessing=...)`` rebuilds the model)."""
        return self._cfg.to_dict()

    @property
    def mode_description(self) -> str:
        """Plain-language description of what this model does with its inputs."""
        return self._cfg.describe()

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else ("aligned" if self.is_aligned else "untrained")
        return (
            f"SpaCRD({self.mode}, n_genes={self.n_genes}, n_image_features={self.n_image_features}, "
            f"{state}, device={self.device!r})"
        )

    # ------------------------------------------------------------------ internals
    def _build(self, seed: int) -> SpaCRDNet:
        return build_net(self._cfg, seed).to(self._device)

    def _move(self, device: str) -> None:
        if device != self._device:
            for net in self.nets:
                net.to(device)
            self._device = device

    # ------------------------------------------------------------------ training
    def fit_alignment(
        self,
        x_gene: np.ndarray | None,
        x_image: np.ndarray | None,
        neighbors: np.ndarray,
        *,
        epochs: int | None = None,
        batch_size: int = 512,
        lr: float = DEFAULT_ALIGN_LR,
        device: str = "auto",
        seed: int = 0,
        progress_bar: bool = True,
        amp: bool = False,
    ) -> SpaCRD:
        """Stage 1: train the encoders contrastively (re-initialises all weights from ``seed``).

        Parameters
        ----------
        x_gene
            ``(n, n_genes)`` float32 expression, normalised and scaled by the caller (ignored, may be
            ``None``, in ``"image"`` mode).
        x_image
            ``(n, n_image_features)`` float32 image features, or ``None`` for image-less models.
        neighbors
            ``(n, n_neighbors)`` int64 row indices of each spot's spatial neighbours, ``-1`` = padding;
            the spot itself is not listed.
        epochs
            Alignment epochs; ``None``: 5 for the neighbourhood contrast of the single-modality modes (the
            image-less model), 20 for the image-gene alignment (``mode="both"``).
        batch_size, lr
            Adam optimisation settings.
        device
            ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:N]"``; the model stays there.
        seed
            Seeds weight initialisation, shuffling, dropout (same seed + device → same model; ensemble
            member ``i`` uses ``seed + i``).
        progress_bar
            Show a ``tqdm`` bar over epochs.
        amp
            bf16 autocast (CUDA only).

        Returns
        -------
        The model itself, with ``is_aligned`` set and ``history["align"]`` extended.
        """
        feats, nbr, _ = check_inputs(self._cfg, x_gene, x_image, neighbors)
        if epochs is None:
            epochs = DEFAULT_ALIGN_EPOCHS_IMAGE_GENE if self._cfg.mode == "both" else DEFAULT_ALIGN_EPOCHS
        check_loop_args(epochs, batch_size, lr, feats[0].shape[0])
        dev = _resolve_device(device)
        if not self._cfg.use_contrastive:
            self.alignment = "skipped (use_contrastive=False)"
            logger.info("SpaCRD: use_contrastive=False, stage-1 alignment skipped.")
            return self
        run_alignment(self, feats, nbr, epochs, batch_size, lr, dev, seed, progress_bar, amp)
        return self

    def fit_fusion(
        self,
        x_gene: np.ndarray | None,
        x_image: np.ndarray | None,
        neighbors: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int = DEFAULT_FUSION_EPOCHS,
        fused_epochs: int | None = None,
        batch_size: int = 512,
        lr: float = DEFAULT_FUSION_LR,
        device: str = "auto",
        seed: int = 0,
        progress_bar: bool = True,
        batching: str = "local",
        amp: bool = False,
        label_smoothing: float = 0.0,
        sections: np.ndarray | None = None,
        section_alignment: float = 0.0,
        gene_dropout: float = 0.0,
    ) -> SpaCRD:
        """Stages 2 + 3: train the fusion, the VAE and the discriminator (encoders not frozen).

        On an aligned model the fusion, VAE and discriminator start fresh from ``seed`` and the aligned
        encoders are kept; on a model that is already fitted, training continues from its weights.
        Calling it on an unaligned model while ``use_contrastive=True`` warns and trains the
        encoders from scratch (the ``use_contrastive=False`` ablation in effect).

        Parameters
        ----------
        x_gene, x_image, neighbors
            As in :meth:`fit_alignment`.
        y
            ``(n,)`` labels, 1 = cancer, 0 = not (bool or integer); both classes must occur.
        epochs
            Total epochs.
        fused_epochs
            Leading epochs that optimise ``L_fused`` only (default ``epochs // 2``; must leave at
            least one classifier epoch; ignored without the VAE).
        batch_size, lr
            Adam optimisation settings.
        device, seed, progress_bar, amp
            As in :meth:`fit_alignment`.
        batching
            ``"local"``: batches made of compact groups of 16 neighbouring spots, which share most
            neighbour rows so ≈ 2× fewer rows are encoded per epoch; ``"random"``: spots drawn
            uniformly.
        label_smoothing
            ε in [0, 1): the classifier's BCE targets become ``ε/2`` (not cancer) and ``1 − ε/2`` (cancer),
            which keeps the logits finite and the scores graded instead of pinned at 0 and 1. Recorded in
            ``training_params["fusion"]``.
        sections
            ``(n,)`` source section of each spot (any labels); needed only with ``section_alignment``.
        section_alignment
            λ ≥ 0: weight of a penalty on the class-conditional section shift of ``h*`` (0, the default: none).
            In every batch, for each class, the spread across source sections of their mean ``h*``, relative to
            the spread of ``h*`` over the batch (:func:`~spacrd_sc.model._modules.section_shift`), is added to the
            loss times λ, so the fusion and encoders learn features that do not identify the section (batch, patient)
            beyond its tissue mix. Needs ``sections`` with at least two sections; recorded in
            ``training_params["fusion"]``.
        gene_dropout
            p in [0, 1): in every training batch each gene input of each spot is zeroed with probability p (the
            others scaled by 1 / (1 − p); inverted dropout, training only), so the model learns not to rely on any
            few genes, as when a gene is not measured or drops out on another section or platform. 0 (the default):
            none. Not with ``modality="image"``. Recorded in ``training_params["fusion"]``.

        Returns
        -------
        The model itself, with ``is_fitted`` set and the fusion losses appended to ``history``.
        """
        feats, nbr, labels = check_inputs(self._cfg, x_gene, x_image, neighbors, y)
        check_loop_args(epochs, batch_size, lr, len(labels))
        dev = _resolve_device(device)
        if batching not in ("local", "random"):
            raise ValueError(f"batching must be 'local' or 'random', got {batching!r}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        codes = check_sections(sections, section_alignment, len(labels))
        if not 0.0 <= gene_dropout < 1.0:
            raise ValueError(f"gene_dropout must be in [0, 1), got {gene_dropout!r}.")
        if gene_dropout > 0 and not self.uses_genes:
            raise ValueError("gene_dropout drops gene inputs; this model (modality='image') has none.")
        fused_epochs = resolve_fused_epochs(epochs, fused_epochs, use_vae=self._cfg.use_vae)
        if self._cfg.use_contrastive and not self.is_aligned and not self.is_fitted:
            warnings.warn(
                "fit_fusion called before fit_alignment although use_contrastive=True: the encoders start "
                "untrained (as with use_contrastive=False). Call fit_alignment first to use stage 1.",
                UserWarning,
                stacklevel=2,
            )
        sched = (epochs, fused_epochs, batch_size, lr)
        run_fusion(
            self,
            feats,
            nbr,
            labels,
            *sched,
            dev,
            seed,
            progress_bar,
            batching,
            amp,
            label_smoothing,
            sections=codes,
            section_alignment=section_alignment,
            gene_dropout=gene_dropout,
        )
        return self

    # ------------------------------------------------------------------ inference
    def predict(
        self,
        x_gene: np.ndarray | None,
        x_image: np.ndarray | None,
        neighbors: np.ndarray,
        *,
        batch_size: int = 4096,
        device: str | None = None,
        amp: bool = False,
        adapt_batchnorm: bool = False,
    ) -> Prediction:
        """Cancer probability and fused representation of every spot, from one inference pass.

        Parameters
        ----------
        x_gene, x_image, neighbors
            As in :meth:`fit_alignment`, for the section to score (rows index that section).
        batch_size
            Spots per inference batch.
        device
            ``None`` keeps the model where it is; otherwise as in :meth:`fit_alignment`.
        amp
            bf16 autocast (CUDA only).
        adapt_batchnorm
            Re-estimate the encoders' BatchNorm statistics on these spots before scoring (AdaBN: the
            section's own feature statistics replace the training spots'; the model is not changed). Meant
            for one section at a time; no label is read.

        Returns
        -------
        A :class:`Prediction` with ``proba`` (``(n,)`` float32 in [0, 1]; an ensemble's mean over its members)
        and ``embedding`` (``(n, hidden_dims[-1])`` float32, ``h*``; an ensemble's first member's).
        """
        if not self.is_fitted:
            raise NotFittedError("This SpaCRD model is not fitted yet: call fit_alignment and fit_fusion first.")
        feats, nbr, _ = check_inputs(self._cfg, x_gene, x_image, neighbors)
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        dev = self._device if device is None else _resolve_device(device)
        self._move(dev)
        tensors, nbr_t = [torch.from_numpy(f).to(dev) for f in feats], torch.from_numpy(nbr).to(dev)
        nets = self.nets
        if adapt_batchnorm:
            nets = [_adapt(net, tensors, batch_size=int(batch_size), amp=amp) for net in nets]
        passes = [infer(net, tensors, nbr_t, batch_size=int(batch_size), device=dev, amp=amp) for net in nets]
        proba = passes[0][0] if len(passes) == 1 else np.mean([p for p, _ in passes], axis=0, dtype=np.float32)
        return Prediction(proba, passes[0][1])

    def predict_proba(self, x_gene, x_image, neighbors, **kwargs: Any) -> np.ndarray:
        """Cancer probability of every spot: ``(n,)`` float32 (arguments as in :meth:`predict`)."""
        return self.predict(x_gene, x_image, neighbors, **kwargs).proba

    def embed(self, x_gene, x_image, neighbors, **kwargs: Any) -> np.ndarray:
        """Fused representation ``h*`` of every spot: ``(n, hidden_dims[-1])`` float32 (arguments as in
        :meth:`predict`).
        """
        return self.predict(x_gene, x_image, neighbors, **kwargs).embedding

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save to directory ``path``: ``model.safetensors`` (weights), ``config.json`` (everything else) and
        ``manifest.json`` (sha256 and size of both, checked by :meth:`load`). Atomic: written beside ``path`` and
        renamed into place; a save that fails leaves an existing model folder as it was.

        Parameters
        ----------
        path
            Target directory (created if needed).
        overwrite
            Replace the model in an existing non-empty directory (only one holding a saved model and nothing
            else); otherwise :class:`FileExistsError`.
        """
        _io.save_model(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "auto") -> SpaCRD:
        """Load a model written by :meth:`save` (safetensors only, no pickle).

        Parameters
        ----------
        path
            Directory written by :meth:`save`.
        device
            Where to put the weights (``"auto"``, ``"cpu"``, ``"cuda[:N]"``).

        Raises
        ------
        FileNotFoundError
            The directory or one of its files is missing.
        ValueError
            A file added, truncated or changed since saving (named; folders saved before the manifest existed are
            checked by the weights' checksum only, with a warning), invalid config, or weight names/shapes that do
            not match the saved configuration.
        """
        return _io.load_model(cls, path, device=_resolve_device(device))
