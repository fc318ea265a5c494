import dataclasses

import numpy as np
import pandas as pd
import pytest
from _helpers.sections import make_section, with_graph
from scipy import sparse

from spacrd_sc.tl import _inputs
from spacrd_sc.tl._threshold import gmm_threshold


def test_log_normalize_matches_scanpy():
    import scanpy as sc

    a = make_section(seed=3)
    ours = _inputs._log_normalize(_inputs._raw_counts(a, None)).toarray()
    b = a.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    np.testing.assert_allclose(ours, b.X.toarray(), rtol=1e-5, atol=1e-5)


def test_normalised_input_refused():
    a = make_section()
    a.X = sparse.csr_matrix(np.log1p(a.X.toarray()))
    with pytest.raises(ValueError, match="non-integer.*raw counts"):
        _inputs._raw_counts(a, None)
    a.layers["counts"] = sparse.csr_matrix(np.expm1(a.X.toarray()).round())
    assert _inputs._raw_counts(a, "counts").dtype == np.float32
    with pytest.raises(KeyError, match="layer 'raw'"):
        _inputs._raw_counts(a, "raw")


@pytest.mark.parametrize("method", ["standard", "minmax"])
def test_scaling_is_per_section(method):
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(5, 2, (50, 4)), rng.normal(-3, 0.5, (30, 4))].astype(np.float32)
    sec = np.r_[np.zeros(50, int), np.ones(30, int)]
    Y = _inputs._scale_per_section(X.copy(), sec, method)
    for s in (0, 1):
        block = Y[sec == s]
        if method == "standard":
            np.testing.assert_allclose(block.mean(0), 0, atol=1e-5)
            np.testing.assert_allclose(block.std(0), 1, atol=1e-4)
        else:
            np.testing.assert_allclose(block.min(0), 0, atol=1e-6)
            np.testing.assert_allclose(block.max(0), 1, atol=1e-6)
    with pytest.raises(ValueError, match="Unknown scaling 'zscore'"):
        _inputs._scale_per_section(X, sec, "zscore")


def test_removed_balanced_scaling_is_named():
    """A model saved with the removed ``scaling="balanced"`` gets an error that names it, not a bare 'unknown'."""
    with pytest.raises(ValueError, match="scaling='balanced', an option removed"):
        _inputs.FeatureSpec(genes=("g0",), scaling="balanced")


def test_gene_matrix_reorders_and_fills_absent():
    a = make_section(n_genes=30)
    genes = ["g5", "g1", "absent_gene", "g29"]
    X, n_missing = _inputs.gene_matrix(a, genes, layer=None, sections=np.zeros(a.n_obs, int), scaling="none")
    assert n_missing == 1 and X.shape == (a.n_obs, 4) and X.dtype == np.float32
    ref = _inputs._log_normalize(_inputs._raw_counts(a, None)).toarray()
    np.testing.assert_allclose(X[:, 0], ref[:, 5], rtol=1e-6)
    np.testing.assert_allclose(X[:, 1], ref[:, 1], rtol=1e-6)
    assert (X[:, 2] == 0).all()


def test_neighbor_index_from_squidpy_graph():
    a = with_graph(make_section(nx=6, ny=5))
    nb = _inputs.neighbor_index(a, "spatial", 6, np.zeros(a.n_obs, int))
    assert nb.shape == (a.n_obs, 6) and nb.dtype == np.int64
    assert (nb != np.arange(a.n_obs)[:, None]).all()
    # corner spot (0,0) on a 100-spaced grid: nearest neighbours are (100,0) and (0,100)
    xy = a.obsm["spatial"]
    d = np.linalg.norm(xy[nb[0, :2]] - xy[0], axis=1)
    np.testing.assert_allclose(d, 100.0)


