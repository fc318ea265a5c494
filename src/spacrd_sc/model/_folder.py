"""The folder a model is saved in: atomic writes and the manifest (sha256 and size of every file).

Saving is atomic: everything is written into a hidden sibling folder (same parent, so a rename moves it), which then
takes the place of the target; an existing model folder is renamed aside first and deleted only once the new one is
in place, and restored if the swap fails. :func:`verify_manifest` refuses a folder with a missing, extra, truncated
or changed file, naming it. What goes into the folder is :mod:`._io`'s business.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch

from .._logging import logger

FORMAT_NAME = "spacrd_sc.SpaCRD"
#: 1: config.json + model.safetensors; 2: + manifest.json (sha256 and size of every file), checked on load.
FORMAT_VERSION = 2
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "spacrd_sc.SpaCRD manifest"
#: The model card (:mod:`._hub`): prose for people, never read when loading, so neither listed in the manifest nor
#: verified. A card is meant to be edited (on the hub, too) without making the model unloadable.
CARD_FILE = "README.md"
#: Files a model folder may hold beside the manifest's: optional, not verified.
EDITABLE_FILES = (CARD_FILE,)
#: Every file a saved model folder may hold.
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE, *EDITABLE_FILES)
NOT_EDITABLE = "a saved model is not meant to be edited: restore the original file or save the model again"


# ---------------------------------------------------------------------------------------------------- helpers
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync(path: Path) -> None:
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


def write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_weights(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """The safetensors writer (one function, so a test can make it fail partway as a full disk would)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": FORMAT_NAME})
    fsync(path)


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


def make_sibling_dir(path: Path, kind: str) -> Path:
    for _ in range(100):
        tmp = _sibling(path, kind)
        try:
            os.mkdir(tmp)  # honours the umask, like a folder the user creates
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        return tmp
    raise FileExistsError(f"Could not create a temporary folder beside {str(path)!r}.")  # pragma: no cover


def check_target(path: Path, overwrite: bool) -> None:
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
    if (path / CARD_FILE).is_file() and not (path / CONFIG_FILE).is_file():
        foreign.append(CARD_FILE)  # a README.md alone is someone's document, not a model card
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


def swap_into_place(tmp: Path, path: Path) -> None:
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


def json_text(meta: dict[str, Any]) -> str:
    """``meta`` as JSON, or a :class:`ValueError` naming the entry that cannot be written (before any file is)."""
    for key, value in meta.items():
        try:
            json.dumps(value, allow_nan=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f"The model's {key!r} cannot be saved as JSON ({err}); nothing was written.") from err
    return json.dumps(meta, indent=1)


# --------------------------------------------------------------------------------------------------- manifest
def _file_record(path: Path) -> dict[str, Any]:
    return {"sha256": file_sha256(path), "size": path.stat().st_size}


def write_manifest(folder: Path) -> None:
    """Write ``manifest.json`` into ``folder``: sha256 and size of every other file there but the editable ones
    (the model card), which the manifest does not cover (call it last)."""
    skip = (MANIFEST_FILE, *EDITABLE_FILES)
    files = {p.name: _file_record(p) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name not in skip}
    manifest = {"format": MANIFEST_FORMAT, "algorithm": "sha256", "files": files}
    write_text(Path(folder) / MANIFEST_FILE, json.dumps(manifest, indent=1))


def verify_manifest(folder: Path) -> dict[str, str]:
    """Check every file of ``folder`` against its ``manifest.json``; return ``{file: sha256}``.

    Raises
    ------
    FileNotFoundError
        A file the manifest lists is missing (the message names it).
    ValueError
        The manifest is unreadable, a file was added, or a file's size or sha256 differs (the message names it).
        A model card (``README.md``) is allowed and not checked.
    """
    where = folder / MANIFEST_FILE
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(where)!r} is not valid JSON ({err}); {NOT_EDITABLE}.") from err
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or manifest.get("algorithm") != "sha256"
        or not isinstance(files, dict)
        or not all(isinstance(v, dict) and {"sha256", "size"} <= set(v) for v in files.values())
    ):
        raise ValueError(f"{str(where)!r} is not a {MANIFEST_FORMAT} (sha256 and size per file); {NOT_EDITABLE}.")
    for needed in (CONFIG_FILE, WEIGHTS_FILE):
        if needed not in files:
            raise ValueError(f"{str(where)!r} does not list {needed}; {NOT_EDITABLE}.")
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{str(folder)!r} is not a complete SpaCRD model directory: missing {', '.join(sorted(missing))} "
            f"(listed in {MANIFEST_FILE})."
        )
    extra = sorted(
        p.name
        for p in folder.iterdir()
        if p.name != MANIFEST_FILE and p.name not in files and not (p.name in EDITABLE_FILES and p.is_file())
    )
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
                f"saved (truncated or changed after saving); {NOT_EDITABLE}."
            )
        hashes[name] = file_sha256(file)
        if hashes[name] != record["sha256"]:
            raise ValueError(
                f"{name} in {str(folder)!r} does not match the sha256 recorded in {MANIFEST_FILE}: it was changed "
                f"after saving (e.g. edited by hand); {NOT_EDITABLE}."
            )
    return hashes
