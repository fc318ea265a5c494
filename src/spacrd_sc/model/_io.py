"""On-disk format of a trained :class:`~spacrd_sc.model.SpaCRD` (a directory; no pickle anywhere).

``<dir>/model.safetensors``
    every weight and buffer of the network (safetensors, loaded without code execution); an ensemble's
    members under ``member0.``, ``member1.``, … (one member: the network's own names, as before);
``<dir>/config.json``
    format name and version, package version, constructor arguments (gene list included),
    preprocessing record, training configuration, history and state, the weights' sha256 and their names and
    shapes (a folder without ``training_config``, written before it existed, loads with the defaults).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .._logging import logger

FORMAT_NAME = "spacrd_sc.SpaCRD"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_model_dir(
    path: str | os.PathLike, state: dict[str, torch.Tensor], meta: dict[str, Any], *, overwrite: bool
) -> Path:
    """Write ``state`` and ``meta`` into directory ``path`` (a non-empty one only with ``overwrite``)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{str(path)!r} exists and is not a directory.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            f"Directory {str(path)!r} exists and is not empty; pass overwrite=True to replace the model in it."
        )
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    weights = path / WEIGHTS_FILE
    _atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT_NAME}))
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        **meta,
        "weights_sha256": _sha256(weights),
        "weights": {k: list(v.shape) for k, v in tensors.items()},
    }
    text = json.dumps(meta, indent=1)

    def _write_json(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    _atomic_write(path / CONFIG_FILE, _write_json)
    return path


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``config.json`` of a saved model directory (both files must exist)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No saved SpaCRD model at {str(path)!r}: not a directory.")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{str(path)!r} is not a complete SpaCRD model directory: missing {', '.join(missing)}."
        )
    try:
        meta = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path / CONFIG_FILE)!r} is not valid JSON ({err}).") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{str(path / CONFIG_FILE)!r} does not describe a {FORMAT_NAME} model.")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has format_version {version!r}; this spacrd_sc reads up to {FORMAT_VERSION}. "
            "Upgrade spacrd_sc."
        )
    for key in ("config", "weights", "weights_sha256"):
        if key not in meta:
            raise KeyError(f"{str(path / CONFIG_FILE)!r} has no {key!r} entry.")
    return meta


def read_weights(
    path: str | os.PathLike, meta: dict[str, Any], expected: dict[str, torch.Size], device: str
) -> dict[str, torch.Tensor]:
    """Load the safetensors weights onto ``device`` after checking checksum, names and shapes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = Path(path) / WEIGHTS_FILE
    if _sha256(weights) != meta["weights_sha256"]:
        raise ValueError(
            f"{str(weights)!r} does not match the checksum recorded in {CONFIG_FILE}: "
            "the weights were modified or belong to another model."
        )
    try:
        tensors = load_file(str(weights), device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{str(weights)!r} could not be read as safetensors ({err}).") from err
    _compare({k: tuple(v.shape) for k, v in tensors.items()}, expected, "weights file")
    recorded = {k: tuple(v) for k, v in meta["weights"].items()}
    _compare(recorded, expected, f"{CONFIG_FILE} 'weights'")
    return tensors


def _compare(shapes: dict[str, tuple], expected: dict[str, torch.Size], where: str) -> None:
    problems = key_mismatch(shapes, expected, ("saved", "config"))
    if problems:
        raise ValueError(f"The {where} does not match the saved configuration: {problems}.")


def key_mismatch(found: Mapping[str, Any], expected: Mapping[str, Any], labels: tuple[str, str]) -> str:
    """Missing, unexpected and mis-shaped keys of ``found`` against ``expected`` (names → shapes), as one
    line (``""`` when they match). ``labels`` name the two sides in the shape list, e.g. ``("file", "model")``.
    """

    def listed(keys: list[str], limit: int) -> str:
        return f"{len(keys)} ({', '.join(keys[:limit])}{', ...' if len(keys) > limit else ''})"

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [
        f"{k}: {labels[0]} {tuple(found[k])} vs {labels[1]} {tuple(expected[k])}"
        for k in sorted(set(found) & set(expected))
        if tuple(found[k]) != tuple(expected[k])
    ]
    parts = [
        f"{what} {listed(keys, limit)}"
        for what, keys, limit in (
            ("missing keys", missing, 8),
            ("unexpected keys", unexpected, 8),
            ("shape mismatches", wrong, 4),
        )
        if keys
    ]
    return "; ".join(parts)


def _state(model: Any) -> dict[str, torch.Tensor]:
    """All weights of ``model``: the network's own names for one member (the format of every earlier version),
    ``member{i}.<name>`` for each member of an ensemble."""
    if len(model.nets) == 1:
        return model.nets[0].state_dict()
    return {f"member{i}.{k}": v for i, net in enumerate(model.nets) for k, v in net.state_dict().items()}


def _load_state(model: Any, tensors: dict[str, torch.Tensor]) -> None:
    if len(model.nets) == 1:
        model.nets[0].load_state_dict(tensors, strict=True)
        return
    for i, net in enumerate(model.nets):
        prefix = f"member{i}."
        net.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)


def save_model(model: Any, path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Write a :class:`~spacrd_sc.model.SpaCRD` into directory ``path`` (body of :meth:`SpaCRD.save`)."""
    meta = {
        "config": model.config,
        "preprocessing": model.preprocessing,
        "mode": model.mode,
        "mode_description": model.mode_description,
        "state": {"is_aligned": model.is_aligned, "is_fitted": model.is_fitted, "alignment": model.alignment},
        "training_params": model.training_params,
        "training_config": model.training_config.to_dict(),
        "history": model.history,
    }
    out = write_model_dir(path, _state(model), meta, overwrite=overwrite)
    logger.info("SpaCRD saved to %s.", out)
    return out


def load_model(cls: type, path: str | os.PathLike, *, device: str) -> Any:
    """Rebuild a :class:`~spacrd_sc.model.SpaCRD` from directory ``path`` onto ``device`` (body of
    :meth:`SpaCRD.load`); format-1 folders from every earlier version load unchanged.
    """
    from ._config import ModelConfig

    meta = read_config(path)
    try:
        config = ModelConfig.from_dict(meta["config"])
    except TypeError as err:
        raise ValueError(f"config.json in {str(path)!r} holds invalid constructor arguments ({err}).") from err
    except ValueError as err:
        raise ValueError(f"config.json in {str(path)!r} holds an invalid model config: {err}") from err
    model = cls(**config.to_dict(), preprocessing=meta.get("preprocessing"))
    expected = {k: v.shape for k, v in _state(model).items()}
    tensors = read_weights(path, meta, expected, device)
    model._move(device)
    _load_state(model, tensors)
    try:
        model._restore(meta)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config.json in {str(path)!r} holds an invalid training config: {err}") from err
    saved = meta.get("package_version")
    if saved != __version__:
        logger.info("SpaCRD at %s was saved by spacrd_sc %s (running %s).", path, saved, __version__)
    return model
