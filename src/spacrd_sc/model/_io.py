"""On-disk format of a trained :class:`~spacrd_sc.model.SpaCRD` (a directory; no pickle anywhere).

``<dir>/model.safetensors``
    every weight and buffer of the network (safetensors, loaded without code execution); an ensemble's
    members under ``member0.``, ``member1.``, … (one member: the network's own names, as before);
``<dir>/config.json``
    format name and version, package version, constructor arguments (gene list included),
    preprocessing record, training configuration (a folder without ``training_config``, written before it
    existed, loads with the defaults), history and state, the weights' sha256 and their names and shapes;
``<dir>/manifest.json`` (format 2 on)
    sha256 and size of every other file of the folder, written last;
``<dir>/README.md`` (optional)
    a model card (:meth:`SpaCRD.save_pretrained`): prose, never read when loading, so not in the manifest and
    free to edit.

Saving is atomic: everything is written into a hidden sibling folder (same parent, so a rename moves it), which
then takes the place of ``<dir>``; an existing model folder is renamed aside first and deleted only once the new
one is in place, and restored if the swap fails. A save that fails partway leaves the old folder as it was and
no temporary folder behind. Loading checks the manifest first and refuses a folder with a missing, extra,
truncated or changed file, naming it. Format-1 folders (written before the manifest) still load, verified by
the weights' sha256 in ``config.json`` only, with a logged warning that saving them again adds the manifest.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__, _distributed
from .._logging import logger
from ._folder import (
    CARD_FILE,
    CONFIG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    NOT_EDITABLE,
    WEIGHTS_FILE,
    as_path,
    check_target,
    file_sha256,
    fsync,
    json_text,
    make_sibling_dir,
    swap_into_place,
    verify_manifest,
    write_manifest,
    write_text,
    write_weights,
)


# ---------------------------------------------------------------------------------------------- write and read
def write_model_dir(
    path: str | os.PathLike,
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    overwrite: bool,
    card: str | None = None,
) -> Path:
    """Write ``state`` and ``meta`` as a model folder at ``path``, atomically (see the module docstring).

    ``path`` may not exist, be empty, or (with ``overwrite``) hold a saved model and nothing else. ``card``: the
    text of a model card, written as ``README.md`` in the same atomic swap (not listed in the manifest).
    """
    if isinstance(overwrite, str) or overwrite not in (True, False):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}.")
    path = as_path(path)
    check_target(path, bool(overwrite))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "package_version": __version__, **meta}
    json_text(meta)  # refuse what JSON cannot hold before writing anything
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_sibling_dir(path, "saving")
    try:
        if path.is_dir():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        write_weights(tensors, tmp / WEIGHTS_FILE)
        meta["weights_sha256"] = file_sha256(tmp / WEIGHTS_FILE)
        meta["weights"] = {k: list(v.shape) for k, v in tensors.items()}
        write_text(tmp / CONFIG_FILE, json_text(meta))
        if card is not None:
            write_text(tmp / CARD_FILE, card)
        write_manifest(tmp)
        fsync(tmp)
        swap_into_place(tmp, path)
        fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _check_folder(path: Path) -> None:
    if path.is_dir():
        return
    if path.exists():
        raise FileNotFoundError(
            f"No saved SpaCRD model at {str(path)!r}: not a directory but a file; pass the folder that holds "
            f"{CONFIG_FILE} and {WEIGHTS_FILE}."
        )
    raise FileNotFoundError(f"No saved SpaCRD model at {str(path)!r}: not a directory (it does not exist).")


def read_config(path: str | os.PathLike, hashes: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read and check ``config.json`` of a saved model directory (both files must exist).

    ``hashes``: the files' sha256 from :func:`verify_manifest` (``None``: a folder without a manifest, read only
    when its ``format_version`` is 1).
    """
    path = as_path(path)
    _check_folder(path)
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
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has format_version {version!r}; this spacrd_sc reads 1 to {FORMAT_VERSION}. "
            "Upgrade spacrd_sc."
        )
    if hashes is None and version >= 2:
        raise FileNotFoundError(
            f"{str(path)!r} is not a complete SpaCRD model directory: missing {MANIFEST_FILE} (format_version "
            f"{version} folders are saved with one); {NOT_EDITABLE}."
        )
    for key in ("config", "weights", "weights_sha256"):
        if key not in meta:
            raise KeyError(f"{str(path / CONFIG_FILE)!r} has no {key!r} entry.")
    return meta


def read_weights(
    path: str | os.PathLike,
    meta: dict[str, Any],
    expected: dict[str, torch.Size],
    device: str,
    sha256: str | None = None,
) -> dict[str, torch.Tensor]:
    """Load the safetensors weights onto ``device`` after checking checksum, names and shapes (``sha256``: the
    file's hash when already computed)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = Path(path) / WEIGHTS_FILE
    if (sha256 or file_sha256(weights)) != meta["weights_sha256"]:
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


def save_model(model: Any, path: str | os.PathLike, *, overwrite: bool, card: str | None = None) -> Path:
    """Write a :class:`~spacrd_sc.model.SpaCRD` into directory ``path`` (body of :meth:`SpaCRD.save`; ``card``:
    a model card's text, see :func:`write_model_dir`). Inside a ``torch.distributed`` process group only rank 0
    writes; the other ranks return at once, without a collective call, so ``if rank == 0: model.save(...)`` works
    too (call ``torch.distributed.barrier()`` before reading the folder on another rank)."""
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
    if not _distributed.is_main():  # torch.distributed: every rank holds the same model, rank 0 writes it
        logger.debug("SpaCRD.save: rank %d leaves the writing of %s to rank 0.", _distributed.rank(), path)
        return as_path(path)
    out = write_model_dir(path, _state(model), meta, overwrite=overwrite, card=card)
    logger.info("SpaCRD saved to %s.", out)
    return out


def load_model(cls: type, path: str | os.PathLike, *, device: str) -> Any:
    """Rebuild a :class:`~spacrd_sc.model.SpaCRD` from directory ``path`` onto ``device`` (body of
    :meth:`SpaCRD.load`). A folder with a manifest is verified file by file first; format-1 folders (no
    manifest) load as before, checked by the weights' sha256, with a warning.
    """
    from ._config import ModelConfig

    path = as_path(path)
    _check_folder(path)
    hashes = verify_manifest(path) if (path / MANIFEST_FILE).is_file() else None
    meta = read_config(path, hashes)
    if hashes is None:
        logger.warning(
            "%s was saved before model folders had a manifest (format_version 1): only its weights are verified "
            "(by the sha256 in %s), not %s itself. Save it again (`model.save(path, overwrite=True)`) to add "
            "full verification.",
            path,
            CONFIG_FILE,
            CONFIG_FILE,
        )
    try:
        config = ModelConfig.from_dict(meta["config"])
    except TypeError as err:
        raise ValueError(f"config.json in {str(path)!r} holds invalid constructor arguments ({err}).") from err
    except ValueError as err:
        raise ValueError(f"config.json in {str(path)!r} holds an invalid model config: {err}") from err
    model = cls(**config.to_dict(), preprocessing=meta.get("preprocessing"))
    expected = {k: v.shape for k, v in _state(model).items()}
    tensors = read_weights(path, meta, expected, device, None if hashes is None else hashes[WEIGHTS_FILE])
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
