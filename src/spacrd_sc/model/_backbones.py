"""Registry of image backbones (UNI, UNI2-h, H-optimus-0, Virchow2, ResNet50, DenseNet121, any timm model) and
their loading.

Plain torch + timm: nothing here knows about AnnData. :func:`build_backbone` returns an ``nn.Module`` in eval
mode that maps a normalised ``(n, 3, size, size)`` float batch to ``(n, dim)`` features, and the
:class:`BackboneSpec` saying how to feed it (input size, physical scale in µm per pixel, RGB mean/std) and where
its weights came from.

Only encoders that timm builds and whose published weights load into that timm model unchanged are registered.
Phikon-v2 (Owkin, ViT-L/16 DINOv2) and Hibou-B/L (HistAI, DINOv2 with registers) are published in the Hugging Face
``transformers`` layout (``Dinov2Model`` / a custom ``Dinov2ModelWithRegisters``): timm can build the
architectures, but their weights need a key-by-key conversion that cannot be checked here (no ``transformers``,
no weights), so they are left out rather than shipped untested.

Weights are read from a local file (``.safetensors``, or ``.bin``/``.pt``/``.pth`` through
``torch.load(weights_only=True)``, which never unpickles arbitrary objects), downloaded from the Hugging Face
hub (UNI and UNI2-h are gated: accept the licence on the model page and pass a token), or left at random
initialisation (``pretrained=False``: for tests and dry runs only, the features mean nothing).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._logging import logger

if TYPE_CHECKING:
    import torch
    from torch import nn


IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Weight-file suffixes read by :func:`load_state_dict_file`.
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class BackboneSpec:
    """How to build, feed and load one image backbone.

    Attributes
    ----------
    name
        Registry name (or the timm model name for backbones outside the registry).
    timm_name
        Architecture passed to :func:`timm.create_model`.
    timm_kwargs
        Keyword arguments of :func:`timm.create_model` (plain values).
    timm_layers
        Keyword arguments whose values are classes, as dotted import paths resolved at build time
        (e.g. ``{"mlp_layer": "timm.layers.SwiGLUPacked"}``) so the registry imports neither timm nor torch.
    input_size
        Side in pixels of the square RGB input the weights were trained on.
    microns_per_pixel
        Physical scale (µm per input pixel) of the tiles the weights were trained on; ``None`` for models
        without one (ImageNet CNNs, timm models outside the registry). With ``input_size`` it gives the
        physical field of view a patch should cover (:attr:`field_um`).
    mean, std
        Per-channel RGB normalisation applied to ``[0, 1]`` pixel values.
    dim
        Output feature dimension (``None`` until built for timm models outside the registry).
    pooling
        How the ``(n, dim)`` features are pooled: ``"model"`` (what the timm model returns: its class token or
        global average pool) or ``"cls+mean_patch"`` (class token concatenated with the mean of the patch tokens,
        register tokens excluded; ``dim`` = 2 × the token width, as Virchow2's model card prescribes).
    hub_repo, hub_filename
        Hugging Face hub repository and file holding the weights (``None``: no public weights).
    gated
        Whether the hub repository needs an accepted licence and a user token.
    licence
        Licence of the weights, as stated on the model page.
    source
        Where the input size, µm per pixel and normalisation come from (model card, paper, config file).
    weights_source
        Set by :func:`build_backbone`: the local path, ``"hf-hub:<repo>/<file>"`` or ``"random-init"``.
    """

    name: str
    timm_name: str
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    timm_layers: Mapping[str, str] = field(default_factory=dict)
    input_size: int = 224
    microns_per_pixel: float | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    dim: int | None = None
    pooling: str = "model"
    hub_repo: str | None = None
    hub_filename: str | None = None
    gated: bool = False
    licence: str = ""
    source: str = ""
    description: str = ""
    weights_source: str | None = None

    @property
    def field_um(self) -> float | None:
        """Physical side (µm) of the field one input covers: ``microns_per_pixel`` × ``input_size``."""
        return None if self.microns_per_pixel is None else float(self.microns_per_pixel) * self.input_size


#: Values of :attr:`BackboneSpec.pooling`.
POOLINGS = ("model", "cls+mean_patch")


#: Physical scale of 20× whole-slide scans, the magnification the pathology encoders below were trained at.
_MPP_20X = 0.5

BACKBONES: dict[str, BackboneSpec] = {
    "uni": BackboneSpec(
        name="uni",
        timm_name="vit_large_patch16_224",
        timm_kwargs={
            "img_size": 224,
            "patch_size": 16,
            "init_values": 1e-5,
            "num_classes": 0,
            "dynamic_img_size": True,
        },
        input_size=224,
        microns_per_pixel=_MPP_20X,
        dim=1024,
        hub_repo="MahmoodLab/UNI",
        hub_filename="pytorch_model.bin",
        gated=True,
        licence="CC-BY-NC-ND-4.0 (non-commercial, academic research; gated)",
        source=(
            "UNI paper (Chen et al., Nat. Med. 2024, Methods): Mass-100K tissue patches sampled at 20× "
            "(≈0.5 µm/px); 224-px input and ImageNet mean/std from the MahmoodLab/UNI model card."
        ),
        description="UNI (Chen et al. 2024), ViT-L/16 pretrained on 100k H&E slides; 1024-d.",
    ),
    "uni2-h": BackboneSpec(
        name="uni2-h",
        timm_name="vit_giant_patch14_224",
        timm_kwargs={
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "num_classes": 0,
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
        timm_layers={"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "torch.nn.SiLU"},
        input_size=224,
        microns_per_pixel=_MPP_20X,
        dim=1536,
        hub_repo="MahmoodLab/UNI2-h",
        hub_filename="pytorch_model.bin",
        gated=True,
        licence="CC-BY-NC-ND-4.0 (non-commercial, academic research; gated)",
        source=(
            "MahmoodLab/UNI2-h model card: timm arguments, 224-px input, ImageNet mean/std. The card does not "
            "restate the magnification; 0.5 µm/px (20×) is UNI's (Chen et al. 2024)."
        ),
        description="UNI2-h, ViT-H/14 with 8 register tokens and SwiGLU MLPs (681M parameters); 1536-d.",
    ),
    "h-optimus-0": BackboneSpec(
        name="h-optimus-0",
        timm_name="vit_giant_patch14_reg4_dinov2",
        timm_kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "dynamic_img_size": False,
        },
        input_size=224,
        microns_per_pixel=_MPP_20X,
        mean=(0.707223, 0.578729, 0.703617),
        std=(0.211883, 0.230117, 0.177517),
        dim=1536,
        hub_repo="bioptimus/H-optimus-0",
        hub_filename="model.safetensors",
        gated=True,
        licence="Apache-2.0 (contact details shared on the hub to download)",
        source=(
            "bioptimus/H-optimus-0 model card and config.json: timm vit_giant_patch14_reg4_dinov2, "
            "init_values=1e-5, fixed 224-px input extracted at 0.5 µm/px, H&E-specific mean/std, class-token "
            "output (global_pool='token')."
        ),
        description="H-optimus-0 (Bioptimus 2024), ViT-g/14 with 4 registers (1.1B parameters); 1536-d.",
    ),
    "virchow2": BackboneSpec(
        name="virchow2",
        timm_name="vit_huge_patch14_224",
        timm_kwargs={
            "img_size": 224,
            "init_values": 1e-5,
            "num_classes": 0,
            "reg_tokens": 4,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
        },
        timm_layers={"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "torch.nn.SiLU"},
        input_size=224,
        microns_per_pixel=_MPP_20X,
        dim=2560,
        pooling="cls+mean_patch",
        hub_repo="paige-ai/Virchow2",
        hub_filename="pytorch_model.bin",
        gated=True,
        licence="CC-BY-NC-ND-4.0 (non-commercial; gated)",
        source=(
            "paige-ai/Virchow2 model card and config.json: timm vit_huge_patch14_224 with SwiGLUPacked/SiLU, "
            "4 registers, mlp_ratio 5.3375, 224-px input, ImageNet mean/std; embedding = class token ⊕ mean of "
            "the patch tokens (2560-d). Virchow2 was trained on mixed magnifications (5×–40×, Zimmermann et "
            "al. 2024): 0.5 µm/px (20×) is a choice, the scale of the original Virchow."
        ),
        description="Virchow2 (Paige 2024), ViT-H/14 with 4 registers and SwiGLU MLPs (632M parameters); 2560-d.",
    ),
    "resnet50": BackboneSpec(
        name="resnet50",
        timm_name="resnet50",
        timm_kwargs={"num_classes": 0, "global_pool": "avg"},
        input_size=224,
        dim=2048,
        hub_repo="timm/resnet50.tv_in1k",
        hub_filename="model.safetensors",
        licence="BSD-3-Clause (torchvision weights)",
        source="timm pretrained_cfg of resnet50.tv_in1k (ImageNet photographs: no physical scale).",
        description="ResNet50, torchvision ImageNet-1k weights; global average pooling, 2048-d.",
    ),
    "densenet121": BackboneSpec(
        name="densenet121",
        timm_name="densenet121",
        timm_kwargs={"num_classes": 0, "global_pool": "avg"},
        input_size=224,
        dim=1024,
        hub_repo="timm/densenet121.tv_in1k",
        hub_filename="model.safetensors",
        licence="BSD-3-Clause (torchvision weights)",
        source="timm pretrained_cfg of densenet121.tv_in1k (ImageNet photographs: no physical scale).",
        description="DenseNet121, torchvision ImageNet-1k weights; global average pooling, 1024-d.",
    ),
}


def available_backbones() -> list[str]:
    """Names of the registered backbones (any other timm model name is accepted too)."""
    return list(BACKBONES)


def get_backbone_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` of a registered backbone or of any timm model name.

    Raises
    ------
    ValueError
        ``name`` is neither registered nor a timm model; the message lists the choices.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"`backbone` must be a non-empty string, got {name!r}.")
    name = name.strip()
    key = name.lower()
    if key in BACKBONES:
        return BACKBONES[key]
    import timm

    if not timm.is_model(name):
        raise ValueError(
            f"Unknown backbone {name!r}. Choose one of {available_backbones()} or any timm model name "
            "(see `timm.list_models()`), with `weights=` a local weights file for the latter."
        )
    cfg = timm.get_pretrained_cfg(name)
    input_size = 224
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    hub_repo = None
    licence = ""
    if cfg is not None:
        size = getattr(cfg, "input_size", None)
        if size is not None:
            input_size = int(size[-1])
        mean = tuple(float(v) for v in getattr(cfg, "mean", mean))  # type: ignore[assignment]
        std = tuple(float(v) for v in getattr(cfg, "std", std))  # type: ignore[assignment]
        hub_repo = getattr(cfg, "hf_hub_id", None) or None
        licence = str(getattr(cfg, "license", None) or "")
    return BackboneSpec(
        name=name,
        timm_name=name,
        timm_kwargs={"num_classes": 0},
        input_size=input_size,
        mean=mean,
        std=std,
        dim=None,
        hub_repo=hub_repo,
        hub_filename="model.safetensors" if hub_repo else None,
        licence=licence,
        source="timm pretrained_cfg (input size, mean/std); no physical scale recorded.",
        description=f"timm model {name!r} (classifier removed).",
    )


def _import_object(dotted: str) -> Any:
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def create_model(spec: BackboneSpec) -> nn.Module:
    """The timm architecture of ``spec`` at random initialisation (no weights loaded)."""
    import timm

    kwargs = dict(spec.timm_kwargs)
    kwargs.update({k: _import_object(v) for k, v in spec.timm_layers.items()})
    return timm.create_model(spec.timm_name, pretrained=False, **kwargs)


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a local weights file without unpickling arbitrary objects.

    ``.safetensors`` is read with :mod:`safetensors`; ``.bin``, ``.pt`` and ``.pth`` with
    ``torch.load(..., weights_only=True)``. A checkpoint that nests its weights under ``"state_dict"`` or
    ``"model"`` is unwrapped, and a ``"module."`` prefix (DataParallel) is stripped.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"Could not read {str(path)!r} as safetensors ({err}).") from err
    elif suffix in (".bin", ".pt", ".pth"):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # pickle.UnpicklingError and friends
            raise ValueError(
                f"Could not read {str(path)!r} as a plain state dict with `torch.load(weights_only=True)` "
                f"({type(err).__name__}: {err}). Arbitrary pickled objects are refused; save the weights "
                "with `torch.save(model.state_dict(), path)` or as .safetensors."
            ) from err
    else:
        raise ValueError(f"Weights file {str(path)!r} has suffix {suffix!r}; expected one of {WEIGHT_SUFFIXES}.")
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} does not hold a state dict (a mapping of names to tensors).")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def load_weights_strict(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "weights") -> None:
    """Load ``state`` into ``model`` strictly, with a clear error naming missing/unexpected/mis-shaped keys.

    Classifier-head weights in ``state`` (``pretrained_cfg['classifier']``) are dropped when the model was
    built without a head (``num_classes=0``): public ImageNet checkpoints carry them.
    """
    own = model.state_dict()
    state = dict(state)
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if head and getattr(model, "num_classes", None) == 0:
        heads = [k for k in state if k not in own and (k == head or k.startswith(f"{head}."))]
        if heads:
            logger.info("Dropping classifier-head weights %s from %s (the backbone has no head).", heads, source)
            for k in heads:
                del state[k]
    from ._io import key_mismatch

    problems = key_mismatch(
        {k: v.shape for k, v in state.items()}, {k: v.shape for k, v in own.items()}, ("file", "model")
    )
    if problems:
        raise ValueError(
            f"The weights in {source} do not fit the backbone architecture: {problems}. "
            "Check that `backbone=` names the architecture these weights were trained with."
        )
    if any(t.is_meta for t in own.values()):
        # built on the meta device: take the file's tensors (cast to the model's dtypes) as the parameters
        state = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
    else:
        model.load_state_dict(state, strict=True)


def _create_for_loading(spec: BackboneSpec) -> nn.Module:
    """The architecture without paying for its random initialisation (weights are loaded next).

    Built on the meta device; falls back to a normal build when the model keeps non-persistent buffers,
    which a state dict cannot fill.
    """
    import torch

    with torch.device("meta"):
        model = create_model(spec)
    persistent = set(model.state_dict())
    buffers = {name for name, _ in model.named_buffers()}
    if buffers - persistent:
        return create_model(spec)
    return model


def _hf_token(token: str | None) -> str | None:
    """``token``, else ``$HF_TOKEN``, else the token saved by ``hf auth login`` (or ``None``)."""
    if token:
        return token
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - an unreadable token cache is the same as no token
        return None


def download_weights(spec: BackboneSpec, *, token: str | None = None) -> str:
    """Download the weights file of ``spec`` from the Hugging Face hub (cached) and return its local path."""
    if spec.hub_repo is None or spec.hub_filename is None:
        raise ValueError(
            f"Backbone {spec.name!r} has no public weights on the Hugging Face hub. Pass `weights=` a local "
            f"file ({', '.join(WEIGHT_SUFFIXES)}), or `pretrained=False` for a random-init dry run."
        )
    local_hint = (
        f"Or download {spec.hub_filename!r} from https://huggingface.co/{spec.hub_repo} on a machine with "
        f"access and pass `weights='/path/to/{spec.hub_filename}'`."
    )
    tok = _hf_token(token)
    if spec.gated and not tok:
        raise ValueError(
            f"The {spec.name!r} weights are gated on the Hugging Face hub ({spec.hub_repo}): accept the "
            f"licence at https://huggingface.co/{spec.hub_repo}, then pass `token=` or set the HF_TOKEN "
            f"environment variable. {local_hint}"
        )
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(spec.hub_repo, spec.hub_filename, token=tok)
    except Exception as err:  # network, auth, gating and missing-file errors alike
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise RuntimeError(
            f"Could not download {spec.hub_filename!r} from the Hugging Face hub repository "
            f"{spec.hub_repo!r} ({type(err).__name__}: {first_line}). Check the network, "
            f"your token and that you accepted the model's licence. {local_hint}"
        ) from err


def _pooled(model: nn.Module, spec: BackboneSpec) -> nn.Module:
    """``model`` wrapped to return the embedding ``spec.pooling`` names (weights already loaded)."""
    if spec.pooling == "model":
        return model
    if spec.pooling == "cls+mean_patch":
        from ._pooling import ClsMeanPatchTokens

        return ClsMeanPatchTokens(model)
    raise ValueError(f"Backbone {spec.name!r} has pooling {spec.pooling!r}; expected one of {POOLINGS}.")


def build_backbone(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    token: str | None = None,
) -> tuple[nn.Module, BackboneSpec]:
    """Build a feature-extraction backbone in eval mode and load its weights.

    Parameters
    ----------
    name
        A registered backbone (``"uni"``, ``"uni2-h"``, ``"h-optimus-0"``, ``"virchow2"``, ``"resnet50"``,
        ``"densenet121"``; :func:`available_backbones`) or any timm model name (then pass ``weights=``).
    weights
        Local weights file (``.safetensors``, ``.bin``, ``.pt``, ``.pth``), loaded strictly.
        ``None``: download the backbone's weights from the Hugging Face hub (or random init with
        ``pretrained=False``).
    pretrained
        ``False`` leaves the weights at random initialisation (tests and dry runs; features are meaningless).
        Ignored when ``weights`` is given.
    token
        Hugging Face token for gated repositories (default: ``$HF_TOKEN`` or the saved login).

    Returns
    -------
    The model (``(n, 3, s, s)`` normalised RGB → ``(n, dim)``) and its spec, with ``dim`` and
    ``weights_source`` filled in.

    Raises
    ------
    TypeError
        ``weights`` is not a path, ``pretrained`` not a bool or ``token`` not a string.
    FileNotFoundError
        ``weights`` does not exist or is a directory.
    ValueError
        Unknown backbone; a weights file with another suffix, unreadable, or not fitting the architecture;
        gated weights without a token.
    """
    if isinstance(pretrained, str) or pretrained not in (True, False):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}.")
    if token is not None and not isinstance(token, str):
        raise TypeError(f"token must be a str (a Hugging Face token) or None, got {type(token).__name__}.")
    if weights is not None and (isinstance(weights, bytes) or not isinstance(weights, str | os.PathLike)):
        raise TypeError(f"weights must be a path (str or os.PathLike) or None, got {type(weights).__name__}.")
    spec = get_backbone_spec(name)
    path: Path | None = None
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            raise FileNotFoundError(f"Weights file {str(path)!r} is a directory; pass the weights file in it.")
        if not path.is_file():
            raise FileNotFoundError(f"Weights file {str(path)!r} does not exist.")
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise ValueError(
                f"Weights file {str(path)!r} has suffix {path.suffix!r}; expected one of {WEIGHT_SUFFIXES}."
            )
    elif pretrained:
        path = Path(download_weights(spec, token=token))

    if path is not None:
        state = load_state_dict_file(path)
        source = str(path) if weights is not None else f"hf-hub:{spec.hub_repo}/{spec.hub_filename}"
        model = _create_for_loading(spec)
        load_weights_strict(model, state, source=source)
    else:
        model = create_model(spec)
        source = "random-init"
        logger.warning(
            "Backbone %r is at random initialisation (pretrained=False): its features are meaningless; "
            "use this for tests and dry runs only.",
            spec.name,
        )
    model = _pooled(model, spec)
    model.eval()
    if spec.pooling == "model":
        dim = int(getattr(model, "head_hidden_size", None) or getattr(model, "num_features", 0)) or spec.dim
    else:
        dim = int(model.num_features)
    if spec.dim is not None and dim != spec.dim:
        raise RuntimeError(f"Backbone {spec.name!r} produced {dim}-d features, expected {spec.dim}.")
    return model, dataclasses.replace(spec, dim=dim, weights_source=source)
