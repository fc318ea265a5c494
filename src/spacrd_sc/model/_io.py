"""On-disk format of a trained :class:`~spacrd_sc.model.SpaCRD` (a directory; no pickle anywhere).

``<dir>/model.safetensors``
    every weight and buffer of the network (safetensors, loaded without code execution); an ensemble's
    members under ``member0.``, ``member1.``, … (one member: the network's own names, as before);
``<dir>/config.json``
    format name and version, package version, constructor arguments (gene list included),
    preprocessing record, training configuration (a folder without ``training_config``, written before it
    existed, loads with the defaults), history and state, the weights' sha256 and their names and shapes;
``<dir>/manifest.json`` (format 2 on)
    sha256 and size of every other file of the folder, written last.

Saving is atomic: everything is written into a hidden sibling folder (same parent, so a rename moves it), which
then takes the place of ``<dir>``; an existing model folder is renamed aside first and deleted only once the new
one is in place, and restored if the swap fails. A save that fails partway leaves the old folder as it was and
no temporary folder behind. Loading checks the manifest first and refuses a folder with a missing, extra,
truncated or changed file, naming it. Format-1 folders (written before the manifest) still load, verified by
the weights' sha256 in ``config.json`` only, with a logged warning that saving them again adds the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .._logging import logger

FORMAT_NAME = "spacrd_sc.SpaCRD"
#: 1: config.json + model.safetensors; 2: + manifest.json (sha256 and size of every file), checked on load.
FORMAT_VERSION = 2
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "spacrd_sc.SpaCRD manifest"
#: Every file a saved model folder may hold.
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE)
_NOT_EDITABLE = "a saved model is not meant to be edited: restore the original file or save the model again"


# ---------------------------------------------------------------------------------------------------- helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to disk where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. folders on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _write_weights(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """The safetensors writer (one function, so a test can make it fail partway as a full disk would)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": FORMAT_NAME})
    _fsync(path)


def as_path(path: Any, what: str = "path") -> Path:
    """``path`` (``str`` or ``os.PathLike``) as an absolute :class:`~pathlib.Path` (``~`` expanded, ``..``
    resolved, a symlink followed), or a :class:`TypeError` / :class:`ValueError` naming ``what``."""
    if isinstance(path, bytes) or not isinstance(path, str | os.PathLike):
        raise TypeError(f"{what} must be a str or os.PathLike (a folder), got {type(path).__name__}.")
    raw = os.fspath(path)
    if not isinstance(raw, str):
        raise TypeError(f"{what} must be a str or os.PathLike of str, got {type(raw).__name__}.")
    if not raw.strip():
        raise ValueError(f"{what} is empty; pass a folder name.")
    out = Path(os.path.abspath(os.path.expanduser(raw)))
    return out.resolve() if out.is_symlink() else out


