"""Every default of the model in one file: :class:`ModelConfig` (what the network is) and :class:`TrainingConfig`
(how it is trained), both checked on construction and saved with the model (``config.json``)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODALITIES = ("both", "expression", "image")
#: Spatial neighbours of each spot: the ``k`` of the squidpy graph and of the model's token sequence (the 6
#: adjacent spots of a Visium / legacy-ST grid).
N_NEIGHBORS = 6
#: Gene principal components in front of the gene encoder (for 3000 genes: 0.26 M instead of 3.1 M weights
#: in the first layer, and the low-variance gene directions, mostly noise, left out).
DEFAULT_N_PCS = 256
#: Networks per model (a seed ensemble; probabilities averaged; member ``i`` trained from seed ``seed + i``).
#: Part of :class:`ModelConfig`, not :class:`TrainingConfig`: the saved weights hold one network per member.
DEFAULT_N_MEMBERS = 3
#: Stage-1 epochs of the single-encoder modes (the label-free neighbourhood contrast of the image-less model).
DEFAULT_ALIGN_EPOCHS = 5
#: Stage-1 epochs of the image-gene alignment (``mode="both"``; not measurable on her2st, which has no labelled H&E).
DEFAULT_ALIGN_EPOCHS_IMAGE_GENE = 20
DEFAULT_ALIGN_LR = 1e-3
#: Fusion epochs (stages 2 + 3): the first half optimise ``L_fused``, the rest ``L_cls``. Short training leaves the
#: scores of unseen patients graded instead of pinned at 0 and 1.
DEFAULT_FUSION_EPOCHS = 8
DEFAULT_FUSION_LR = 5e-4
DEFAULT_BATCH_SIZE = 512
#: Spots per inference batch of :meth:`~spacrd_sc.SpaCRD.predict`.
DEFAULT_PREDICT_BATCH_SIZE = 4096
BATCHINGS = ("local", "random")
#: Options that earlier versions offered and that were removed (not adopted by the nested comparison on her2st),
#: with the value that means "off". A saved model that used one (another value) is refused with a clear error.
REMOVED_MODEL_OPTIONS = {"linear_skip": False}
REMOVED_TRAINING_OPTIONS = {"label_smoothing": 0.0, "section_alignment": 0.0, "gene_dropout": 0.0}


def check_removed(d: Mapping[str, Any], removed: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``d`` without the entries of removed options that are off; a clear error for one that is on."""
    on = {k: d[k] for k in removed if k in d and d[k] != removed[k]}
    if on:
        name, value = next(iter(on.items()))
        raise ValueError(
            f"This {what} uses {name}={value!r}, an option removed from spacrd_sc (it was not adopted); "
            "load and use it with spacrd_sc 0.x before the removal, or train a new model."
        )
    return {k: v for k, v in d.items() if k not in removed}


