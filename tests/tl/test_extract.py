"""Tests of ``tl.extract_uni`` and the backbone registry (CPU, random-init or local weights, no network)."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from spacrd_sc.model import _backbones
from spacrd_sc.model._backbones import build_backbone, create_model, get_backbone_spec
from spacrd_sc.tl import _extract
from spacrd_sc.tl._extract import extract_uni

SPOT_DIAMETER = 40.0
SMALL = "resnet18"  # tiny timm model for the pipeline tests
SMALL_SIZE = 64  # patches fed to it (a CNN accepts any size): keeps the tests fast


# ------------------------------------------------------------------------------------------------ fixtures
def _image(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 RGB: smooth colour gradients plus noise, so every spot sees a different patch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx / width * 255, yy / height * 255, (xx + yy) / (width + height) * 255], axis=-1)
    img = img + rng.normal(0, 20, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_sdata(image: np.ndarray | None = None, *, n_x: int = 5, n_y: int = 3, step: float = 60.0):
    """A synthetic SpatialData: image ``he`` (c, y, x), circles ``spots``, table ``table`` annotating them."""
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel

    xs, ys = np.meshgrid(np.arange(n_x), np.arange(n_y))
    xy = np.c_[xs.ravel(), ys.ravel()].astype(float) * step + step / 2
    n = len(xy)
    shapes = ShapesModel.parse(xy, geometry=0, radius=np.full(n, SPOT_DIAMETER / 2))
    table = ad.AnnData(
        np.random.default_rng(0).poisson(2.0, (n, 10)).astype(np.float32),
        obs=pd.DataFrame(
            {"region": pd.Categorical(["spots"] * n), "spot_id": np.arange(n)},
            index=[f"spot{i}" for i in range(n)],
        ),
    )
    table.obsm["spatial"] = xy.copy()
    table.uns["spatial"] = {"lib": {"scalefactors": {"spot_diameter_fullres": SPOT_DIAMETER}, "metadata": {}}}
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    images = {}
    if image is not None:
        images["he"] = Image2DModel.parse(image.transpose(2, 0, 1), dims=("c", "y", "x"), c_coords=["r", "g", "b"])
    return SpatialData(images=images, shapes={"spots": shapes}, tables={"table": table})


@pytest.fixture
def sdata():
    return make_sdata(_image())


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    """A random-init resnet18, its state dict written as .safetensors and .pt."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model, spec = build_backbone(SMALL, pretrained=False)
    d = tmp_path_factory.mktemp("weights")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(d / "w.safetensors"))
    torch.save(state, d / "w.pt")
    return model, spec, d


def _reader(data, size):
    from spacrd_sc._patch_reader import _PatchReader

    return _PatchReader(data, size=size)


# ------------------------------------------------------------------------------------------------ happy path
def test_extract_writes_obsm_and_params(sdata, caplog, tmp_path):
    table = sdata.tables["table"]
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        out = extract_uni(sdata, backbone=SMALL, pretrained=False, size=SMALL_SIZE, batch_size=4, progress_bar=False)
    assert out is None
    assert "random initialisation" in caplog.text
    X = table.obsm["X_uni"]
    assert X.shape == (table.n_obs, 512)
    assert X.dtype == np.float32
    assert np.isfinite(X).all()
    # different patches give different features (rows are not copies of one patch)
    assert np.unique(X.round(5), axis=0).shape[0] == table.n_obs
    p = table.uns["X_uni"]["params"]
    assert p["backbone"] == SMALL
    assert p["weights"] == "random-init"
    assert p["size"] == SMALL_SIZE
    assert p["diameter_px"] == pytest.approx(SPOT_DIAMETER)
    assert p["context"] == 1.0
    assert p["image_key"] == "he"
    assert p["precision"] == "fp32"
    assert p["device"] == "cpu"
    assert p["mean"] == pytest.approx([0.485, 0.456, 0.406])
    table.write_h5ad(tmp_path / "t.h5ad")  # everything written is serialisable
    back = ad.read_h5ad(tmp_path / "t.h5ad")
    np.testing.assert_array_equal(back.obsm["X_uni"], X)
    assert back.uns["X_uni"]["params"]["weights"] == "random-init"


