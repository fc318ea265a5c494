"""The :class:`SpaCRD` model: array-level training, prediction and save/load (no AnnData here)."""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._logging import logger
from .._utils import _resolve_device
from . import _io
from ._data import as_features, check_labels, check_neighbors, neighbourhood_mean
from ._modules import SpaCRDNet
from ._train import infer, seeded, train_alignment, train_fusion

MODALITIES = ("both", "expression", "image")

#: Defaults measured on a 2-core CPU (≈3000 spots × 3000 genes, k = 6): see the class docstring.
DEFAULT_ALIGN_EPOCHS = 20
DEFAULT_ALIGN_LR = 1e-3
DEFAULT_FUSION_EPOCHS = 30
DEFAULT_FUSION_LR = 5e-4
#: Gene principal components in front of the gene encoder (for 3000 genes: 0.26 M instead of 3.1 M weights
#: in the first layer, and the low-variance gene directions, mostly noise, left out).
DEFAULT_N_PCS = 256
_INIT_SEED = 0


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
    20 epochs, Adam lr 1e-3; fusion 30 epochs (15 + 15), lr 5e-4, batch 512, neighbourhood-grouped
    batches. The reference (lr 1e-5, 100 + 100 epochs) under-trains at this budget.

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
        preprocessing: dict | None = None,
    ):
        if isinstance(genes, str) or not hasattr(genes, "__iter__"):
            raise TypeError("genes must be a sequence of gene names, not a single string.")
        genes = [str(g) for g in genes]
        if not genes and modality != "image":
            raise ValueError("genes is empty: the model needs at least one gene.")
        if len(set(genes)) != len(genes):
            seen, dup = set(), []
            for g in genes:
                if g in seen:
                    dup.append(g)
                seen.add(g)
            raise ValueError(f"genes contains duplicates: {sorted(set(dup))[:10]}.")
        if n_image_features is not None:
            if isinstance(n_image_features, bool) or int(n_image_features) != n_image_features or n_image_features < 1:
                raise ValueError(f"n_image_features must be a positive integer or None, got {n_image_features!r}.")
            n_image_features = int(n_image_features)
        hidden_dims = tuple(int(d) for d in hidden_dims)
        if not hidden_dims or min(hidden_dims) < 1:
            raise ValueError(f"hidden_dims must be positive integers, got {hidden_dims}.")
        if n_heads < 1 or hidden_dims[-1] % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide the embedding size hidden_dims[-1]={hidden_dims[-1]}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        if int(n_neighbors) != n_neighbors or n_neighbors < 0:
            raise ValueError(f"n_neighbors must be a non-negative integer, got {n_neighbors}.")
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}.")
        if beta < 0 or gamma < 0:
            raise ValueError(f"beta and gamma must be >= 0, got beta={beta}, gamma={gamma}.")
        if n_pcs is not None and (isinstance(n_pcs, bool) or int(n_pcs) != n_pcs or n_pcs < 1):
            raise ValueError(f"n_pcs must be a positive integer or None, got {n_pcs!r}.")
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")
        if modality == "image" and n_image_features is None:
            raise ValueError("modality='image' needs n_image_features (the size of the image features).")
        if preprocessing is not None and not isinstance(preprocessing, dict):
            raise TypeError(f"preprocessing must be a dict or None, got {type(preprocessing).__name__}.")
        try:
            preprocessing = json.loads(json.dumps(preprocessing or {}))
        except (TypeError, ValueError) as err:
            raise ValueError(f"preprocessing must be JSON-serialisable ({err}).") from err

        self.genes: list[str] = genes
        self.n_image_features = n_image_features
        self.preprocessing: dict = preprocessing
        self._config: dict[str, Any] = {
            "genes": list(genes),
            "n_image_features": n_image_features,
            "hidden_dims": list(hidden_dims),
            "dropout": float(dropout),
            "temperature": float(temperature),
            "alpha": float(alpha),
            "n_heads": int(n_heads),
            "n_neighbors": int(n_neighbors),
            "latent_dim": int(latent_dim),
            "beta": float(beta),
            "gamma": float(gamma),
            "use_contrastive": bool(use_contrastive),
            "use_cross_attention": bool(use_cross_attention),
            "use_vae": bool(use_vae),
            "modality": modality,
            "n_pcs": None if n_pcs is None else int(n_pcs),
        }
        if modality == "both" and n_image_features is None:
            self.mode = "expression"
            logger.info("SpaCRD: no image features (n_image_features=None): image-less, expression-only model.")
        else:
            self.mode = modality
        self.history: dict[str, list[float]] = {}
        self.alignment: str = "not run"
        self.training_params: dict[str, Any] = {}
        self.is_aligned = False
        self.is_fitted = False
        self._device = "cpu"
        self.net = self._build(_INIT_SEED)

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
    def device(self) -> str:
        """Device holding the weights."""
        return self._device

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able; ``SpaCRD(**config, preprocessing=...)`` rebuilds the model)."""
        return copy.deepcopy(self._config)

    @property
    def mode_description(self) -> str:
        """Plain-language description of what this model does with its inputs."""
        c = self._config
        k = c["n_neighbors"]
        if self.mode == "both":
            fuse = (
                "H&E-guided and gene-guided cross-attention over the spot and its neighbours"
                if c["use_cross_attention"]
                else "concatenated centre-spot image and gene embeddings (no cross-attention)"
            )
            stage1 = "image/gene InfoNCE alignment" if c["use_contrastive"] else "no alignment (ablation)"
            text = f"image + expression; stage 1: {stage1}; fusion: {fuse} (k={k})"
        else:
            what = "expression" if self.mode == "expression" else "image"
            why = " (no image features)" if self.mode == "expression" and self.n_image_features is None else ""
            fuse = (
                f"attention from the centre {what} token over its own neighbourhood (k={k})"
                if c["use_cross_attention"]
                else f"centre-spot {what} embedding only"
            )
            stage1 = (
                f"label-free neighbourhood contrast (a spot's {what} vs the mean of its neighbours')"
                if c["use_contrastive"]
                else "no alignment (ablation)"
            )
            text = f"{what} only{why}; stage 1: {stage1}; fusion: {fuse}"
        enc = self.net.gene_encoder
        if enc is not None and enc.n_pcs is not None:
            text += f"; genes enter as {enc.n_pcs} principal components of the training spots"
        head = (
            "category-regularised VAE + discriminator on [mu, logvar]"
            if c["use_vae"]
            else "discriminator on h* (no VAE)"
        )
        return f"{text}; head: {head}."

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else ("aligned" if self.is_aligned else "untrained")
        return (
            f"SpaCRD({self.mode}, n_genes={self.n_genes}, n_image_features={self.n_image_features}, "
            f"{state}, device={self.device!r})"
        )

    # ------------------------------------------------------------------ internals
    def _build(self, seed: int) -> SpaCRDNet:
        c = self._config
        with seeded(seed, "cpu"):
            net = SpaCRDNet(
                self.n_genes if self.uses_genes else None,
                self.n_image_features if self.mode in ("both", "image") else None,
                hidden_dims=c["hidden_dims"],
                dropout=c["dropout"],
                n_heads=c["n_heads"],
                latent_dim=c["latent_dim"],
                use_cross_attention=c["use_cross_attention"],
                use_vae=c["use_vae"],
                n_pcs=c["n_pcs"],
            )
        return net.to(self._device)

    def _fit_pca(self, feats: list[np.ndarray], seed: int) -> None:
        """Fit the gene encoder's PCA projection (if any) on the gene features of the training spots."""
        enc = self.net.gene_encoder
        if enc is None or enc.n_pcs is None:
            return
        t0 = time.perf_counter()
        explained = enc.fit_pca(feats[-1], seed)
        self.training_params["pca"] = {
            "n_pcs": enc.n_pcs,
            "n_spots": int(feats[-1].shape[0]),
            "variance_explained": round(explained, 4),
            "seconds": round(time.perf_counter() - t0, 2),
        }
        logger.info("SpaCRD: %d gene PCs explain %.1f%% of the variance.", enc.n_pcs, 100 * explained)

    def _check_inputs(
        self, x_gene: Any, x_image: Any, neighbors: Any, y: Any = None
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
        """Validate all inputs; return the features in stream order (image first), neighbours, labels."""
        feats: list[np.ndarray] = []
        n_rows: dict[str, int] = {}
        if self.mode in ("both", "image"):
            if x_image is None:
                raise ValueError(
                    f"x_image is None but this model ({self.mode!r} mode) uses {self.n_image_features} image features."
                )
            feats.append(as_features(x_image, "x_image", self.n_image_features, "image features"))
            n_rows["x_image"] = feats[-1].shape[0]
        elif x_image is not None:
            logger.info("SpaCRD (%s mode) ignores x_image.", self.mode)
        if self.uses_genes:
            feats.append(as_features(x_gene, "x_gene", self.n_genes, "genes"))
            n_rows["x_gene"] = feats[-1].shape[0]
        if len(set(n_rows.values())) > 1:
            raise ValueError(f"x_gene and x_image have different numbers of spots: {n_rows}.")
        n = feats[0].shape[0]
        if n < 1:
            raise ValueError("The inputs hold no spots.")
        nbr = check_neighbors(neighbors, n, self._config["n_neighbors"])
        labels = check_labels(y, n) if y is not None else None
        return feats, nbr, labels

    def _move(self, device: str) -> None:
        if device != self._device:
            self.net.to(device)
            self._device = device

    @staticmethod
    def _check_loop_args(epochs: int, batch_size: int, lr: float, n_spots: int) -> None:
        if n_spots < 2:
            raise ValueError(f"Training needs at least 2 spots, got {n_spots}.")
        if int(epochs) != epochs or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs}.")
        if int(batch_size) != batch_size or batch_size < 2:
            raise ValueError(f"batch_size must be an integer >= 2, got {batch_size}.")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}.")

    # ------------------------------------------------------------------ training
    def fit_alignment(
        self,
        x_gene: np.ndarray | None,
        x_image: np.ndarray | None,
        neighbors: np.ndarray,
        *,
        epochs: int = DEFAULT_ALIGN_EPOCHS,
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
        epochs, batch_size, lr
            Adam optimisation settings.
        device
            ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:N]"``; the model stays there.
        seed
            Seeds weight initialisation, shuffling, dropout (same seed + device → same model).
        progress_bar
            Show a ``tqdm`` bar over epochs.
        amp
            bf16 autocast (CUDA only).

        Returns
        -------
        The model itself, with ``is_aligned`` set and ``history["align"]`` extended.
        """
        feats, nbr, _ = self._check_inputs(x_gene, x_image, neighbors)
        self._check_loop_args(epochs, batch_size, lr, feats[0].shape[0])
        dev = _resolve_device(device)
        if not self._config["use_contrastive"]:
            self.alignment = "skipped (use_contrastive=False)"
            logger.info("SpaCRD: use_contrastive=False, stage-1 alignment skipped.")
            return self
        if self.mode == "both":
            views = feats
        else:
            means, has = neighbourhood_mean(feats[0], nbr)
            if has.sum() < 2:
                raise ValueError(
                    "Neighbourhood contrast needs at least 2 spots with neighbours; neighbors is all padding."
                )
            views = [feats[0][has], means[has]]
        self._move(dev)
        t0 = time.perf_counter()
        with seeded(seed, dev):
            self.net = self._build(seed)
            self._fit_pca(feats, seed)
            self.is_fitted = False
            tensors = [torch.from_numpy(v).to(dev) for v in views]
            hist = train_alignment(
                self.net,
                tensors,
                epochs=int(epochs),
                batch_size=int(min(batch_size, tensors[0].shape[0])),
                lr=float(lr),
                temperature=self._config["temperature"],
                alpha=self._config["alpha"],
                rng=np.random.default_rng(seed),
                device=dev,
                progress_bar=progress_bar,
                amp=amp,
            )
        elapsed = time.perf_counter() - t0
        self.history.setdefault("align", []).extend(hist)
        self.alignment = "image-gene InfoNCE" if self.mode == "both" else "neighbourhood InfoNCE"
        self.is_aligned = True
        self.training_params["alignment"] = {
            "epochs": int(epochs),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "seed": int(seed),
            "device": dev,
            "n_spots": int(views[0].shape[0]),
            "seconds": round(elapsed, 2),
        }
        logger.info("SpaCRD alignment: %d epochs in %.1f s (final loss %.4f).", epochs, elapsed, hist[-1])
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

        Returns
        -------
        The model itself, with ``is_fitted`` set and the fusion losses appended to ``history``.
        """
        feats, nbr, labels = self._check_inputs(x_gene, x_image, neighbors, y)
        self._check_loop_args(epochs, batch_size, lr, len(labels))
        dev = _resolve_device(device)
        if batching not in ("local", "random"):
            raise ValueError(f"batching must be 'local' or 'random', got {batching!r}.")
        use_vae = self._config["use_vae"]
        if fused_epochs is None:
            fused_epochs = int(epochs) // 2 if use_vae else 0
        if int(fused_epochs) != fused_epochs or fused_epochs < 0:
            raise ValueError(f"fused_epochs must be a non-negative integer, got {fused_epochs}.")
        if not use_vae and fused_epochs:
            logger.info(
                "SpaCRD: use_vae=False, fused_epochs=%d ignored (every epoch trains the classifier).",
                fused_epochs,
            )
            fused_epochs = 0
        if fused_epochs >= epochs:
            raise ValueError(
                f"fused_epochs={fused_epochs} leaves no classifier epoch out of epochs={epochs}; "
                "use fused_epochs < epochs."
            )
        if self._config["use_contrastive"] and not self.is_aligned and not self.is_fitted:
            warnings.warn(
                "fit_fusion called before fit_alignment although use_contrastive=True: the encoders start "
                "untrained (as with use_contrastive=False). Call fit_alignment first to use stage 1.",
                UserWarning,
                stacklevel=2,
            )
        self._move(dev)
        t0 = time.perf_counter()
        with seeded(seed, dev):
            if not self.is_fitted:
                fresh = self._build(seed)
                if self.is_aligned:
                    for name in ("fusion", "vae", "discriminator"):
                        setattr(self.net, name, getattr(fresh, name))
                else:
                    self.net = fresh
                    self._fit_pca(feats, seed)
            hist = train_fusion(
                self.net,
                [torch.from_numpy(f).to(dev) for f in feats],
                torch.from_numpy(nbr).to(dev),
                nbr,
                torch.from_numpy(labels).to(dev),
                epochs=int(epochs),
                fused_epochs=int(fused_epochs),
                batch_size=int(min(batch_size, len(labels))),
                lr=float(lr),
                beta=self._config["beta"],
                gamma=self._config["gamma"],
                rng=np.random.default_rng(seed),
                device=dev,
                progress_bar=progress_bar,
                batching=batching,
                amp=amp,
            )
        elapsed = time.perf_counter() - t0
        for k, v in hist.items():
            self.history.setdefault(k, []).extend(v)
        self.is_fitted = True
        self.training_params["fusion"] = {
            "epochs": int(epochs),
            "fused_epochs": int(fused_epochs),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "seed": int(seed),
            "device": dev,
            "batching": batching,
            "n_spots": int(len(labels)),
            "n_cancer": int(labels.sum()),
            "seconds": round(elapsed, 2),
            "aligned": self.is_aligned,
        }
        logger.info("SpaCRD fusion: %d epochs in %.1f s.", epochs, elapsed)
        return self

    # ------------------------------------------------------------------ inference
    def _infer(self, x_gene, x_image, neighbors, batch_size, device, output, amp) -> np.ndarray:
        if not self.is_fitted:
            raise NotFittedError("This SpaCRD model is not fitted yet: call fit_alignment and fit_fusion first.")
        feats, nbr, _ = self._check_inputs(x_gene, x_image, neighbors)
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        dev = self._device if device is None else _resolve_device(device)
        self._move(dev)
        return infer(
            self.net,
            [torch.from_numpy(f).to(dev) for f in feats],
            torch.from_numpy(nbr).to(dev),
            batch_size=int(batch_size),
            output=output,
            device=dev,
            amp=amp,
        )

    def predict_proba(
        self,
        x_gene: np.ndarray | None,
        x_image: np.ndarray | None,
        neighbors: np.ndarray,
        *,
        batch_size: int = 4096,
        device: str | None = None,
        amp: bool = False,
    ) -> np.ndarray:
        """Cancer probability of every spot.

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
        ``(n,)`` float32 probabilities in [0, 1].
        """
        return self._infer(x_gene, x_image, neighbors, batch_size, device, "proba", amp)

    def embed(
        self,
        x_gene: np.ndarray | None,
        x_image: np.ndarray | None,
        neighbors: np.ndarray,
        *,
        batch_size: int = 4096,
        device: str | None = None,
        amp: bool = False,
    ) -> np.ndarray:
        """Fused representation ``h*`` of every spot (arguments as in :meth:`predict_proba`).

        Returns
        -------
        ``(n, hidden_dims[-1])`` float32 (512 by default).
        """
        return self._infer(x_gene, x_image, neighbors, batch_size, device, "embedding", amp)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save to directory ``path``: ``model.safetensors`` (weights) and ``config.json`` (everything else).

        Parameters
        ----------
        path
            Target directory (created if needed).
        overwrite
            Replace the model in an existing non-empty directory; otherwise :class:`FileExistsError`.
        """
        meta = {
            "config": self.config,
            "preprocessing": self.preprocessing,
            "mode": self.mode,
            "mode_description": self.mode_description,
            "state": {
                "is_aligned": self.is_aligned,
                "is_fitted": self.is_fitted,
                "alignment": self.alignment,
            },
            "training_params": self.training_params,
            "history": self.history,
        }
        out = _io.write_model_dir(path, self.net.state_dict(), meta, overwrite=overwrite)
        logger.info("SpaCRD saved to %s.", out)

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
            The directory or one of its two files is missing.
        ValueError
            Invalid config, weights modified since saving, or weight names/shapes that do not match
            the saved configuration.
        """
        meta = _io.read_config(path)
        if isinstance(meta["config"], dict):
            meta["config"].setdefault("n_pcs", None)  # saved before n_pcs existed: genes fed directly
        dev = _resolve_device(device)
        try:
            model = cls(**meta["config"], preprocessing=meta.get("preprocessing"))
        except TypeError as err:
            raise ValueError(f"config.json in {str(path)!r} holds invalid constructor arguments ({err}).") from err
        expected = {k: v.shape for k, v in model.net.state_dict().items()}
        tensors = _io.read_weights(path, meta, expected, dev)
        model._move(dev)
        model.net.load_state_dict(tensors, strict=True)
        state = meta.get("state", {})
        model.is_aligned = bool(state.get("is_aligned", False))
        model.is_fitted = bool(state.get("is_fitted", False))
        model.alignment = str(state.get("alignment", "not run"))
        model.history = {k: [float(x) for x in v] for k, v in meta.get("history", {}).items()}
        model.training_params = meta.get("training_params", {})
        saved_version = meta.get("package_version")
        if saved_version != _io.package_version():
            logger.info(
                "SpaCRD at %s was saved by spacrd_sc %s (running %s).",
                path,
                saved_version,
                _io.package_version(),
            )
        return model
