"""Models shared through the Hugging Face hub: a model card beside the safe folder format, and the hub's own API.

The folder :meth:`SpaCRD.save_pretrained` writes is the folder :meth:`SpaCRD.save` writes (``model.safetensors``,
``config.json``, ``manifest.json``; atomic) plus ``README.md``, a model card with YAML front matter. The card is
not listed in the manifest: nothing in it is read when loading, and a card is meant to be edited (on the hub's web
page too) without making the model unloadable. Uploads and downloads go through ``huggingface_hub``
(``HfApi.create_repo`` + ``HfApi.upload_folder``, ``snapshot_download``), so its token, cache and
``HF_HUB_OFFLINE`` / ``HF_ENDPOINT`` settings apply as everywhere else.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from .._logging import logger
from ._folder import CARD_FILE, CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE

#: What ``card=`` may hold (every entry optional).
CARD_KEYS = (
    "description",
    "training_data",
    "license",
    "license_name",
    "license_link",
    "license_note",
    "image_backbone",
    "metrics",
    "tags",
)
#: The files a download fetches (not e.g. the hub's ``.gitattributes``, which the manifest would refuse).
_HUB_FILES = [CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE, CARD_FILE]
_N_GENES_SHOWN = 20


# ------------------------------------------------------------------------------------------------------- card
def _check_card(card: Any) -> dict[str, Any]:
    if card is None:
        return {}
    if not isinstance(card, Mapping):
        raise TypeError(f"card must be a mapping (e.g. a dict with {', '.join(CARD_KEYS[:3])}), got {type(card)}.")
    unknown = sorted(set(card) - set(CARD_KEYS))
    if unknown:
        raise ValueError(f"card has unknown entries {unknown}; it may hold {', '.join(CARD_KEYS)}.")
    out = dict(card)
    for key in ("description", "training_data", "license", "license_name", "license_link", "license_note"):
        if key in out and not isinstance(out[key], str):
            raise TypeError(f"card[{key!r}] must be a str, got {type(out[key]).__name__}.")
    if out.get("license") == "other" and not out.get("license_name"):
        raise ValueError("card['license'] is 'other': name it with card['license_name'] (and card['license_link']).")
    metrics = out.get("metrics", {})
    if not isinstance(metrics, Mapping) or not all(isinstance(k, str) for k in metrics):
        raise TypeError("card['metrics'] must map metric names (str) to values, e.g. {'auroc (LOO, 8 sections)': 0.9}.")
    tags = out.get("tags", [])
    if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise TypeError("card['tags'] must be a list of str.")
    return out


def _stages(model: Any) -> list[str]:
    lines = []
    for stage, record in model.training_params.items():
        if stage == "pca" or not isinstance(record, Mapping):
            continue
        shown = ", ".join(f"{k} {v}" for k, v in record.items() if k not in ("member_seeds",))
        lines.append(f"- **{stage}**: {shown}")
    return lines or ["- not trained (the weights are the initial ones)."]


def card_text(model: Any, card: Mapping[str, Any] | None = None) -> str:
    """The model card (``README.md``) of ``model``: YAML front matter for the hub, then the sections."""
    from huggingface_hub import ModelCard, ModelCardData

    info = _check_card(card)
    license_id = info.get("license", "unknown")
    extra = {k: info[k] for k in ("license_name", "license_link") if k in info}
    tags = ["spacrd_sc", "scverse", "spatial-transcriptomics", "cancer", f"mode-{model.mode}"]
    tags += [t for t in info.get("tags", []) if t not in tags]
    data = ModelCardData(library_name="spacrd_sc", license=license_id, tags=tags, **extra)
    genes = model.genes[:_N_GENES_SHOWN]
    more = f", … ({model.n_genes - len(genes)} more)" if model.n_genes > len(genes) else ""
    backbone = info.get("image_backbone", "not recorded (pass card={'image_backbone': ...})")
    if model.image_less:
        images = "none: an image-less model (expression only)."
    else:
        images = (
            f"{model.n_image_features} features per spot from the image backbone "
            f"{backbone}; score sections with "
            "features from the same backbone."
        )
    metrics = info.get("metrics", {})
    metric_lines = (
        ["| metric | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in metrics.items())]
        if metrics
        else ["None recorded (pass `card={'metrics': {...}}` to `save_pretrained`)."]
    )
    licence = [f"Licence identifier: `{license_id}`" + (f" ({info['license_name']})" if "license_name" in info else "")]
    if "license_link" in info:
        licence.append(f"Source: {info['license_link']}")
    if "license_note" in info:
        licence.append(info["license_note"])
    if license_id == "unknown":
        licence.append("The licence of the training data was not given; ask the model's author before reuse.")
    config = {k: v for k, v in model.config.items() if k != "genes"}
    body = [
        "# SpaCRD cancer-region model (spacrd_sc)",
        "",
        info.get("description", "A trained SpaCRD model that scores cancer regions in spatial transcriptomics."),
        "",
        "## Model",
        "",
        f"- mode: `{model.mode}`: {model.mode_description}",
        f"- image features: {images}",
        f"- networks: {model.config['n_members']} (a seed ensemble when more than 1)",
        f"- saved by spacrd_sc {__version__}; fitted: {model.is_fitted}",
        "",
        "```json",
        json.dumps(config, indent=1),
        "```",
        "",
        "## Genes",
        "",
        f"{model.n_genes} genes, in the model's column order; the first: {', '.join(genes)}{more}. "
        "The full list is `config.json` → `config.genes`.",
        "",
        "## Training",
        "",
        f"Training data: {info.get('training_data', 'not recorded')}",
        "",
        *_stages(model),
        "",
        "Training configuration (`config.json` → `training_config`):",
        "",
        "```json",
        json.dumps(model.training_config.to_dict(), indent=1),
        "```",
        "",
        f"Feature preparation: `{json.dumps(model.preprocessing)}`",
        "",
        "## Metrics",
        "",
        *metric_lines,
        "",
        "## Licence of the training data",
        "",
        "\n\n".join(licence),
        "",
        "## How to load",
        "",
        "```python",
        "from spacrd_sc.model import SpaCRD",
        "",
        'model = SpaCRD.from_pretrained("<hub id or folder>")',
        "```",
        "",
        f"`{WEIGHTS_FILE}` and `{CONFIG_FILE}` are verified against `{MANIFEST_FILE}` when loading; this card is not "
        "(edit it freely).",
        "",
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)))


_HTTP_LIBRARIES = ("httpx", "httpcore", "requests", "urllib3")


def _is_network_error(err: BaseException) -> bool:
    """True for what the hub client raises when the hub cannot be reached or refuses a request: its HTTP errors,
    ``OSError``, and the errors of the HTTP library under it (httpx from huggingface_hub 1.0, requests before;
    matched by module so that renamed or vendored copies count too). Anything else is a bug, not wrapped."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError | OSError):
        return True
    return any(c.__module__.split(".")[0].startswith(_HTTP_LIBRARIES) for c in type(err).__mro__)