def test_extract_from_anndata_hires_image(caplog):
    """An AnnData with a downscaled uns['spatial'] 'hires' image works, with a warning saying so."""
    full = _image(480, 640)
    sd = make_sdata(full, step=120.0)
    adata = sd.tables["table"].copy()
    entry = adata.uns["spatial"]["lib"]
    entry["images"] = {"hires": full[::2, ::2].copy()}
    entry["scalefactors"]["tissue_hires_scalef"] = 0.5
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        extract_uni(adata, backbone=SMALL, pretrained=False, size=SMALL_SIZE, progress_bar=False)
    assert "downscaled" in caplog.text
    assert adata.obsm["X_uni"].shape == (adata.n_obs, 512)
    assert adata.uns["X_uni"]["params"]["image_key"] == "hires"
    assert adata.uns["X_uni"]["params"]["diameter_px"] == pytest.approx(SPOT_DIAMETER * 0.5)


def test_extract_copy_and_overwrite_warning(sdata, caplog):
    table = sdata.tables["table"]
    kw = {"backbone": SMALL, "pretrained": False, "size": SMALL_SIZE, "progress_bar": False}
    res = extract_uni(sdata, key_added="X_img", copy=True, **kw)
    assert isinstance(res, ad.AnnData)
    assert res.obsm["X_img"].shape == (table.n_obs, 512)
    assert "X_img" not in table.obsm and "X_img" not in table.uns

    table.obsm["X_img"] = np.zeros((table.n_obs, 3), dtype=np.float32)  # a user's key: never replaced silently
    with pytest.raises(ValueError, match=r"adata.obsm\['X_img'\] already exists and spacrd_sc did not write it"):
        extract_uni(sdata, key_added="X_img", **kw)
    assert table.obsm["X_img"].shape == (table.n_obs, 3)
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        extract_uni(sdata, key_added="X_img", overwrite=True, **kw)
    assert "Overwriting adata.obsm['X_img'] (not written by spacrd_sc; overwrite=True)" in caplog.text
    assert table.obsm["X_img"].shape == (table.n_obs, 512)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):  # its own key: replaced with a warning
        extract_uni(sdata, key_added="X_img", **kw)
    assert "Overwriting adata.obsm['X_img']." in caplog.text


