"""``datasets.her2st_model(genes=...)`` refuses too few genes before reading any section or training (#23)."""

from __future__ import annotations

import pytest

import spacrd_sc as sc_crd
from spacrd_sc._constants import MIN_GENES


@pytest.mark.parametrize("n", [1, 5, MIN_GENES - 1])
def test_too_few_genes_refused_before_work(tmp_path, n):
    genes = ["ERBB2", *(f"GENE{i}" for i in range(n - 1))]
    with pytest.raises(ValueError, match=rf"genes: {n} genes, below the minimum of {MIN_GENES}"):
        # path points nowhere: the refusal comes before any her2st file is read (or downloaded)
        sc_crd.datasets.her2st_model(genes, cache_dir=tmp_path, path=tmp_path / "absent")
    assert not any(tmp_path.iterdir())


def test_duplicates_do_not_count_twice(tmp_path):
    with pytest.raises(ValueError, match=r"genes: 1 genes"):
        sc_crd.datasets.her2st_model(["ERBB2"] * MIN_GENES, cache_dir=tmp_path, path=tmp_path / "absent")
