"""`ModelConfig`: the constructor arguments of :class:`~spacrd_sc.model.SpaCRD`, checked and serialisable."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MODALITIES = ("both", "expression", "image")
#: Gene principal components in front of the gene encoder (for 3000 genes: 0.26 M instead of 3.1 M weights
#: in the first layer, and the low-variance gene directions, mostly noise, left out).
DEFAULT_N_PCS = 256
#: Networks per model (a seed ensemble; probabilities averaged): 3, chosen over one network by nested
#: leave-one-section-out CV on her2st (benchmarks/results/her2st_nested.md, fourth round).
DEFAULT_N_MEMBERS = 3


def _positive_int_or_none(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
    return int(value)


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
    n_neighbors: int = 6
    latent_dim: int = 64
    beta: float = 0.5
    gamma: float = 0.1
    use_contrastive: bool = True
    use_cross_attention: bool = True
    use_vae: bool = True
    modality: str = "both"
    n_pcs: int | None = field(default=DEFAULT_N_PCS)
    n_members: int = DEFAULT_N_MEMBERS
    linear_skip: bool = False

    def __post_init__(self) -> None:
        genes = self.genes
        if isinstance(genes, str) or not hasattr(genes, "__iter__"):
            raise TypeError("genes must be a sequence of gene names, not a single string.")
        genes = tuple(str(g) for g in genes)
        if not genes and self.modality != "image":
            raise ValueError("genes is empty: the model needs at least one gene.")
        if len(set(genes)) != len(genes):
            seen: set[str] = set()
            dup = {g for g in genes if g in seen or seen.add(g)}
            raise ValueError(f"genes contains duplicates: {sorted(dup)[:10]}.")
        hidden_dims = tuple(int(d) for d in self.hidden_dims)
        if not hidden_dims or min(hidden_dims) < 1:
            raise ValueError(f"hidden_dims must be positive integers, got {hidden_dims}.")
        if self.n_heads < 1 or hidden_dims[-1] % self.n_heads:
            raise ValueError(
                f"n_heads={self.n_heads} must divide the embedding size hidden_dims[-1]={hidden_dims[-1]}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}.")
        if int(self.n_neighbors) != self.n_neighbors or self.n_neighbors < 0:
            raise ValueError(f"n_neighbors must be a non-negative integer, got {self.n_neighbors}.")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}.")
        if self.beta < 0 or self.gamma < 0:
            raise ValueError(f"beta and gamma must be >= 0, got beta={self.beta}, gamma={self.gamma}.")
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}.")
        n_image = _positive_int_or_none(self.n_image_features, "n_image_features")
        if isinstance(self.n_members, bool) or int(self.n_members) != self.n_members or self.n_members < 1:
            raise ValueError(f"n_members must be a positive integer, got {self.n_members!r}.")
        if self.modality == "image" and n_image is None:
            raise ValueError("modality='image' needs n_image_features (the size of the image features).")
        if self.linear_skip and self.modality == "image":
            raise ValueError("linear_skip adds a linear term on the gene inputs; modality='image' has none.")
        normalised = {
            "genes": genes,
            "n_image_features": n_image,
            "hidden_dims": hidden_dims,
            "dropout": float(self.dropout),
            "temperature": float(self.temperature),
            "alpha": float(self.alpha),
            "n_heads": int(self.n_heads),
            "n_neighbors": int(self.n_neighbors),
            "latent_dim": int(self.latent_dim),
            "beta": float(self.beta),
            "gamma": float(self.gamma),
            "use_contrastive": bool(self.use_contrastive),
            "use_cross_attention": bool(self.use_cross_attention),
            "use_vae": bool(self.use_vae),
            "n_pcs": _positive_int_or_none(self.n_pcs, "n_pcs"),
            "n_members": int(self.n_members),
            "linear_skip": bool(self.linear_skip),
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
        if self.linear_skip:
            head += " + a linear term on the neighbourhood-mean gene inputs"
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
        before ``n_members`` existed (one network)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"A model config must be a mapping, got {type(d).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown model config entries {unknown}; known: {sorted(known)}.")
        if "genes" not in d:
            raise ValueError("The model config has no 'genes' entry.")
        return cls(**{"n_pcs": None, "n_members": 1, **d})

    @classmethod
    def build(cls, genes: Sequence[str], n_image_features: int | None = None, **kwargs: Any) -> ModelConfig:
        """Like the constructor, but genes may be any sequence (a list, an Index) and are copied."""
        if isinstance(genes, str) or not hasattr(genes, "__iter__"):
            raise TypeError("genes must be a sequence of gene names, not a single string.")
        return cls(tuple(genes), n_image_features, **kwargs)
