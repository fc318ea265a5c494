"""Bad inputs of every public callable of ``spacrd_sc.model``, and the named error each gets before any work.

One row per case: what is called (given a small fitted image-less model, its section's arrays and a scratch
folder), the exception type and a regex its message must match. A row may carry a fourth entry, the reason of
an ``xfail(strict=True)`` mark, for an input still answered silently (none today).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _helpers.sections import FAST, SMALL

from spacrd_sc.model import ModelConfig, NotFittedError, SpaCRD, build_backbone, get_backbone_spec


@dataclass
class Env:
    sec: dict
    fitted: SpaCRD
    tmp: Path

    def fresh(self, **kwargs: Any) -> SpaCRD:
        """An untrained image-less model for the section (cheap; training rows must not change ``fitted``)."""
        return SpaCRD(self.sec["genes"], None, **{**SMALL, **kwargs})

    @property
    def args(self) -> tuple:
        return self.sec["x_gene"], None, self.sec["neighbors"]

    def saved(self) -> Path:
        path = self.tmp / "saved"
        if not path.exists():
            self.fitted.save(path)
        return path

    def file(self, name: str = "afile.txt", data: bytes = b"x") -> Path:
        (self.tmp / name).write_bytes(data)  # a file named like a folder or weights
        return self.tmp / name

    def folder(self, name: str, *files: str) -> Path:
        path = self.tmp / name
        path.mkdir()
        for f in files:
            if f.endswith("/"):
                (path / f).mkdir()
            else:
                (path / f).write_text("x")
        return path


GENES = ("a", "b", "c", "d")
_CONFIG = "spacrd_sc/model/_config.py"
_SPACRD = "spacrd_sc/model/_spacrd.py or _data.py"


def cfg(**kw: Any) -> Callable[[Env], Any]:
    return lambda e: ModelConfig(GENES, **kw)


def align(**kw: Any) -> Callable[[Env], Any]:
    return lambda e: e.fresh().fit_alignment(*e.args, **{**FAST, "epochs": 1, **kw})


def fuse(y: Any = None, **kw: Any) -> Callable[[Env], Any]:
    return lambda e: e.fresh(use_contrastive=False).fit_fusion(
        *e.args, e.sec["y"] if y is None else y, **{**FAST, "epochs": 2, **kw}
    )


def predict(**kw: Any) -> Callable[[Env], Any]:
    return lambda e: e.fitted.predict(*e.args, **{"device": "cpu", **kw})


def unwritable_cwd(e: Env) -> Any:
    os.chdir(e.saved())
    return e.fitted.save(".", overwrite=True)


def _garbage_state(e: Env) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({"not_a_layer.weight": torch.zeros(2, 2)}, str(e.tmp / "other.safetensors"))
    return e.tmp / "other.safetensors"


# name: (call, exception, message regex[, xfail reason])
CASES: dict[str, tuple] = {
    # -------------------------------------------------------------------------- ModelConfig / SpaCRD(...)
    "config-genes-string": (lambda e: ModelConfig("TP53"), TypeError, "not a single string"),
    "config-genes-none": (lambda e: ModelConfig(None), TypeError, "genes must be a sequence of gene names"),
    "config-genes-duplicated": (lambda e: ModelConfig(("a", "b", "a")), ValueError, r"duplicates: \['a'\]"),
    "config-genes-empty": (lambda e: ModelConfig(()), ValueError, "genes is empty"),
    "config-genes-holding-none": (
        lambda e: ModelConfig(("a", None)),
        TypeError,
        "genes",
    ),
    "config-heads-not-dividing": (cfg(n_heads=5), ValueError, "n_heads=5 must divide"),
    "config-heads-zero": (cfg(n_heads=0), ValueError, "n_heads=0 must divide"),
    "config-dropout-one": (cfg(dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
    "config-dropout-nan": (cfg(dropout=math.nan), ValueError, "dropout must be a finite number"),
    "config-temperature-zero": (cfg(temperature=0), ValueError, "temperature must be > 0"),
    "config-temperature-nan": (cfg(temperature=math.nan), ValueError, "temperature"),
    "config-alpha-above-one": (cfg(alpha=2.0), ValueError, r"alpha must be in \[0, 1\]"),
    "config-neighbors-negative": (cfg(n_neighbors=-1), ValueError, "n_neighbors must be a non-negative integer"),
    "config-neighbors-fraction": (cfg(n_neighbors=2.5), ValueError, "n_neighbors must be a non-negative integer"),
    "config-latent-zero": (cfg(latent_dim=0), ValueError, "latent_dim must be >= 1"),
    "config-latent-fraction": (cfg(latent_dim=2.5), ValueError, "latent_dim"),
    "config-beta-negative": (cfg(beta=-1.0), ValueError, "beta and gamma must be >= 0"),
    "config-beta-nan": (cfg(beta=math.nan), ValueError, "beta"),
    "config-gamma-inf": (cfg(gamma=math.inf), ValueError, "gamma"),
    "config-modality-unknown": (cfg(modality="rna"), ValueError, "modality must be one of"),
    "config-image-modality-without-features": (cfg(modality="image"), ValueError, "needs n_image_features"),
    "config-image-features-zero": (cfg(n_image_features=0), ValueError, "n_image_features must be a positive"),
    "config-image-features-string": (cfg(n_image_features="24"), ValueError, "n_image_features must be a positive"),
    "config-image-features-bool": (cfg(n_image_features=True), ValueError, "n_image_features must be a positive"),
    "config-members-zero": (cfg(n_members=0), ValueError, "n_members must be a positive integer"),
    "config-members-bool": (cfg(n_members=True), ValueError, "n_members must be a positive integer"),
    "config-pcs-zero": (cfg(n_pcs=0), ValueError, "n_pcs must be a positive integer or None"),
    "config-pcs-nan": (cfg(n_pcs=math.nan), ValueError, "n_pcs"),
    "config-use-vae-string": (cfg(use_vae="no"), TypeError, "use_vae"),
    "config-hidden-dims-int": (cfg(hidden_dims=8), TypeError, "hidden_dims"),
    "config-hidden-dims-zero": (cfg(hidden_dims=(8, 0)), ValueError, "hidden_dims must be positive integers"),
    "config-from-dict-list": (lambda e: ModelConfig.from_dict([1]), ValueError, "must be a mapping, got list"),
    "config-from-dict-unknown": (
        lambda e: ModelConfig.from_dict({"genes": ["a"], "n_layers": 3}),
        ValueError,
        r"Unknown model config entries \['n_layers'\]",
    ),
    "config-from-dict-no-genes": (lambda e: ModelConfig.from_dict({"dropout": 0.1}), ValueError, "no 'genes' entry"),
    "spacrd-preprocessing-not-json": (
        lambda e: SpaCRD(GENES, preprocessing={"f": object()}),
        ValueError,
        "preprocessing must be JSON-serialisable",
    ),
    "spacrd-preprocessing-list": (
        lambda e: SpaCRD(GENES, preprocessing=["log1p"]),
        TypeError,
        "preprocessing must be a dict or None",
    ),
    # ---------------------------------------------------------------------------------------- fit_alignment
    "align-epochs-zero": (align(epochs=0), ValueError, "epochs must be a positive integer"),
    "align-epochs-fraction": (align(epochs=2.5), ValueError, "epochs must be a positive integer"),
    "align-batch-one": (align(batch_size=1), ValueError, "batch_size must be an integer >= 2"),
    "align-lr-zero": (align(lr=0.0), ValueError, "lr must be > 0"),
    "align-device-unknown": (align(device="tpu"), ValueError, "Unknown device 'tpu'"),
    "align-genes-missing": (
        lambda e: e.fresh().fit_alignment(None, None, e.sec["neighbors"], **FAST),
        ValueError,
        "x_gene is required",
    ),
    "align-seed-string": (align(seed="a"), ValueError, "seed"),
    "align-seed-negative": (align(seed=-1), ValueError, "seed"),
    # ------------------------------------------------------------------------------------------- fit_fusion
    "fuse-epochs-string": (fuse(epochs="3"), ValueError, "epochs must be a positive integer"),
    "fuse-lr-nan": (fuse(lr=math.nan), ValueError, "lr must be > 0"),
    "fuse-lr-inf": (fuse(lr=math.inf), ValueError, "lr"),
    "fuse-seed-fraction": (fuse(seed=1.5), ValueError, "seed"),
    "fuse-no-classifier-epoch": (fuse(epochs=4, fused_epochs=4), ValueError, "leaves no classifier epoch"),
    "fuse-fused-epochs-negative": (fuse(fused_epochs=-1), ValueError, "fused_epochs must be a non-negative"),
    "fuse-batching-unknown": (fuse(batching="spatial"), ValueError, "batching must be 'local' or 'random'"),
    # options removed in 0.1 (not adopted): a TypeError naming what is accepted, never a silent no-op
    "config-linear-skip-removed": (cfg(linear_skip=True), TypeError, "linear_skip"),
    "fuse-smoothing-removed": (fuse(label_smoothing=0.1), TypeError, "label_smoothing"),
    "fuse-gene-dropout-removed": (fuse(gene_dropout=0.2), TypeError, "gene_dropout"),
    "fuse-section-alignment-removed": (fuse(section_alignment=1.0), TypeError, "section_alignment"),
    "predict-adapt-removed": (predict(adapt_batchnorm=True), TypeError, "adapt_batchnorm"),
    "fuse-labels-strings": (
        lambda e: fuse(y=e.sec["y"].astype(bool).astype(str))(e),
        ValueError,
        "numeric or boolean 0/1 labels",
    ),
    "fuse-labels-one-class": (lambda e: fuse(y=np.zeros(len(e.sec["y"])))(e), ValueError, "single class"),
    "fuse-labels-nan": (
        lambda e: fuse(y=np.r_[np.nan, e.sec["y"][1:].astype(float)])(e),
        ValueError,
        "1 NaN labels",
    ),
    "fuse-labels-short": (lambda e: fuse(y=e.sec["y"][:-1])(e), ValueError, r"y must have shape \(256,\)"),
    # ------------------------------------------------------------------------- predict / predict_proba / embed
    "predict-not-fitted": (lambda e: e.fresh().predict(*e.args), NotFittedError, "not fitted yet"),
    "predict-proba-not-fitted": (lambda e: e.fresh().predict_proba(*e.args), NotFittedError, "not fitted yet"),
    "embed-not-fitted": (lambda e: e.fresh().embed(*e.args), NotFittedError, "not fitted yet"),
    "predict-batch-zero": (predict(batch_size=0), ValueError, "batch_size must be a positive integer"),
    "predict-batch-string": (predict(batch_size="8"), ValueError, "batch_size must be a positive integer"),
    "predict-batch-nan": (predict(batch_size=math.nan), ValueError, "batch_size"),
    "predict-device-unknown": (predict(device="gpu"), ValueError, "Unknown device 'gpu'"),
    "predict-genes-missing-column": (
        lambda e: e.fitted.predict(e.sec["x_gene"][:, :-1], None, e.sec["neighbors"]),
        ValueError,
        "x_gene has 59 columns but the model expects 60 genes",
    ),
    "predict-genes-strings": (
        lambda e: e.fitted.predict(e.sec["x_gene"].astype(str), None, e.sec["neighbors"]),
        ValueError,
        "x_gene must be a numeric array",
    ),
    "predict-genes-nan": (
        lambda e: e.fitted.predict(np.full_like(e.sec["x_gene"], np.nan), None, e.sec["neighbors"]),
        ValueError,
        "x_gene contains .* NaN/inf",
    ),
    "predict-genes-1d": (
        lambda e: e.fitted.predict(e.sec["x_gene"][0], None, e.sec["neighbors"]),
        ValueError,
        "x_gene must be 2-D",
    ),
    "predict-no-spots": (
        lambda e: e.fitted.predict(e.sec["x_gene"][:0], None, e.sec["neighbors"][:0]),
        ValueError,
        "hold no spots",
    ),
    "predict-neighbors-none": (
        lambda e: e.fitted.predict(e.sec["x_gene"], None, None),
        ValueError,
        "neighbors is required",
    ),
    "predict-neighbors-bool": (
        lambda e: e.fitted.predict(e.sec["x_gene"], None, e.sec["neighbors"] >= 0),
        ValueError,
        "integer row indices",
    ),
    "predict-neighbors-out-of-range": (
        lambda e: e.fitted.predict(e.sec["x_gene"], None, e.sec["neighbors"] + 1000),
        ValueError,
        r"must lie in \[0, 255\]",
    ),
    "predict-neighbors-too-few-columns": (
        lambda e: e.fitted.predict(e.sec["x_gene"], None, e.sec["neighbors"][:, :3]),
        ValueError,
        "neighbors has 3 columns but the model uses n_neighbors=6",
    ),
    # ---------------------------------------------------------------------------------------------- save
    "save-path-none": (lambda e: e.fitted.save(None), TypeError, "path must be a str or os.PathLike"),
    "save-path-int": (lambda e: e.fitted.save(123), TypeError, "path must be a str or os.PathLike"),
    "save-path-bytes": (lambda e: e.fitted.save(b"/tmp/m"), TypeError, "path must be a str or os.PathLike"),
    "save-path-empty": (lambda e: e.fitted.save(""), ValueError, "path is empty"),
    "save-path-root": (lambda e: e.fitted.save("/", overwrite=True), ValueError, "as the filesystem root"),
    "save-path-is-file": (lambda e: e.fitted.save(e.file()), FileExistsError, "exists and is not a directory"),
    "save-existing-model-no-overwrite": (
        lambda e: e.fitted.save(e.saved()),
        FileExistsError,
        "pass overwrite=True to replace",
    ),
    "save-non-model-folder-no-overwrite": (
        lambda e: e.fitted.save(e.folder("results", "notes.txt")),
        FileExistsError,
        "is not empty; pass overwrite=True",
    ),
    "save-non-model-folder-overwrite": (
        lambda e: e.fitted.save(e.folder("results", "notes.txt", "config.json"), overwrite=True),
        FileExistsError,
        "holds 'notes.txt', which are not part of a saved SpaCRD model",
    ),
    "save-folder-with-subfolder-overwrite": (
        lambda e: e.fitted.save(e.folder("results", "config.json", "model.safetensors/"), overwrite=True),
        FileExistsError,
        "holds 'model.safetensors', which are not part",
    ),
    "save-over-hugging-face-folder": (
        lambda e: (
            e.folder("bert", "model.safetensors"),
            (e.tmp / "bert" / "config.json").write_text('{"model_type": "bert"}'),
            e.fitted.save(e.tmp / "bert", overwrite=True),
        ),
        FileExistsError,
        "holds config.json that another tool wrote",
    ),
    "save-over-foreign-weights": (
        lambda e: (
            e.folder("timm"),
            _garbage_state(e).rename(e.tmp / "timm" / "model.safetensors"),
            e.fitted.save(e.tmp / "timm", overwrite=True),
        ),
        FileExistsError,
        "holds model.safetensors that another tool wrote",
    ),
    "save-working-directory": (unwritable_cwd, ValueError, "it is \\(or holds\\) the working directory"),
    "save-overwrite-string": (
        lambda e: e.fitted.save(e.saved(), overwrite="yes"),
        TypeError,
        "overwrite must be True or False, got 'yes'",
    ),
    "save-overwrite-none": (lambda e: e.fitted.save(e.tmp / "m", overwrite=None), TypeError, "overwrite must be"),
    "save-record-not-json": (
        lambda e: (e.fitted.training_params.__setitem__("bad", {1, 2}), e.fitted.save(e.tmp / "m")),
        ValueError,
        "'training_params' cannot be saved as JSON",
    ),
    # ---------------------------------------------------------------------------------------------- load
    "load-path-none": (lambda e: SpaCRD.load(None), TypeError, "path must be a str or os.PathLike"),
    "load-path-int": (lambda e: SpaCRD.load(123), TypeError, "path must be a str or os.PathLike"),
    "load-path-empty": (lambda e: SpaCRD.load(""), ValueError, "path is empty"),
    "load-path-missing": (lambda e: SpaCRD.load(e.tmp / "nope"), FileNotFoundError, "does not exist"),
    "load-path-is-config-file": (
        lambda e: SpaCRD.load(e.saved() / "config.json"),
        FileNotFoundError,
        "not a directory but a file; pass the folder",
    ),
    "load-empty-folder": (
        lambda e: SpaCRD.load(e.folder("empty")),
        FileNotFoundError,
        "missing config.json, model.safetensors",
    ),
    "load-other-folder": (
        lambda e: SpaCRD.load(e.folder("results", "notes.txt")),
        FileNotFoundError,
        "not a complete SpaCRD model directory",
    ),
    "load-device-unknown": (lambda e: SpaCRD.load(e.saved(), device="gpu"), ValueError, "Unknown device 'gpu'"),
    "load-device-cuda": (lambda e: SpaCRD.load(e.saved(), device="cuda"), ValueError, "CUDA is not available"),
    # ----------------------------------------------------------------------------------- backbones
    "spec-empty": (lambda e: get_backbone_spec(""), ValueError, "must be a non-empty string"),
    "spec-blank": (lambda e: get_backbone_spec("  "), ValueError, "must be a non-empty string"),
    "spec-none": (lambda e: get_backbone_spec(None), ValueError, "must be a non-empty string, got None"),
    "spec-int": (lambda e: get_backbone_spec(5), ValueError, "must be a non-empty string, got 5"),
    "spec-unknown": (lambda e: get_backbone_spec("not_a_model_xyz"), ValueError, "Unknown backbone 'not_a_model_xyz'"),
    "build-unknown": (lambda e: build_backbone("unii", pretrained=False), ValueError, "Unknown backbone 'unii'"),
    "build-weights-missing": (
        lambda e: build_backbone("resnet18", weights=e.tmp / "w.pt"),
        FileNotFoundError,
        "does not exist",
    ),
    "build-weights-folder": (
        lambda e: build_backbone("resnet18", weights=e.folder("w.safetensors")),
        FileNotFoundError,
        "is a directory; pass the weights file",
    ),
    "build-weights-suffix": (
        lambda e: build_backbone("resnet18", weights=e.file("w.txt")),
        ValueError,
        "has suffix '.txt'; expected one of",
    ),
    "build-weights-garbage-safetensors": (
        lambda e: build_backbone("resnet18", weights=e.file("w.safetensors", b"garbage")),
        ValueError,
        "Could not read .* as safetensors",
    ),
    "build-weights-garbage-pt": (
        lambda e: build_backbone("resnet18", weights=e.file("w.pt", b"garbage")),
        ValueError,
        r"torch\.load\(weights_only=True\)",
    ),
    "build-weights-other-architecture": (
        lambda e: build_backbone("resnet18", weights=_garbage_state(e)),
        ValueError,
        "do not fit the backbone architecture: missing keys",
    ),
    "build-weights-int": (lambda e: build_backbone("resnet18", weights=123), TypeError, "weights must be a path"),
    "build-pretrained-string": (
        lambda e: build_backbone("uni", pretrained="no"),
        TypeError,
        "pretrained must be True or False",
    ),
    "build-token-int": (lambda e: build_backbone("uni", token=5), TypeError, "token must be a str"),
    "build-gated-without-token": (lambda e: build_backbone("uni"), ValueError, "gated on the Hugging Face hub"),
}


@pytest.fixture
def env(section, fitted_expression, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a row that changes directory is undone
    params = dict(fitted_expression.training_params)
    yield Env(section, fitted_expression, tmp_path)
    fitted_expression.training_params = params


def _skip_if_not_applicable(case: str) -> None:
    if case == "load-device-cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    if case == "build-gated-without-token":
        from spacrd_sc.model._backbones import _hf_token

        if _hf_token(None):
            pytest.skip("a Hugging Face token is configured here")


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, raises=(AssertionError, pytest.fail.Exception),
                                                   reason=row[3]))
        if len(row) > 3 else name
        for name, row in CASES.items()
    ],
)  # fmt: skip
def test_bad_input(case, env):
    _skip_if_not_applicable(case)
    call, exc, match = CASES[case][:3]
    with pytest.raises(exc, match=match):
        call(env)


def test_case_count():
    assert len(CASES) == 117
    assert sum(len(row) > 3 for row in CASES.values()) == 0  # none still open