def test_rows_follow_table_order_and_batches(sdata, small_weights):
    """Same features whatever the batch size / worker count; row i is the patch of table row i."""
    _, _, d = small_weights
    kw = {"backbone": SMALL, "weights": d / "w.safetensors", "size": SMALL_SIZE, "progress_bar": False}
    a = extract_uni(sdata, batch_size=15, copy=True, **kw).obsm["X_uni"]
    b = extract_uni(sdata, batch_size=4, num_workers=1, copy=True, **kw).obsm["X_uni"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # permuting the table permutes the features
    perm = np.random.default_rng(1).permutation(sdata.tables["table"].n_obs)
    sd2 = make_sdata(_image())
    sd2.tables["table"] = sd2.tables["table"][perm].copy()
    c = extract_uni(sd2, batch_size=4, copy=True, **kw).obsm["X_uni"]
    np.testing.assert_allclose(c, a[perm], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_matches_cpu_fp32(sdata, small_weights):
    _, _, d = small_weights
    kw = {"backbone": SMALL, "weights": d / "w.safetensors", "progress_bar": False, "copy": True}
    cpu = extract_uni(sdata, device="cpu", **kw)
    gpu = extract_uni(sdata, device="cuda", num_workers=2, **kw)
    assert gpu.uns["X_uni"]["params"]["precision"] == "bf16"
    a, b = cpu.obsm["X_uni"], gpu.obsm["X_uni"]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.99


# ------------------------------------------------------------------------------------------------ weights
@pytest.mark.parametrize("fname", ["w.safetensors", "w.pt"])
def test_local_weights_reproduce_in_memory_model(sdata, small_weights, fname):
    model, spec, d = small_weights
    res = extract_uni(sdata, backbone=SMALL, weights=d / fname, size=SMALL_SIZE, progress_bar=False, copy=True)
    assert res.uns["X_uni"]["params"]["weights"] == str(d / fname)
    # the same patches through the in-memory model, normalised by hand
    patches = _reader(sdata, SMALL_SIZE).read(np.arange(res.n_obs))
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        ref = model.eval()(x).numpy()
    np.testing.assert_allclose(res.obsm["X_uni"], ref, rtol=1e-4, atol=1e-5)


def test_vit_weights_roundtrip(tmp_path):
    """A ViT loaded from a file (built without random init, on the meta device) equals the saved model."""
    from safetensors.torch import save_file

    model, _ = build_backbone("vit_tiny_patch16_224", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    loaded, spec = build_backbone("vit_tiny_patch16_224", weights=tmp_path / "vit.safetensors")
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert spec.dim == 192 and spec.mean == (0.5, 0.5, 0.5)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))


def test_weights_of_another_architecture_are_refused(small_weights):
    _, _, d = small_weights
    with pytest.raises(ValueError, match=r"do not fit the backbone architecture: missing keys"):
        build_backbone("resnet34", weights=d / "w.safetensors")


def test_classifier_head_in_checkpoint_is_dropped(small_weights, tmp_path):
    model, _, d = small_weights
    state = dict(model.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save({"state_dict": state}, tmp_path / "with_head.pth")
    m2, spec2 = build_backbone(SMALL, weights=tmp_path / "with_head.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(m2(x), model.eval()(x))


class _NotAStateDict:
    pass


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"obj": _NotAStateDict()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights_only"):
        build_backbone(SMALL, weights=tmp_path / "evil.pt")


def test_hub_download_path(monkeypatch, small_weights):
    """weights=None, pretrained=True: hf_hub_download is called with the spec's repo/file and the token."""
    import huggingface_hub

    _, _, d = small_weights
    calls = []

    def fake_download(repo_id, filename, *, token=None, **kw):
        calls.append((repo_id, filename, token))
        return str(d / "w.safetensors")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    _, spec = build_backbone(SMALL, token="hf_dummy")
    assert calls == [("timm/resnet18.a1_in1k", "model.safetensors", "hf_dummy")]
    assert spec.weights_source == "hf-hub:timm/resnet18.a1_in1k/model.safetensors"

    def offline(*a, **kw):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(RuntimeError, match=r"Could not download.*pass `weights="):
        build_backbone(SMALL)


def test_gated_weights_need_a_token(monkeypatch, sdata):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(_backbones, "_hf_token", lambda token: token)
    # patch_field="spot": this section records no µm per pixel, which UNI's default physical field would need
    with pytest.raises(ValueError, match=r"gated.*MahmoodLab/UNI.*HF_TOKEN.*weights="):
        extract_uni(sdata, backbone="uni", patch_field="spot", progress_bar=False)


# --------------------------------------------------------------------------------------------- colour order
def test_model_sees_rgb_channel_zero_is_red(monkeypatch):
    """A pure red image reaches the backbone with channel 0 = normalised red (never BGR)."""
    img = np.zeros((240, 320, 3), dtype=np.uint8)
    img[..., 0] = 255
    sd = make_sdata(img)
    seen = []

    def spy_build(*args, **kwargs):
        model, spec = build_backbone(*args, **kwargs)
        model.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach().clone()))
        return model, spec

    monkeypatch.setattr(_extract, "build_backbone", spy_build)
    extract_uni(sd, backbone=SMALL, pretrained=False, size=SMALL_SIZE, progress_bar=False)
    x = torch.cat(seen)
    assert x.shape[1:] == (3, SMALL_SIZE, SMALL_SIZE)
    mean, std = get_backbone_spec(SMALL).mean, get_backbone_spec(SMALL).std
    expected = [(1.0 - mean[0]) / std[0], (0.0 - mean[1]) / std[1], (0.0 - mean[2]) / std[2]]
    for c in range(3):
        torch.testing.assert_close(x[:, c], torch.full_like(x[:, c], expected[c]), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------ bad inputs
def test_unknown_backbone_lists_choices(sdata):
    with pytest.raises(ValueError, match=r"Unknown backbone 'not_a_model'.*'uni'.*'uni2-h'.*'resnet50'"):
        extract_uni(sdata, backbone="not_a_model")


def test_missing_weights_file(sdata, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        extract_uni(sdata, backbone=SMALL, weights=tmp_path / "nope.safetensors")


def test_weights_suffix_checked(tmp_path):
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="suffix"):
        build_backbone(SMALL, weights=tmp_path / "w.onnx")


def test_imageless_section_is_refused(tmp_path):
    sd = make_sdata(None)
    with pytest.raises(ValueError, match=r"image-less.*expression-only"):
        extract_uni(sd, backbone=SMALL, pretrained=False)
    adata = sd.tables["table"]
    with pytest.raises(ValueError, match=r"image-less.*expression-only"):
        extract_uni(adata, backbone=SMALL, pretrained=False)


def test_missing_table_and_image_key(sdata):
    with pytest.raises(KeyError, match="no table 'cells'"):
        extract_uni(sdata, backbone=SMALL, pretrained=False, table_key="cells")
    with pytest.raises(KeyError, match="image_key 'hne'"):
        extract_uni(sdata, backbone=SMALL, pretrained=False, image_key="hne")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "int8"}, "Unknown precision"),
        ({"precision": "fp16"}, "needs a CUDA device"),
        ({"batch_size": 0}, "batch_size"),
        ({"context": 0.0}, "context"),
        ({"device": "tpu"}, "Unknown device"),
    ],
)
def test_bad_options(sdata, kwargs, match):
    with pytest.raises(ValueError, match=match):
        extract_uni(sdata, backbone=SMALL, pretrained=False, **kwargs)


