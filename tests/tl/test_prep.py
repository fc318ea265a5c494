import numpy as np
import pytest
from scipy import sparse

from spacrd_sc.tl import _prep
from spacrd_sc.tl._threshold import gmm_threshold

from .conftest import make_section, with_graph


def test_log_normalize_matches_scanpy():
    import scanpy as sc

    a = make_section(seed=3)
    ours = _prep._log_normalize(_prep._raw_counts(a, None)).toarray()
    b = a.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    np.testing.assert_allclose(ours, b.X.toarray(), rtol=1e-5, atol=1e-5)


def test_normalised_input_refused():
    a = make_section()
    a.X = sparse.csr_matrix(np.log1p(a.X.toarray()))
    with pytest.raises(ValueError, match="non-integer.*raw counts"):
        _prep._raw_counts(a, None)
    a.layers["counts"] = sparse.csr_matrix(np.expm1(a.X.toarray()).round())
    assert _prep._raw_counts(a, "counts").dtype == np.float32
    with pytest.raises(KeyError, match="layer 'raw'"):
        _prep._raw_counts(a, "raw")


@pytest.mark.parametrize("method", ["standard", "minmax"])
def test_scaling_is_per_section(method):
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(5, 2, (50, 4)), rng.normal(-3, 0.5, (30, 4))].astype(np.float32)
    sec = np.r_[np.zeros(50, int), np.ones(30, int)]
    Y = _prep._scale_per_section(X.copy(), sec, method)
    for s in (0, 1):
        block = Y[sec == s]
        if method == "standard":
            np.testing.assert_allclose(block.mean(0), 0, atol=1e-5)
            np.testing.assert_allclose(block.std(0), 1, atol=1e-4)
        else:
            np.testing.assert_allclose(block.min(0), 0, atol=1e-6)
            np.testing.assert_allclose(block.max(0), 1, atol=1e-6)
    with pytest.raises(ValueError, match="Unknown scaling 'zscore'"):
        _prep._scale_per_section(X, sec, "zscore")


def test_gene_matrix_reorders_and_fills_absent():
    a = make_section(n_genes=30)
    genes = ["g5", "g1", "absent_gene", "g29"]
    X, n_missing = _prep.gene_matrix(a, genes, layer=None, sections=np.zeros(a.n_obs, int), scaling="none")
    assert n_missing == 1 and X.shape == (a.n_obs, 4) and X.dtype == np.float32
    ref = _prep._log_normalize(_prep._raw_counts(a, None)).toarray()
    np.testing.assert_allclose(X[:, 0], ref[:, 5], rtol=1e-6)
    np.testing.assert_allclose(X[:, 1], ref[:, 1], rtol=1e-6)
    assert (X[:, 2] == 0).all()


def test_neighbor_index_from_squidpy_graph():
    a = with_graph(make_section(nx=6, ny=5))
    nb = _prep.neighbor_index(a, "spatial", 6, np.zeros(a.n_obs, int))
    assert nb.shape == (a.n_obs, 6) and nb.dtype == np.int64
    assert (nb != np.arange(a.n_obs)[:, None]).all()
    # corner spot (0,0) on a 100-spaced grid: nearest neighbours are (100,0) and (0,100)
    xy = a.obsm["spatial"]
    d = np.linalg.norm(xy[nb[0, :2]] - xy[0], axis=1)
    np.testing.assert_allclose(d, 100.0)


def test_neighbor_index_pads_and_errors():
    import squidpy as sq

    a = make_section(nx=3, ny=1)  # 3 spots, at most 2 neighbours each
    sq.gr.spatial_neighbors(a, n_neighs=2, coord_type="generic")
    nb = _prep.neighbor_index(a, "spatial", 6, np.zeros(3, int))
    assert (nb[:, 2:] == -1).all() and (nb[:, :2] >= 0).all()
    del a.obsp["spatial_connectivities"]
    with pytest.raises(KeyError, match="squidpy.gr.spatial_neighbors"):
        _prep.neighbor_index(a, "spatial", 6, np.zeros(3, int))


def test_binary_labels_checks():
    a = make_section()
    assert set(_prep.binary_labels(a, "cancer")) == {0, 1}
    with pytest.raises(KeyError, match="label_key 'tumour'"):
        _prep.binary_labels(a, "tumour")
    a.obs["one"] = True
    with pytest.raises(ValueError, match="single class"):
        _prep.binary_labels(a, "one")
    a.obs["txt"] = "x"
    with pytest.raises(ValueError, match="boolean or 0/1"):
        _prep.binary_labels(a, "txt")


def test_select_genes_prefers_informative_and_respects_restriction(sources):
    genes = _prep.select_genes(sources, layer=None, library_key="section", n_top_genes=40)
    assert len(genes) == 40
    markers = {f"g{j}" for j in range(30)}  # up in cancer / up in non-cancer
    assert len(markers & set(genes)) >= 20
    only = [f"g{j}" for j in range(50, 120)]
    genes = _prep.select_genes(sources, layer=None, library_key="section", n_top_genes=10, restrict_to=only)
    assert set(genes) <= set(only) and len(genes) == 10


def test_image_matrix_errors(sources_img):
    sec = _prep._sections(sources_img, "section")
    F = _prep.image_matrix(sources_img, "X_uni", sections=sec, scaling="standard")
    assert F.shape == (sources_img.n_obs, 32)
    sources_img.obsm["X_uni"][sec == 1] = 0
    with pytest.raises(ValueError, match="missing for some sections but not others"):
        _prep.image_matrix(sources_img, "X_uni", sections=sec, scaling="standard")
    sources_img.obsm["X_uni"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        _prep.image_matrix(sources_img, "X_uni", sections=sec, scaling="standard")
    with pytest.raises(KeyError, match="extract_uni"):
        _prep.image_matrix(sources_img, "X_missing", sections=sec, scaling="standard")


def test_sections_key_missing(sources):
    with pytest.raises(KeyError, match="library_key 'batch'"):
        _prep._sections(sources, "batch")


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
