"""Bad inputs of every public function of ``spacrd_sc.datasets``, and the named error each gets before any work.

One row per case: the function, its arguments (built from a scratch folder where a path is needed), the
exception type and a regex its message must match. No row needs the her2st data: every refusal comes before the
data are read (rows that slipped through would fail reading a folder that does not exist).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from spacrd_sc.datasets import her2st, her2st_model


def _file(tmp: Path) -> Path:
    (tmp / "afile.txt").write_text("x")
    return tmp / "afile.txt"


NO_DATA = "no_data_here"  # a path= that does not exist: reaching the data would fail differently

# (function, kwargs from the scratch folder, exception, message regex)
CASES = {
    # --------------------------------------------------------------------------------------- her2st(section, ...)
    "her2st-unknown-section": (her2st, lambda t: {"section": "Z9"}, ValueError, r"Unknown her2st section 'Z9'; valid"),
    "her2st-section-none": (her2st, lambda t: {"section": None}, ValueError, "Unknown her2st section None"),
    "her2st-section-int": (her2st, lambda t: {"section": 1}, ValueError, "Unknown her2st section 1"),
    "her2st-section-empty": (her2st, lambda t: {"section": ""}, ValueError, "Unknown her2st section ''"),
    "her2st-section-list": (her2st, lambda t: {"section": ["A1"]}, ValueError, "Unknown her2st section"),
    "her2st-path-missing": (
        her2st,
        lambda t: {"section": "A1", "path": t / "nope"},
        FileNotFoundError,
        "No her2st data under",
    ),
    "her2st-path-empty-folder": (her2st, lambda t: {"section": "A1", "path": t}, FileNotFoundError, "No her2st data"),
    "her2st-path-is-file": (
        her2st,
        lambda t: {"section": "A1", "path": _file(t)},
        FileNotFoundError,
        r"No her2st data under .*afile\.txt",
    ),
    "her2st-path-int": (her2st, lambda t: {"section": "A1", "path": 123}, TypeError, "path must be a folder"),
    "her2st-path-bytes": (her2st, lambda t: {"section": "A1", "path": b"/data"}, TypeError, "path must be a folder"),
    "her2st-table-key-int": (
        her2st,
        lambda t: {"section": "A1", "path": t / NO_DATA, "table_key": 5},
        ValueError,
        "table_key must be a non-empty string",
    ),
    "her2st-table-key-empty": (
        her2st,
        lambda t: {"section": "A1", "path": t / NO_DATA, "table_key": ""},
        ValueError,
        "table_key must be a non-empty string",
    ),
    # ------------------------------------------------------------------------------------ her2st_model(genes, ...)
    "model-genes-string": (her2st_model, lambda t: {"genes": "ERBB2"}, TypeError, "not a single string"),
    "model-genes-bytes": (her2st_model, lambda t: {"genes": b"ERBB2"}, TypeError, "not a single string"),
    "model-genes-empty": (her2st_model, lambda t: {"genes": []}, ValueError, "genes is empty"),
    "model-genes-int": (her2st_model, lambda t: {"genes": 5}, TypeError, "sequence of gene names.*got int"),
    "model-genes-ints": (her2st_model, lambda t: {"genes": [1, 2]}, TypeError, r"item 0 is 1 \(int\), 2 such items"),
    "model-genes-with-none": (
        her2st_model,
        lambda t: {"genes": ["ERBB2", None]},
        TypeError,
        r"item 1 is None \(NoneType\)",
    ),
    "model-genes-with-nan": (
        her2st_model,
        lambda t: {"genes": ["ERBB2", math.nan]},
        TypeError,
        r"item 1 is nan \(float\)",
    ),
    "model-genes-too-few": (
        her2st_model,
        lambda t: {"genes": ["ERBB2", "ESR1", "ERBB2"]},
        ValueError,
        "genes: 2 genes, below the minimum of 50",
    ),
    "model-seed-negative": (her2st_model, lambda t: {"seed": -1}, ValueError, "seed must be a non-negative integer"),
    "model-seed-float": (her2st_model, lambda t: {"seed": 1.5}, ValueError, "seed must be a non-negative integer"),
    "model-seed-string": (her2st_model, lambda t: {"seed": "0"}, ValueError, "seed must be a non-negative integer"),
    "model-seed-bool": (her2st_model, lambda t: {"seed": True}, ValueError, "seed must be a non-negative integer"),
    "model-epochs-zero": (her2st_model, lambda t: {"epochs": 0}, ValueError, "epochs must be an integer >= 2"),
    "model-epochs-one": (her2st_model, lambda t: {"epochs": 1}, ValueError, "epochs must be an integer >= 2"),
    "model-epochs-float": (her2st_model, lambda t: {"epochs": 2.5}, ValueError, "epochs must be an integer >= 2"),
    "model-epochs-string": (her2st_model, lambda t: {"epochs": "3"}, ValueError, "epochs must be an integer >= 2"),
    "model-epochs-nan": (her2st_model, lambda t: {"epochs": math.nan}, ValueError, "epochs must be an integer >= 2"),
    "model-epochs-inf": (her2st_model, lambda t: {"epochs": math.inf}, ValueError, "epochs must be an integer >= 2"),
    "model-epochs-bool": (her2st_model, lambda t: {"epochs": True}, ValueError, "epochs must be an integer >= 2"),
    "model-cache-dir-int": (her2st_model, lambda t: {"cache_dir": 123}, TypeError, "cache_dir must be a str"),
    "model-cache-dir-is-file": (
        her2st_model,
        lambda t: {"cache_dir": _file(t)},
        NotADirectoryError,
        r"cache_dir .*afile\.txt.* cannot be used as a folder",
    ),
    "model-device-unknown": (her2st_model, lambda t: {"device": "gpu"}, ValueError, "Unknown device 'gpu'"),
    "model-device-cuda": (her2st_model, lambda t: {"device": "cuda"}, ValueError, "CUDA is not available"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path):
    if case == "model-device-cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    func, build, exc, match = CASES[case]
    kwargs = build(tmp_path)
    if func is her2st_model:
        kwargs = {
            "genes": ["ERBB2", "ESR1", *(f"GENE{i}" for i in range(60))],
            "epochs": 2,
            "device": "cpu",
            "path": tmp_path / NO_DATA,
            **kwargs,
        }
        kwargs.setdefault("cache_dir", tmp_path / "cache")
    with pytest.raises(exc, match=match):
        func(**kwargs)
    cache = kwargs.get("cache_dir")
    if isinstance(cache, Path) and cache.is_dir():
        assert not any(cache.iterdir())  # refused before anything was written


def test_case_count():
    """The table covers both public functions (the count is quoted in the changelog)."""
    assert {CASES[c][0] for c in CASES} == {her2st, her2st_model}
    assert len(CASES) == 35