def test_neighbor_index_pads_and_errors(caplog):
    import squidpy as sq

    a = make_section(nx=3, ny=1)  # 3 spots, at most 2 neighbours each
    sq.gr.spatial_neighbors_knn(a, n_neighs=2)
    nb = _inputs.neighbor_index(a, "spatial", 6, np.zeros(3, int))
    assert (nb[:, 2:] == -1).all() and (nb[:, :2] >= 0).all()
    assert "median of 2 neighbours per spot but the model reads 6" in caplog.text
    assert "n_neighs=6" in caplog.text
    caplog.clear()
    _inputs.neighbor_index(a, "spatial", 2, np.zeros(3, int))
    assert "median of" not in caplog.text
    del a.obsp["spatial_connectivities"]
    with pytest.raises(KeyError, match="squidpy.gr.spatial_neighbors"):
        _inputs.neighbor_index(a, "spatial", 6, np.zeros(3, int))


def test_binary_labels_checks():
    a = make_section()
    assert set(_inputs.binary_labels(a, "cancer")) == {0, 1}
    with pytest.raises(KeyError, match="label_key 'tumour'"):
        _inputs.binary_labels(a, "tumour")
    a.obs["one"] = True
    with pytest.raises(ValueError, match="single class"):
        _inputs.binary_labels(a, "one")
    a.obs["txt"] = "x"
    with pytest.raises(ValueError, match="boolean or 0/1"):
        _inputs.binary_labels(a, "txt")


def test_select_genes_prefers_informative_and_respects_restriction(sources):
    genes = _inputs.select_genes(sources, layer=None, library_key="section", n_top_genes=40)
    assert len(genes) == 40
    markers = {f"g{j}" for j in range(30)}  # up in cancer / up in non-cancer
    assert len(markers & set(genes)) >= 20
    only = [f"g{j}" for j in range(50, 120)]
    genes = _inputs.select_genes(sources, layer=None, library_key="section", n_top_genes=10, restrict_to=only)
    assert set(genes) <= set(only) and len(genes) == 10


def test_image_matrix_errors(sources_img):
    sec = _inputs.section_codes(sources_img, "section")
    F = _inputs.image_matrix(sources_img, "X_uni", sections=sec, scaling="standard")
    assert F.shape == (sources_img.n_obs, 32)
    sources_img.obsm["X_uni"][sec == 1] = 0
    with pytest.raises(ValueError, match="missing for some sections but not others"):
        _inputs.image_matrix(sources_img, "X_uni", sections=sec, scaling="standard")
    sources_img.obsm["X_uni"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        _inputs.image_matrix(sources_img, "X_uni", sections=sec, scaling="standard")
    with pytest.raises(KeyError, match="extract_uni"):
        _inputs.image_matrix(sources_img, "X_missing", sections=sec, scaling="standard")


def test_sections_key_missing(sources):
    with pytest.raises(KeyError, match="library_key 'batch'"):
        _inputs.section_codes(sources, "batch")


def test_gmm_threshold_between_modes():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0.15, 0.05, 700), rng.normal(0.8, 0.08, 300)]
    t, info = gmm_threshold(x)
    assert 0.3 < t < 0.65 and info["crossing"]
    assert info["means"][0] < t < info["means"][1]
    # weighted crossing moves toward the smaller component
    x2 = np.r_[rng.normal(0.2, 0.1, 900), rng.normal(0.8, 0.1, 100)]
    t2, _ = gmm_threshold(x2)
    assert t2 > 0.5
    with pytest.raises(ValueError, match="at least 4"):
        gmm_threshold(np.ones(10))


def _neighbor_index_rowwise(adata, neighbors_key, k, sections):
    """The row-by-row neighbour index that shipped before the vectorised one (the reference it must match)."""
    from scipy import sparse

    C = sparse.csr_matrix(adata.obsp[f"{neighbors_key}_connectivities"])
    dkey = f"{neighbors_key}_distances"
    D = sparse.csr_matrix(adata.obsp[dkey]) if dkey in adata.obsp else None
    out = np.full((adata.n_obs, k), -1, dtype=np.int64)
    for i in range(adata.n_obs):
        cols = C.indices[C.indptr[i] : C.indptr[i + 1]]
        cols = cols[cols != i]
        if cols.size == 0:
            continue
        if D is not None:
            d = np.asarray(D[i, cols].todense()).ravel()
            cols = cols[np.argsort(d, kind="stable")]
        cols = cols[sections[cols] == sections[i]][:k]
        out[i, : cols.size] = cols
    return out