def _saved_entries(cls: type, d: Any, removed: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The entries of a saved ``what`` config (``"model"`` / ``"training"``) for ``cls``: a mapping, without the
    removed options that are off (one that is on is refused by :func:`check_removed`), and no unknown entry."""
    if not isinstance(d, Mapping):
        raise ValueError(f"A {what} config must be a mapping, got {type(d).__name__}.")
    d = check_removed(d, removed, f"saved {what} config")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"Unknown {what} config entries {unknown}; known: {sorted(known)}.")
    return d


def _positive_int_or_none(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or int(value) != value
        or value < 1
    ):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
    return int(value)


def _check_real(value: Any, name: str) -> float:
    """A finite real number (bools refused), or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def _check_bool(value: Any, name: str) -> bool:
    """``True`` / ``False`` (numpy bools too); anything else (e.g. the string ``"no"``) is a TypeError."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def json_record(value: dict | None, name: str) -> dict:
    """A JSON-able deep copy of ``value`` (``{}`` for ``None``), or a clear error naming ``name``."""
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict or None, got {type(value).__name__}.")
    try:
        return json.loads(json.dumps(value or {}))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be JSON-serialisable ({err}).") from err


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a SpaCRD network (the ``config`` entry of a saved model's ``config.json``).

    Fields are the :class:`~spacrd_sc.SpaCRD` constructor arguments (see there); construction checks them
    and raises :class:`ValueError` / :class:`TypeError` naming the bad one.
    """

    genes: tuple[str, ...]
    n_image_features: int | None = None
    hidden_dims: tuple[int, ...] = (1024, 512, 512)
    dropout: float = 0.2
    temperature: float = 0.07
    alpha: float = 0.5
    n_heads: int = 8
    n_neighbors: int = N_NEIGHBORS
    latent_dim: int = 64
    beta: float = 0.5
    gamma: float = 0.1
    use_contrastive: bool = True
    use_cross_attention: bool = True
    use_vae: bool = True
    modality: str = "both"
    n_pcs: int | None = field(default=DEFAULT_N_PCS)
    n_members: int = DEFAULT_N_MEMBERS

    def __post_init__(self) -> None:
        genes = self.genes
        if isinstance(genes, str) or not hasattr(genes, "__iter__"):
            raise TypeError("genes must be a sequence of gene names, not a single string.")
        genes = tuple(genes)
        bad = [g for g in genes if not isinstance(g, str) or not g]
        if bad:
            raise TypeError(f"genes must be non-empty strings; found {bad[:5]!r}.")
        if not genes and self.modality != "image":
            raise ValueError("genes is empty: the model needs at least one gene.")
        if len(set(genes)) != len(genes):
            seen: set[str] = set()
            dup = {g for g in genes if g in seen or seen.add(g)}
            raise ValueError(f"genes contains duplicates: {sorted(dup)[:10]}.")
        if isinstance(self.hidden_dims, str) or not hasattr(self.hidden_dims, "__iter__"):
            raise TypeError(f"hidden_dims must be a sequence of layer sizes, got {self.hidden_dims!r}.")
        hidden_dims = tuple(_check_int(d, "hidden_dims", 0) for d in self.hidden_dims)
        if not hidden_dims or min(hidden_dims) < 1:
            raise ValueError(f"hidden_dims must be positive integers, got {hidden_dims}.")
        n_heads = _check_int(self.n_heads, "n_heads", 0)
        if n_heads < 1 or hidden_dims[-1] % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide the embedding size hidden_dims[-1]={hidden_dims[-1]}.")
        dropout, temperature, alpha = (_check_real(getattr(self, k), k) for k in ("dropout", "temperature", "alpha"))
        beta, gamma = _check_real(self.beta, "beta"), _check_real(self.gamma, "gamma")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}.")
        n_neighbors = _check_int(self.n_neighbors, "n_neighbors", 0)
        if _check_int(self.latent_dim, "latent_dim", 0) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}.")
        if beta < 0 or gamma < 0:
            raise ValueError(f"beta and gamma must be >= 0, got beta={self.beta}, gamma={self.gamma}.")
        flags = {k: _check_bool(getattr(self, k), k) for k in ("use_contrastive", "use_cross_attention", "use_vae")}
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}.")
        n_image = _positive_int_or_none(self.n_image_features, "n_image_features")
        if isinstance(self.n_members, bool) or int(self.n_members) != self.n_members or self.n_members < 1:
            raise ValueError(f"n_members must be a positive integer, got {self.n_members!r}.")
        if self.modality == "image" and n_image is None:
            raise ValueError("modality='image' needs n_image_features (the size of the image features).")
        normalised = {
            "genes": genes,
            "n_image_features": n_image,
            "hidden_dims": hidden_dims,
            "dropout": dropout,
            "temperature": temperature,
            "alpha": alpha,
            "n_heads": n_heads,
            "n_neighbors": n_neighbors,
            "latent_dim": int(self.latent_dim),
            "beta": beta,
            "gamma": gamma,
            **flags,
            "n_pcs": _positive_int_or_none(self.n_pcs, "n_pcs"),
            "n_members": int(self.n_members),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ derived
    @property
    def mode(self) -> str:
        """``"both"``, ``"image"``, or ``"expression"`` (also for ``modality="both"`` without image features)."""
        return "expression" if self.modality == "both" and self.n_image_features is None else self.modality

    @property
    def effective_n_pcs(self) -> int | None:
        """Gene PCs actually used (``None`` when ``n_pcs`` is unset, not below the gene count, or no genes)."""
        if self.mode == "image" or self.n_pcs is None or self.n_pcs >= len(self.genes):
            return None
        return self.n_pcs

    def describe(self) -> str:
        """Plain-language description of what a model with this configuration does with its inputs."""
        k, mode = self.n_neighbors, self.mode
        if mode == "both":
            fuse = (
                "H&E-guided and gene-guided cross-attention over the spot and its neighbours"
                if self.use_cross_attention
                else "concatenated centre-spot image and gene embeddings (no cross-attention)"
            )
            stage1 = "image/gene InfoNCE alignment" if self.use_contrastive else "no alignment (ablation)"
            text = f"image + expression; stage 1: {stage1}; fusion: {fuse} (k={k})"
        else:
            what = mode
            why = " (no image features)" if mode == "expression" and self.n_image_features is None else ""
            fuse = (
                f"attention from the centre {what} token over its own neighbourhood (k={k})"
                if self.use_cross_attention
                else f"centre-spot {what} embedding only"
            )
            stage1 = (
                f"label-free neighbourhood contrast (a spot's {what} vs the mean of its neighbours')"
                if self.use_contrastive
                else "no alignment (ablation)"
            )
            text = f"{what} only{why}; stage 1: {stage1}; fusion: {fuse}"
        if self.effective_n_pcs is not None:
            text += f"; genes enter as {self.effective_n_pcs} principal components of the training spots"
        head = "category-regularised VAE + discriminator on [mu, logvar]"
        if not self.use_vae:
            head = "discriminator on h* (no VAE)"
        text = f"{text}; head: {head}"
        if self.n_members > 1:
            text += f"; an ensemble of {self.n_members} networks from consecutive seeds (probabilities averaged)"
        return f"{text}."

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (lists for the sequences), the ``config`` entry of ``config.json``."""
        out = dataclasses.asdict(self)
        out["genes"] = list(self.genes)
        out["hidden_dims"] = list(self.hidden_dims)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; also reads configs saved before ``n_pcs`` existed (genes fed directly) and
        before ``n_members`` existed (one network), and those that name a removed option switched off."""
        d = _saved_entries(cls, d, REMOVED_MODEL_OPTIONS, "model")
        if "genes" not in d:
            raise ValueError("The model config has no 'genes' entry.")
        return cls(**{"n_pcs": None, "n_members": 1, **d})

    @classmethod
    def build(cls, genes: Sequence[str], n_image_features: int | None = None, **kwargs: Any) -> ModelConfig:
        """Like the constructor, but genes may be any sequence (a list, an Index) and are copied."""
        if isinstance(genes, str) or not hasattr(genes, "__iter__"):
            raise TypeError("genes must be a sequence of gene names, not a single string.")
        return cls(tuple(genes), n_image_features, **kwargs)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or int(value) != value
        or value < minimum
    ):
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {what}, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class TrainingConfig:
    """How a SpaCRD model is trained: every training default, checked on construction (the ``training_config``
    entry of a saved model's ``config.json``).

    :func:`spacrd_sc.tl.align` and :func:`spacrd_sc.tl.fit_vrbca` build one from their keyword arguments;
    :meth:`~spacrd_sc.SpaCRD.fit_alignment` and :meth:`~spacrd_sc.SpaCRD.fit_fusion` take one (``config=``) or
    start from the model's own (:attr:`~spacrd_sc.SpaCRD.training_config`).

    Defaults, measured on a 2-core CPU (≈3000 spots × 3000 genes, k = 6): alignment 5 epochs for the image-less
    model (20 for the image-gene alignment), Adam lr 1e-3; fusion 8 epochs (4 + 4), lr 5e-4; batches of 512 spots
    made of compact neighbourhood groups. The reference (lr 1e-5, 100 + 100 epochs) under-trains at this budget;
    the values were chosen by nested leave-one-section-out CV on her2st (``benchmarks/README.md``).

    Parameters
    ----------
    align_epochs
        Stage-1 epochs; ``None``: 5 for the single-encoder modes, 20 for the image-gene alignment.
    align_lr
        Stage-1 Adam learning rate.
    fusion_epochs
        Stages 2 + 3 epochs.
    fused_epochs
        Leading fusion epochs that optimise ``L_fused`` only; ``None``: half of ``fusion_epochs`` (0 without
        the VAE). Must leave at least one classifier epoch.
    fusion_lr
        Stages 2 + 3 Adam learning rate.
    batch_size
        Spots per training batch (capped at the number of spots).
    batching
        ``"local"``: batches of compact groups of 16 neighbouring spots, which share most neighbour rows so
        ≈ 2× fewer rows are encoded per epoch; ``"random"``: spots drawn uniformly.
    seed
        Seeds weight initialisation, shuffling and dropout (same seed + device → same model); ensemble member
        ``i`` uses ``seed + i``.
    amp
        bf16 autocast (CUDA only).
    """

    align_epochs: int | None = None
    align_lr: float = DEFAULT_ALIGN_LR
    fusion_epochs: int = DEFAULT_FUSION_EPOCHS
    fused_epochs: int | None = None
    fusion_lr: float = DEFAULT_FUSION_LR
    batch_size: int = DEFAULT_BATCH_SIZE
    batching: str = "local"
    seed: int = 0
    amp: bool = False

    #: Names :meth:`for_stage` accepts for each stage besides the shared ``batch_size``, ``seed`` and ``amp``, mapped
    #: to the fields they set.
    STAGE_NAMES = {
        "alignment": {"epochs": "align_epochs", "lr": "align_lr"},
        "fusion": {
            "epochs": "fusion_epochs",
            "lr": "fusion_lr",
            "fused_epochs": "fused_epochs",
            "batching": "batching",
        },
    }
    SHARED = ("batch_size", "seed", "amp")

    def __post_init__(self) -> None:
        values = {
            "align_epochs": None if self.align_epochs is None else _check_int(self.align_epochs, "epochs", 1),
            "fusion_epochs": _check_int(self.fusion_epochs, "epochs", 1),
            "fused_epochs": None if self.fused_epochs is None else _check_int(self.fused_epochs, "fused_epochs", 0),
            "batch_size": _check_int(self.batch_size, "batch_size", 2),
            "seed": _check_int(self.seed, "seed", 0),
            "amp": bool(self.amp),
        }
        for name in ("align_lr", "fusion_lr"):
            lr = getattr(self, name)
            if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
                raise ValueError(f"lr must be > 0 and finite, got {lr!r}.")
            values[name] = float(lr)
        if self.batching not in BATCHINGS:
            raise ValueError(f"batching must be 'local' or 'random', got {self.batching!r}.")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def alignment_epochs(self, mode: str) -> int:
        """Stage-1 epochs for a model of ``mode`` (resolves ``align_epochs=None``)."""
        if self.align_epochs is not None:
            return self.align_epochs
        return DEFAULT_ALIGN_EPOCHS_IMAGE_GENE if mode == "both" else DEFAULT_ALIGN_EPOCHS

    def for_stage(self, stage: str, **overrides: Any) -> TrainingConfig:
        """A copy with ``overrides`` applied; ``epochs`` and ``lr`` name the fields of ``stage`` (``"alignment"`` or
        ``"fusion"``). Names that the stage does not use raise :class:`TypeError` listing the accepted ones."""
        names = {**self.STAGE_NAMES[stage], **{k: k for k in self.SHARED}}
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(
                f"Unknown training option(s) {unknown} for the {stage} stage; accepted: {sorted(names)} "
                "(see TrainingConfig)."
            )
        return dataclasses.replace(self, **{names[k]: v for k, v in overrides.items()})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict, the ``training_config`` entry of ``config.json``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TrainingConfig:
        """Inverse of :meth:`to_dict`; ``None`` (a model saved before this entry existed) gives the defaults."""
        if d is None:
            return cls()
        d = _saved_entries(cls, d, REMOVED_TRAINING_OPTIONS, "training")
        return cls(**d)
