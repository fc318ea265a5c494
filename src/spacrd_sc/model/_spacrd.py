"""The :class:`SpaCRD` model: array-level training, prediction and save/load (no AnnData here)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from .._logging import logger
from .._utils import _resolve_device
from . import _hub, _io
from ._config import DEFAULT_PREDICT_BATCH_SIZE, ModelConfig, TrainingConfig, _check_int, json_record
from ._data import check_inputs, check_loop_args, resolve_fused_epochs
from ._loops import Trained, build_net, infer, run_alignment, run_fusion
from ._modules import SpaCRDNet

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

    The constructor's defaults are :class:`~spacrd_sc.model.ModelConfig`'s; the training defaults are
    :class:`~spacrd_sc.model.TrainingConfig`'s (both in ``spacrd_sc/model/_config.py``).

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
        times as long. Saved and loaded as one model; ``n_members=1`` trains a third as long as the default.
    preprocessing
        JSON-able record of how the caller prepared the features; stored and saved as is.

    Attributes
    ----------
    history
        Per-epoch losses: ``align`` (stage 1), ``fused``, ``recon``, ``kl`` (every fusion epoch, with
        the VAE), ``bce`` and ``cls`` (classifier epochs). Repeated fits append.
    training_config
        The :class:`~spacrd_sc.model.TrainingConfig` of the last training call (saved with the model).
    training_params
        What each stage did (settings, seeds, device, spots, seconds; ``"pca"``: the gene PCA).
    """

    def __init__(
        self,
        genes: Sequence[str],
        n_image_features: int | None = None,
        *,
        hidden_dims: Sequence[int] = ModelConfig.hidden_dims,
        dropout: float = ModelConfig.dropout,
        temperature: float = ModelConfig.temperature,
        alpha: float = ModelConfig.alpha,
        n_heads: int = ModelConfig.n_heads,
        n_neighbors: int = ModelConfig.n_neighbors,
        latent_dim: int = ModelConfig.latent_dim,
        beta: float = ModelConfig.beta,
        gamma: float = ModelConfig.gamma,
        use_contrastive: bool = ModelConfig.use_contrastive,
        use_cross_attention: bool = ModelConfig.use_cross_attention,
        use_vae: bool = ModelConfig.use_vae,
        modality: str = ModelConfig.modality,
        n_pcs: int | None = ModelConfig.n_pcs,
        n_members: int = ModelConfig.n_members,
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
        self.training_config = TrainingConfig()
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

    def _store(self, trained: Trained, train: TrainingConfig) -> None:
        """Keep what a training run returned: networks, appended losses, records, the config used."""
        self.nets = trained.nets
        for k, v in trained.history.items():
            self.history.setdefault(k, []).extend(v)
        self.training_params.update(trained.params)
        self.training_config = train

    def _restore(self, meta: Mapping[str, Any]) -> None:
        """Training state of a saved model (``config.json`` entries; absent ones keep the untrained values)."""
        state = meta.get("state", {})
        self.is_aligned = bool(state.get("is_aligned", False))
        self.is_fitted = bool(state.get("is_fitted", False))
        self.alignment = str(state.get("alignment", "not run"))
        self.history = {k: [float(x) for x in v] for k, v in meta.get("history", {}).items()}
        self.training_params = meta.get("training_params", {})
        self.training_config = TrainingConfig.from_dict(meta.get("training_config"))

    def _training_config(self, stage: str, config: TrainingConfig | None, overrides: dict[str, Any]) -> TrainingConfig:
        if config is not None and not isinstance(config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig or None, got {type(config).__name__}.")
        return (config or TrainingConfig()).for_stage(stage, **overrides)

    # ------------------------------------------------------------------ training
    def fit_alignment(
        self,
        x_gene: np.ndarray | None,
        x_image: np.ndarray | None,
        neighbors: np.ndarray,
        *,
        config: TrainingConfig | None = None,
        device: str = "auto",
        progress_bar: bool = True,
        **overrides: Any,
    ) -> SpaCRD:
        """Stage 1: train the encoders contrastively (re-initialises all weights from the seed).

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
        config
            Training settings; default: ``TrainingConfig()`` (every default), changed by ``overrides``.
        device
            ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:N]"``; the model stays there.
        progress_bar
            Show a ``tqdm`` bar over epochs.
        **overrides
            Fields of :class:`~spacrd_sc.model.TrainingConfig` to change for this call; ``epochs`` and ``lr``
            stand for ``align_epochs`` and ``align_lr`` (e.g. ``fit_alignment(..., epochs=5, seed=1)``).

        Returns
        -------
        The model itself, with ``is_aligned`` set and ``history["align"]`` extended.
        """
        train = self._training_config("alignment", config, overrides)
        feats, nbr, _ = check_inputs(self._cfg, x_gene, x_image, neighbors)
        check_loop_args(train.alignment_epochs(self.mode), train.batch_size, train.align_lr, feats[0].shape[0])
        dev = _resolve_device(device)
        if not self._cfg.use_contrastive:
            self.alignment = "skipped (use_contrastive=False)"
            logger.info("SpaCRD: use_contrastive=False, stage-1 alignment skipped.")
            return self
        self._move(dev)
        self._store(run_alignment(self._cfg, train, feats, nbr, device=dev, progress_bar=progress_bar), train)
        self.is_fitted = False
        self.alignment = "image-gene InfoNCE" if self.mode == "both" else "neighbourhood InfoNCE"
        self.is_aligned = True
        return self

    def fit_fusion(
        self,
        x_gene: np.ndarray | None,
        x_image: np.ndarray | None,
        neighbors: np.ndarray,
        y: np.ndarray,
        *,
        config: TrainingConfig | None = None,
        device: str = "auto",
        progress_bar: bool = True,
        **overrides: Any,
    ) -> SpaCRD:
        """Stages 2 + 3: train the fusion, the VAE and the discriminator (encoders not frozen).

        On an aligned model the fusion, VAE and discriminator start fresh from the seed and the aligned
        encoders are kept; on a model that is already fitted, training continues from its weights.
        Calling it on an unaligned model while ``use_contrastive=True`` warns and trains the
        encoders from scratch (the ``use_contrastive=False`` ablation in effect).

        Parameters
        ----------
        x_gene, x_image, neighbors
            As in :meth:`fit_alignment`.
        y
            ``(n,)`` labels, 1 = cancer, 0 = not (bool or integer); both classes must occur.
        config, device, progress_bar
            As in :meth:`fit_alignment`.
        **overrides
            Fields of :class:`~spacrd_sc.model.TrainingConfig` to change for this call; ``epochs`` and ``lr``
            stand for ``fusion_epochs`` and ``fusion_lr`` (e.g. ``fit_fusion(..., epochs=8, fused_epochs=4)``).

        Returns
        -------
        The model itself, with ``is_fitted`` set and the fusion losses appended to ``history``.
        """
        train = self._training_config("fusion", config, overrides)
        feats, nbr, labels = check_inputs(self._cfg, x_gene, x_image, neighbors, y)
        check_loop_args(train.fusion_epochs, train.batch_size, train.fusion_lr, len(labels))
        dev = _resolve_device(device)
        fused = resolve_fused_epochs(train.fusion_epochs, train.fused_epochs, use_vae=self._cfg.use_vae)
        if self._cfg.use_contrastive and not self.is_aligned and not self.is_fitted:
            warnings.warn(
                "fit_fusion called before fit_alignment although use_contrastive=True: the encoders start "
                "untrained (as with use_contrastive=False). Call fit_alignment first to use stage 1.",
                UserWarning,
                stacklevel=2,
            )
        start = "continue" if self.is_fitted else ("aligned" if self.is_aligned else "fresh")
        self._move(dev)
        trained = run_fusion(
            self._cfg,
            train.for_stage("fusion", fused_epochs=fused),
            (feats, nbr, labels),
            self.nets,
            start=start,
            device=dev,
            progress_bar=progress_bar,
        )
        trained.params["fusion"]["aligned"] = self.is_aligned
        self._store(trained, train)
        self.is_fitted = True
        return self

    # ------------------------------------------------------------------ inference
    def predict(
        self,
        x_gene: np.ndarray | None,
        x_image: np.ndarray | None,
        neighbors: np.ndarray,
        *,
        batch_size: int = DEFAULT_PREDICT_BATCH_SIZE,
        device: str | None = None,
        amp: bool = False,
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

        Returns
        -------
        A :class:`Prediction` with ``proba`` (``(n,)`` float32 in [0, 1]; an ensemble's mean over its members)
        and ``embedding`` (``(n, hidden_dims[-1])`` float32, ``h*``; an ensemble's first member's).
        """
        if not self.is_fitted:
            raise NotFittedError("This SpaCRD model is not fitted yet: call fit_alignment and fit_fusion first.")
        feats, nbr, _ = check_inputs(self._cfg, x_gene, x_image, neighbors)
        batch_size = _check_int(batch_size, "batch_size", 1)
        dev = self._device if device is None else _resolve_device(device)
        self._move(dev)
        tensors, nbr_t = [torch.from_numpy(f).to(dev) for f in feats], torch.from_numpy(nbr).to(dev)
        passes = [infer(net, tensors, nbr_t, batch_size=int(batch_size), device=dev, amp=amp) for net in self.nets]
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

    # the hub (bodies and docstrings in _hub.py): the folder of save() plus a model card
    save_pretrained = _hub.save_pretrained
    from_pretrained = classmethod(_hub.from_pretrained)
    push_to_hub = _hub.push_to_hub