@pytest.mark.parametrize("with_distances", [True, False])
def test_neighbor_index_vectorised_matches_rowwise(with_distances, caplog):
    """Random graph over 3 sections: self loops, cross-section links, ties, missing distances, isolated spots."""
    import anndata as ad
    from scipy import sparse

    rng = np.random.default_rng(0)
    n = 400
    a = ad.AnnData(np.zeros((n, 1), np.float32))
    a.obs["section"] = rng.choice(["A", "B", "C"], n)
    rows, cols = rng.integers(0, n, 3000), rng.integers(0, n, 3000)
    rows, cols = rows[rows < 380], cols[rows < 380]  # spots 380.. have no neighbours at all
    C = sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)).tocsr()
    C.data[:] = 1.0
    a.obsp["spatial_connectivities"] = C
    if with_distances:
        D = C.copy()
        D.data = rng.integers(1, 5, D.data.size).astype(float)  # many ties
        D.data[::7] = 0.0
        D.eliminate_zeros()  # distances missing where C has a link
        a.obsp["spatial_distances"] = D
    sections = _inputs.section_codes(a, "section")
    for k in (1, 3, 6, 12):
        got = _inputs.neighbor_index(a, "spatial", k, sections)
        np.testing.assert_array_equal(got, _neighbor_index_rowwise(a, "spatial", k, sections))
    assert (got[380:] == -1).all() and (got[:380, -1] == -1).any()
    assert "across sections" in caplog.text


def test_feature_spec_round_trip_and_model_record():
    spec = _inputs.FeatureSpec(genes=("a", "b"), n_image_features=8, image_key="X_uni", scaling="minmax")
    assert _inputs.FeatureSpec.from_dict(spec.to_dict()) == spec
    assert spec.preprocessing() == {
        "layer": None,
        "target_sum": 1e4,
        "log1p": True,
        "scaling": "minmax",
        "image_key": "X_uni",
        "library_key": "section",
        "neighbors_key": "spatial",
    }
    with pytest.raises(ValueError, match="Unknown FeatureSpec entries \\['colour'\\]"):
        _inputs.FeatureSpec.from_dict({**spec.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="Unknown scaling"):
        _inputs.FeatureSpec(genes=("a",), scaling="zscore")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.scaling = "none"

    from spacrd_sc.model import SpaCRD

    model = SpaCRD(["a", "b"], 8, preprocessing=spec.preprocessing(), hidden_dims=(8, 4), n_heads=2)
    assert _inputs.FeatureSpec.of(model) == spec
    bare = _inputs.FeatureSpec.of(SpaCRD(["a", "b"], None, hidden_dims=(8, 4), n_heads=2))
    assert bare.image_key is None and bare.scaling == "standard" and bare.n_neighbors == 6


def test_gene_checks_name_the_problem():
    idx = pd.Index(["ERBB2", "KRT8", "CD3E"])
    assert _inputs.check_gene_list(["KRT8", "ERBB2"], idx, "genes", "the sources") == ["KRT8", "ERBB2"]
    with pytest.raises(ValueError, match="duplicates: \\['KRT8'\\]"):
        _inputs.check_gene_list(["KRT8", "KRT8"], idx, "genes", "the sources")
    with pytest.raises(ValueError, match="1 of them match up to letter case"):
        _inputs.check_gene_list(["Krt8", "XIST"], idx, "genes", "the sources")
    with pytest.raises(TypeError, match="single string"):
        _inputs.check_gene_list("KRT8", idx, "genes", "the sources")
    a = make_section(n_genes=4, n_markers=1)
    a.var_names = ["g0", "g1", "g1", "g3"]
    with pytest.raises(ValueError, match="duplicated gene names .*'g1'"):
        _inputs.check_var_names(a)