# --------------------------------------------------------------------------------------------------- methods
def save_pretrained(
    self: Any, folder: str | os.PathLike, *, overwrite: bool = False, card: Mapping[str, Any] | None = None
) -> Path:
    """Save to ``folder`` in the safe format of :meth:`save`, with a model card (``README.md``) for the hub.

    The card (YAML front matter: ``library_name: spacrd_sc``, the data's licence, tags; then the model's mode and
    image backbone, its genes, training stages and configuration, metrics, the training data's licence and how
    to load it) is written in the same atomic save. It is not listed in ``manifest.json`` and never read when
    loading, so it may be edited, on the hub too, without making the model unloadable.

    Parameters
    ----------
    folder
        Target directory (created if needed).
    overwrite
        Replace the model in an existing non-empty directory (one holding a saved model and nothing else).
    card
        What the model cannot know about itself, all optional: ``description``, ``training_data`` (which
        sections), ``license`` (a hub licence identifier of the training data, default ``"unknown"``; ``"other"``
        needs ``license_name``), ``license_name``, ``license_link``, ``license_note``, ``image_backbone``,
        ``metrics`` (name → value), ``tags``.

    Returns
    -------
    The folder written.
    """
    from ._io import save_model

    return save_model(self, folder, overwrite=overwrite, card=card_text(self, card))


def _is_local(id_or_folder: str | os.PathLike) -> bool:
    if not isinstance(id_or_folder, str):
        return True
    raw = id_or_folder
    return os.path.exists(os.path.expanduser(raw)) or raw.startswith((".", "/", "~")) or raw.count("/") > 1