# ------------------------------------------------------------------------------------------------ registry
def test_uni_spec_is_vit_large_1024d():
    """UNI: ViT-L/16 (24 blocks, 1024 wide), 1024-d on one 224-px patch, via the public call."""
    torch.manual_seed(0)
    sd = make_sdata(_image(), n_x=1, n_y=1)
    # the section records no scale: µm per pixel given (UNI's default field is physical, 112 µm = 56 px here)
    extract_uni(sd, backbone="uni", pretrained=False, microns_per_pixel=2.0, progress_bar=False)
    table = sd.tables["table"]
    assert table.obsm["X_uni"].shape == (1, 1024)
    assert table.uns["X_uni"]["params"]["size"] == 224
    assert table.uns["X_uni"]["params"]["field_px"] == pytest.approx(56.0)
    spec = get_backbone_spec("uni")
    assert (spec.timm_name, spec.hub_repo, spec.hub_filename, spec.gated) == (
        "vit_large_patch16_224",
        "MahmoodLab/UNI",
        "pytorch_model.bin",
        True,
    )
    with torch.device("meta"):
        vit = create_model(spec)
    assert vit.patch_embed.patch_size == (16, 16)
    assert len(vit.blocks) == 24 and vit.embed_dim == 1024
    assert vit.dynamic_img_size


def test_uni2h_spec_architecture():
    """UNI2-h: ViT-H/14, 8 register tokens, SwiGLU, 1536-d, ≈681M parameters (built on the meta device)."""
    from timm.layers import GluMlp

    spec = get_backbone_spec("UNI2-h")
    with torch.device("meta"):
        vit = create_model(spec)
    assert vit.num_features == 1536 == spec.dim
    assert vit.patch_embed.patch_size == (14, 14)
    assert vit.num_reg_tokens == 8 and len(vit.blocks) == 24
    mlp = vit.blocks[0].mlp  # SwiGLUPacked: one packed fc1 (2 x 4096), SiLU gate
    assert isinstance(mlp, GluMlp) and isinstance(mlp.act, torch.nn.SiLU)
    assert (mlp.fc1.out_features, mlp.fc2.in_features) == (8192, 4096)
    assert sum(p.numel() for p in vit.parameters()) == pytest.approx(681e6, rel=0.01)
    assert spec.hub_repo == "MahmoodLab/UNI2-h" and spec.gated


@pytest.mark.parametrize(("name", "dim"), [("resnet50", 2048), ("densenet121", 1024)])
def test_cnn_specs(name, dim):
    spec = get_backbone_spec(name)
    with torch.device("meta"):
        m = create_model(spec)
    assert m.num_features == dim == spec.dim
    assert spec.hub_repo.startswith("timm/") and not spec.gated