def _sibling(path: Path, kind: str) -> Path:
    """A fresh hidden name beside ``path`` (same parent, so renames between them are atomic)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{kind}")


def _make_sibling_dir(path: Path, kind: str) -> Path:
    for _ in range(100):
        tmp = _sibling(path, kind)
        try:
            os.mkdir(tmp)  # honours the umask, like a folder the user creates
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        return tmp
    raise FileExistsError(f"Could not create a temporary folder beside {str(path)!r}.")  # pragma: no cover


def _check_target(path: Path, overwrite: bool) -> None:
    """Refuse (before any work) a target that is a file, a non-empty folder without ``overwrite``, a folder that
    holds anything besides a saved model, the filesystem root or the working directory."""
    if path.parent == path:
        raise ValueError(f"Cannot save a model as the filesystem root {str(path)!r}; name a folder.")
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{str(path)!r} exists and is not a directory.")
    entries = sorted(path.iterdir())
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f"Directory {str(path)!r} exists and is not empty; pass overwrite=True to replace the model in it."
        )
    foreign = [e.name for e in entries if e.name not in MODEL_FILES or not e.is_file()]
    if foreign:
        raise FileExistsError(
            f"Directory {str(path)!r} holds {', '.join(repr(f) for f in foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}, which are not part of a saved SpaCRD model; overwrite=True "
            f"replaces only a folder holding a saved model ({', '.join(MODEL_FILES)}). Move them out or save "
            "the model to another folder."
        )
    other = _written_by_another_tool(path)
    if other:
        raise FileExistsError(
            f"Directory {str(path)!r} holds {other} that another tool wrote (not a saved SpaCRD model); "
            "overwrite=True replaces only a saved SpaCRD model. Save the model to another folder."
        )
    cwd = Path.cwd()
    if cwd == path or path in cwd.parents:
        raise ValueError(f"Cannot replace {str(path)!r}: it is (or holds) the working directory.")


def _written_by_another_tool(path: Path) -> str:
    """The name of a file in ``path`` that is readable and says it belongs to another format (e.g. a Hugging Face
    model folder, which also holds ``config.json`` and ``model.safetensors``), else ``""``. A damaged or partial
    SpaCRD folder (unreadable files) is not another tool's."""
    config = path / CONFIG_FILE
    if config.is_file():
        try:
            meta = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict) and meta.get("format") != FORMAT_NAME:
            return CONFIG_FILE
    weights = path / WEIGHTS_FILE
    if weights.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="pt") as fh:
                header = fh.metadata() or {}
        except Exception:  # noqa: BLE001 - unreadable: a damaged SpaCRD file, replaced like the rest
            return ""
        if header.get("format") != FORMAT_NAME:
            return WEIGHTS_FILE
    return ""


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Move the complete folder ``tmp`` to ``path``; an existing ``path`` is renamed aside, and deleted only once
    ``tmp`` is in place (restored if that rename fails)."""
    if not os.path.lexists(path):
        os.rename(tmp, path)
        return
    backup = _sibling(path, "old")
    os.rename(path, backup)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(backup, path)
        raise

    def _report(_func: Any, failed: str, _exc: Any) -> None:  # pragma: no cover - e.g. a file held open elsewhere
        logger.warning("Could not delete %s of the replaced model folder; remove %s by hand.", failed, backup)

    shutil.rmtree(backup, onerror=_report)


def _json_text(meta: dict[str, Any]) -> str:
    """``meta`` as JSON, or a :class:`ValueError` naming the entry that cannot be written (before any file is)."""
    for key, value in meta.items():
        try:
            json.dumps(value, allow_nan=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f"The model's {key!r} cannot be saved as JSON ({err}); nothing was written.") from err
    return json.dumps(meta, indent=1)


# --------------------------------------------------------------------------------------------------- manifest
def _file_record(path: Path) -> dict[str, Any]:
    return {"sha256": _sha256(path), "size": path.stat().st_size}


def write_manifest(folder: Path) -> None:
    """Write ``manifest.json`` into ``folder``: sha256 and size of every other file there (call it last)."""
    files = {p.name: _file_record(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    manifest = {"format": MANIFEST_FORMAT, "algorithm": "sha256", "files": files}
    _write_text(Path(folder) / MANIFEST_FILE, json.dumps(manifest, indent=1))


def verify_manifest(folder: Path) -> dict[str, str]:
    """Check every file of ``folder`` against its ``manifest.json``; return ``{file: sha256}``.

    Raises
    ------
    FileNotFoundError
        A file the manifest lists is missing (the message names it).
    ValueError
        The manifest is unreadable, a file was added, or a file's size or sha256 differs (the message names it).
    """
    where = folder / MANIFEST_FILE
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(where)!r} is not valid JSON ({err}); {_NOT_EDITABLE}.") from err
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or manifest.get("algorithm") != "sha256"
        or not isinstance(files, dict)
        or not all(isinstance(v, dict) and {"sha256", "size"} <= set(v) for v in files.values())
    ):
        raise ValueError(f"{str(where)!r} is not a {MANIFEST_FORMAT} (sha256 and size per file); {_NOT_EDITABLE}.")
    for needed in (CONFIG_FILE, WEIGHTS_FILE):
        if needed not in files:
            raise ValueError(f"{str(where)!r} does not list {needed}; {_NOT_EDITABLE}.")
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{str(folder)!r} is not a complete SpaCRD model directory: missing {', '.join(sorted(missing))} "
            f"(listed in {MANIFEST_FILE})."
        )
    extra = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST_FILE and p.name not in files)
    if extra:
        raise ValueError(
            f"{str(folder)!r} holds {', '.join(extra)}, not listed in its {MANIFEST_FILE}: files were added "
            "after saving. Move them out of the model folder (a saved model holds only its own files)."
        )
    hashes = {}
    for name, record in sorted(files.items()):
        file = folder / name
        size = file.stat().st_size
        if size != record["size"]:
            raise ValueError(
                f"{name} in {str(folder)!r} does not match {MANIFEST_FILE}: {size} bytes, {record['size']} when "
                f"saved (truncated or changed after saving); {_NOT_EDITABLE}."
            )
        hashes[name] = _sha256(file)
        if hashes[name] != record["sha256"]:
            raise ValueError(
                f"{name} in {str(folder)!r} does not match the sha256 recorded in {MANIFEST_FILE}: it was changed "
                f"after saving (e.g. edited by hand); {_NOT_EDITABLE}."
            )
    return hashes


# ---------------------------------------------------------------------------------------------- write and read
def write_model_dir(
    path: str | os.PathLike, state: dict[str, torch.Tensor], meta: dict[str, Any], *, overwrite: bool
) -> Path:
    """Write ``state`` and ``meta`` as a model folder at ``path``, atomically (see the module docstring).

    ``path`` may not exist, be empty, or (with ``overwrite``) hold a saved model and nothing else.
    """
    if isinstance(overwrite, str) or overwrite not in (True, False):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}.")
    path = as_path(path)
    _check_target(path, bool(overwrite))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "package_version": __version__, **meta}
    _json_text(meta)  # refuse what JSON cannot hold before writing anything
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_sibling_dir(path, "saving")
    try:
        if path.is_dir():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        _write_weights(tensors, tmp / WEIGHTS_FILE)
        meta["weights_sha256"] = _sha256(tmp / WEIGHTS_FILE)
        meta["weights"] = {k: list(v.shape) for k, v in tensors.items()}
        _write_text(tmp / CONFIG_FILE, _json_text(meta))
        write_manifest(tmp)
        _fsync(tmp)
        _swap_into_place(tmp, path)
        _fsync(path.parent)
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
            f"{version} folders are saved with one); {_NOT_EDITABLE}."
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
    if (sha256 or _sha256(weights)) != meta["weights_sha256"]:
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