def from_pretrained(
    cls: type,
    id_or_folder: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
) -> Any:
    """Load a model from a local folder or a Hugging Face hub repository.

    A path that exists (or any ``os.PathLike``, or a string starting with ``.``, ``/`` or ``~``) is a local folder
    and loads through :meth:`load`, with all its checks. Anything else is a hub id (``"owner/name"``): its model
    files are downloaded with ``huggingface_hub.snapshot_download`` (into the hub cache, reused on later calls;
    with ``HF_HUB_OFFLINE=1`` only the cache is read) and then loaded through :meth:`load`.

    Parameters
    ----------
    id_or_folder
        Local folder written by :meth:`save_pretrained` / :meth:`save`, or a hub repository id.
    revision
        Hub branch, tag or commit (default: the main branch); a commit pins the exact files.
    token
        Hub token for a private repository (default: the one ``huggingface-cli login`` stored, or ``HF_TOKEN``).
    cache_dir
        Hub cache folder (default: huggingface_hub's, ``HF_HUB_CACHE``).
    device
        Where to put the weights (``"auto"``, ``"cpu"``, ``"cuda[:N]"``).

    Returns
    -------
    The loaded :class:`~spacrd_sc.model.SpaCRD`.

    Raises
    ------
    FileNotFoundError
        A hub id that could not be downloaded and is not in the cache (offline, no network, no such repository or
        no access); the message names the id and what to do.
    ValueError
        As :meth:`load`: a changed, added or missing model file, or an invalid config.
    """
    if isinstance(id_or_folder, bytes) or not isinstance(id_or_folder, str | os.PathLike):
        raise TypeError(f"id_or_folder must be a hub id or a folder (str or os.PathLike), got {type(id_or_folder)}.")
    if _is_local(id_or_folder):
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to a hub id; {str(id_or_folder)!r} is a local folder.")
        return cls.load(id_or_folder, device=device)
    return cls.load(_download(id_or_folder, revision=revision, token=token, cache_dir=cache_dir), device=device)


def _download(repo_id: str, *, revision: str | None, token: str | bool | None, cache_dir: Any) -> str:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            allow_patterns=_HUB_FILES,
            library_name="spacrd_sc",
            library_version=__version__,
        )
    except HFValidationError as err:
        raise ValueError(f"{repo_id!r} is neither an existing folder nor a valid hub id ('owner/name'): {err}") from err
    except LocalEntryNotFoundError as err:
        cache = cache_dir or constants.HF_HUB_CACHE
        why = (
            "HF_HUB_OFFLINE is set, so only the cache is read"
            if constants.HF_HUB_OFFLINE
            else "the hub could not be reached"
        )
        raise FileNotFoundError(
            f"SpaCRD model {repo_id!r}{'' if revision is None else f' (revision {revision!r})'} is not in the Hugging "
            f"Face cache ({cache}) and {why}. Download it once with network access (unset HF_HUB_OFFLINE), or copy "
            "the model folder here and pass its path."
        ) from err
    except Exception as err:
        if not _is_network_error(err):  # the hub's HTTP errors (no such repository, no access, ...) are wrapped
            raise
        raise FileNotFoundError(
            f"SpaCRD model {repo_id!r} could not be downloaded from the hub ({type(err).__name__}: {err}). Check the "
            "id and revision, and pass token= (or log in with `huggingface-cli login`) for a private repository."
        ) from err
    logger.info("SpaCRD model %s from the hub cache at %s.", repo_id, folder)
    return folder


def push_to_hub(
    self: Any,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str = "Upload SpaCRD model",
    card: Mapping[str, Any] | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload the model to a Hugging Face hub repository (created if needed) as :meth:`save_pretrained` writes it.

    The folder is written locally first (so a model or card that cannot be saved fails before any network call),
    then uploaded in one commit with ``HfApi.create_repo(exist_ok=True)`` and ``HfApi.upload_folder``. Files of the
    repository that the model does not write (e.g. ``.gitattributes``) are left as they are.

    Parameters
    ----------
    repo_id
        Hub repository, ``"owner/name"``.
    private
        Make a new repository private (``None``: the hub's default); an existing repository keeps its visibility.
    token
        Hub token with write access (default: the stored login or ``HF_TOKEN``).
    commit_message
        Message of the upload commit.
    card
        Model card details, as in :meth:`save_pretrained`.
    endpoint
        Hub address (default: ``HF_ENDPOINT`` or huggingface.co), e.g. a self-hosted mirror.

    Returns
    -------
    The URL of the upload commit.

    Raises
    ------
    ConnectionError
        The hub could not be reached or refused the repository or the upload (the message names the step, the
        repository and the address); nothing was uploaded when ``create_repo`` failed.
    """
    from huggingface_hub import HfApi

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must be 'owner/name', got {repo_id!r}.")
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="spacrd_sc_push_") as tmp:
        folder = save_pretrained(self, Path(tmp) / "model", card=card)
        step = "create_repo"
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            step = "upload_folder"
            info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
        except Exception as err:
            if not _is_network_error(err):
                raise
            raise ConnectionError(
                f"Pushing the SpaCRD model to {repo_id!r} at {api.endpoint} failed at {step} "
                f"({type(err).__name__}: {err}). Check the network, the repository id and that the token may write "
                "to it (token= or `huggingface-cli login`)."
            ) from err
    url = str(getattr(info, "commit_url", info))
    logger.info("SpaCRD model pushed to %s (%s).", repo_id, url)
    return url
