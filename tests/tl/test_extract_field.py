"""Patches at the backbone's physical scale: ``patch_field`` / ``microns_per_pixel`` of ``tl.extract_uni`` and
``pp.spot_patches``, and the registry's physical facts (µm per pixel, input size, source, licence).

Synthetic sections whose scale is known: a legacy-ST style ``uns['spatial']`` (``platform='legacy_st'``, 100 µm
spots) over images drawn from one physical pattern at several µm per pixel. Real torch, real timm models
(random init or weights written by the test), no network.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import anndata as ad
import numpy as np
import pytest
import torch

from spacrd_sc._images import _image_model
from spacrd_sc.model import _backbones
from spacrd_sc.model._backbones import BACKBONES, build_backbone, create_model, get_backbone_spec
from spacrd_sc.pp import spot_patches
from spacrd_sc.tl import _extract
from spacrd_sc.tl._extract import extract_uni

SMALL = "resnet18"  # tiny timm CNN: accepts any input size, no physical scale of its own
SPOT_UM = 100.0  # legacy ST spot diameter
#: spot centres in µm (well inside a 400 × 400 µm section)
CENTRES_UM = np.array([[150.0, 150.0], [250.0, 150.0], [150.0, 250.0], [250.0, 250.0]])


def pattern(mpp: float, side_um: float = 400.0) -> np.ndarray:
    """The same physical H&E-like pattern drawn at ``mpp`` µm per pixel: R, G vary smoothly with x, y (in µm)."""
    n = int(round(side_um / mpp))
    c = (np.arange(n) + 0.5) * mpp  # pixel centres in µm
    yy, xx = np.meshgrid(c, c, indexing="ij")
    r = 128 + 100 * np.sin(xx / 23.0)
    g = 128 + 100 * np.cos(yy / 31.0)
    b = 128 + 60 * np.sin((xx + yy) / 17.0)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def section(image: np.ndarray, mpp: float | None, *, platform: str = "legacy_st", centres_um=CENTRES_UM):
    """A SpatialData: image ``he`` in full-resolution pixels (= global units), spots at ``centres_um``."""
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    scale = 1.0 if mpp is None else mpp  # a section without a known scale: pixels are µm, nobody says so
    xy = np.asarray(centres_um, dtype=float) / scale
    n = len(xy)
    adata = ad.AnnData(np.random.default_rng(0).poisson(2.0, (n, 5)).astype(np.float32))
    adata.obs_names = [f"s{i}" for i in range(n)]
    adata.obsm["spatial"] = xy
    meta = {"platform": platform} if mpp is not None else {}
    adata.uns["spatial"] = {"lib": {"scalefactors": {"spot_diameter_fullres": SPOT_UM / scale}, "metadata": meta}}
    return SpatialData(images={"he": _image_model(image)}, tables={"table": TableModel.parse(adata)})


def _model_inputs(monkeypatch) -> list[torch.Tensor]:
    """Record what ``extract_uni``'s backbone receives (a forward pre-hook on the real model)."""
    seen: list[torch.Tensor] = []

    def build(*args, **kwargs):
        model, spec = build_backbone(*args, **kwargs)
        model.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach().clone()))
        return model, spec

    monkeypatch.setattr(_extract, "build_backbone", build)
    return seen


def _normalised(patches: np.ndarray, spec) -> torch.Tensor:
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)


# ------------------------------------------------------------------------------------- µm-aware patch field
def test_same_physical_field_at_two_resolutions():
    """A 112 µm field is 112 px at 1 µm/px and 224 px at 0.5 µm/px, and shows the same tissue in both."""
    coarse, fine = section(pattern(1.0), 1.0), section(pattern(0.5), 0.5)
    a = spot_patches(coarse, size=56, patch_field=112.0)
    b = spot_patches(fine, size=56, patch_field=112.0)
    assert a.shape == b.shape == (4, 56, 56, 3)
    # same physical content (two samplings of one smooth pattern), while neighbouring spots differ clearly
    diff = np.abs(a.astype(float) - b.astype(float)).mean()
    other = np.abs(a.astype(float) - b[[1, 0, 3, 2]].astype(float)).mean()
    assert diff < 3.0 and other > 10 * diff, (diff, other)
    # the spot crop covers 100 µm on both: a different (smaller) field than 112 µm
    spot = spot_patches(fine, size=56)
    assert np.abs(spot.astype(float) - b.astype(float)).mean() > 2 * diff


def test_field_pixels_follow_the_image_scale(monkeypatch):
    """extract_uni's default field for a 0.5 µm/px backbone: 112 µm = 112 px at 1 µm/px, 224 px at 0.5 µm/px."""
    spec = dataclasses.replace(get_backbone_spec(SMALL), microns_per_pixel=0.5, input_size=224)
    monkeypatch.setitem(BACKBONES, SMALL, spec)  # a registered CNN with a physical scale, as the encoders have
    params = {}
    for mpp in (1.0, 0.5):
        sd = section(pattern(mpp), mpp)
        extract_uni(sd, backbone=SMALL, pretrained=False, size=32, progress_bar=False)
        params[mpp] = sd.tables["table"].uns["X_uni"]["params"]
    for mpp, p in params.items():
        assert p["patch_field"] == "backbone"
        assert p["microns_per_pixel"] == pytest.approx(mpp)
        assert p["field_um"] == pytest.approx(112.0)
        assert p["field_px"] == pytest.approx(112.0 / mpp)
        assert p["diameter_px"] == pytest.approx(SPOT_UM / mpp)
    assert "spot diameter 100 µm" in params[1.0]["microns_per_pixel_source"]


def test_patch_content_is_the_physical_window():
    """At 1 µm/px a 40 µm field with size 40 is exactly the 40 × 40 px image window around the centre."""
    img = pattern(1.0)
    sd = section(img, 1.0, centres_um=[[150.0, 120.0]])
    patch = spot_patches(sd, size=40, patch_field=40.0)[0]
    np.testing.assert_array_equal(patch, img[100:140, 130:170])  # rows y ± 20, columns x ± 20
    # microns_per_pixel= overrides the recorded scale: 2 µm per unit → the same 40 µm are 20 px
    half = spot_patches(sd, size=20, patch_field=40.0, microns_per_pixel=2.0)[0]
    np.testing.assert_array_equal(half, img[110:130, 140:160])


def test_model_sees_the_physical_patch_and_spot_option_reproduces_the_old_crop(monkeypatch):
    sd = section(pattern(0.5), 0.5)
    spec = get_backbone_spec(SMALL)
    seen = _model_inputs(monkeypatch)
    # a number is a side in µm
    extract_uni(sd, backbone=SMALL, pretrained=False, size=32, patch_field=112.0, progress_bar=False)
    expected = _normalised(spot_patches(sd, size=32, patch_field=112.0), spec)
    torch.testing.assert_close(torch.cat(seen), expected, atol=1e-5, rtol=0)
    p = sd.tables["table"].uns["X_uni"]["params"]
    assert p["patch_field"] == 112.0 and p["field_px"] == pytest.approx(224.0)

    # "spot": the crop before physical fields existed (spot diameter × context), the same pixels as always
    seen.clear()
    extract_uni(sd, backbone=SMALL, pretrained=False, size=32, patch_field="spot", context=1.5, progress_bar=False)
    expected = _normalised(spot_patches(sd, size=32, context=1.5), spec)
    torch.testing.assert_close(torch.cat(seen), expected, atol=1e-5, rtol=0)
    p = sd.tables["table"].uns["X_uni"]["params"]
    assert p["patch_field"] == "spot" and p["field_px"] == pytest.approx(1.5 * SPOT_UM / 0.5)
    assert p["field_um"] == pytest.approx(150.0) and p["microns_per_pixel"] == pytest.approx(0.5)


def test_backbone_without_scale_falls_back_to_the_spot(caplog):
    """An ImageNet CNN has no µm per pixel: the default field is the spot, said at info level and recorded."""
    sd = section(pattern(1.0), None)  # and the section has no scale either: still fine for the spot crop
    with caplog.at_level(logging.INFO, logger="spacrd_sc"):
        extract_uni(sd, backbone=SMALL, pretrained=False, size=32, progress_bar=False)
    assert "records no µm per pixel" in caplog.text
    p = sd.tables["table"].uns["X_uni"]["params"]
    assert p["patch_field"] == "spot" and p["field_px"] == pytest.approx(SPOT_UM)
    assert np.isnan(p["microns_per_pixel"]) and np.isnan(p["field_um"])
    assert p["microns_per_pixel_source"] == "unknown"


def test_params_survive_h5ad(tmp_path):
    sd = section(pattern(1.0), 1.0)
    extract_uni(sd, backbone=SMALL, pretrained=False, size=32, patch_field=80.0, progress_bar=False)
    sd.tables["table"].write_h5ad(tmp_path / "t.h5ad")
    p = ad.read_h5ad(tmp_path / "t.h5ad").uns["X_uni"]["params"]
    assert float(p["field_um"]) == pytest.approx(80.0) and float(p["field_px"]) == pytest.approx(80.0)
    assert float(p["microns_per_pixel"]) == pytest.approx(1.0) and float(p["patch_field"]) == 80.0


def test_coarse_image_is_warned_about(monkeypatch, caplog):
    """UNI-like 0.5 µm/px backbone on a 4 µm/px image: the patches are upsampled 8×, a warning says so."""
    spec = dataclasses.replace(get_backbone_spec(SMALL), microns_per_pixel=0.5, input_size=224)
    monkeypatch.setitem(BACKBONES, SMALL, spec)
    kw = {"backbone": SMALL, "pretrained": False, "size": 32, "progress_bar": False}
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        extract_uni(section(pattern(1.0), 1.0), **kw)
    assert "coarser" not in caplog.text  # 1 µm/px: twice as coarse is tolerated
    with caplog.at_level(logging.WARNING, logger="spacrd_sc"):
        extract_uni(section(pattern(4.0), 4.0), **kw)
    assert "4 µm per pixel, 8.0 times coarser" in caplog.text


def test_anndata_hires_scale():
    """An AnnData's hires copy (scale 0.5) has twice the µm per pixel of the full-resolution frame."""
    full = pattern(1.0)
    adata = section(full, 1.0).tables["table"].copy()
    entry = adata.uns["spatial"]["lib"]
    entry["images"] = {"hires": full[::2, ::2].copy()}
    entry["scalefactors"]["tissue_hires_scalef"] = 0.5
    kw = {"backbone": SMALL, "pretrained": False, "size": 32, "progress_bar": False}
    out = extract_uni(adata, patch_field=112.0, copy=True, **kw)
    p = out.uns["X_uni"]["params"]
    assert p["microns_per_pixel"] == pytest.approx(2.0)
    assert p["field_px"] == pytest.approx(56.0) and p["field_um"] == pytest.approx(112.0)


def test_visium_hd_style_microns_per_pixel_is_read():
    """Space Ranger's ``scalefactors['microns_per_pixel']`` wins over the platform's spot diameter."""
    sd = section(pattern(1.0), None)
    sd.tables["table"].uns["spatial"]["lib"]["scalefactors"]["microns_per_pixel"] = 0.8
    patches = spot_patches(sd, size=10, patch_field=8.0)  # 8 µm = 10 px at 0.8 µm/px: identity resize
    img = pattern(1.0)
    np.testing.assert_array_equal(patches[0], img[145:155, 145:155])


# ------------------------------------------------------------------------------------------------ bad inputs
def test_unknown_scale_is_refused_before_any_work(monkeypatch):
    """UNI's default physical field on a section without µm per pixel: a named error, nothing built."""
    sd = section(pattern(1.0), None)

    def no_build(*args, **kwargs):
        raise AssertionError("the backbone was built before the inputs were checked")

    monkeypatch.setattr(_extract, "build_backbone", no_build)
    t0 = time.perf_counter()
    with pytest.raises(
        ValueError,
        match=r"µm per pixel is unknown.*112 µm field of backbone 'uni'.*"
        r"microns_per_pixel=.*patch_field='spot'",
    ):
        extract_uni(sd, backbone="uni", progress_bar=False)
    assert time.perf_counter() - t0 < 5
    with pytest.raises(ValueError, match=r"µm per pixel is unknown.*`microns_per_pixel=`"):
        spot_patches(sd, patch_field=112.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"patch_field": "tile"}, ValueError, r"Unknown patch_field 'tile'.*\('backbone', 'spot'\)"),
        ({"patch_field": -5.0}, ValueError, "`patch_field` must be a positive number"),
        ({"patch_field": float("nan")}, ValueError, "`patch_field` must be a positive number"),
        ({"patch_field": [112]}, TypeError, "`patch_field` must be a number"),
        ({"microns_per_pixel": 0.0}, ValueError, "`microns_per_pixel` must be a positive number"),
        ({"microns_per_pixel": "0.5"}, TypeError, "`microns_per_pixel` must be a number"),
    ],
)
def test_bad_field_options(monkeypatch, kwargs, error, match):
    monkeypatch.setattr(_extract, "build_backbone", lambda *a, **k: pytest.fail("built before the checks"))
    with pytest.raises(error, match=match):
        extract_uni(section(pattern(1.0), 1.0), backbone=SMALL, pretrained=False, **kwargs)


def test_spot_patches_field_options():
    sd = section(pattern(1.0), 1.0)
    with pytest.raises(ValueError, match="spot_patches has no backbone"):
        spot_patches(sd, patch_field="backbone")
    with pytest.raises(ValueError, match="`diameter_px` sets the spot crop"):
        spot_patches(sd, patch_field=50.0, diameter_px=20.0)


# ------------------------------------------------------------------------------------------------ registry
def test_registry_records_scale_source_and_licence():
    for name, spec in BACKBONES.items():
        assert spec.input_size == 224, name
        assert spec.source and spec.licence and spec.description, name
        assert spec.pooling in _backbones.POOLINGS, name
    for name in ("uni", "uni2-h", "h-optimus-0", "virchow2"):
        spec = get_backbone_spec(name)
        assert spec.microns_per_pixel == 0.5 and spec.field_um == pytest.approx(112.0), name
        assert spec.gated and spec.hub_repo is not None, name
    for name in ("resnet50", "densenet121"):
        assert get_backbone_spec(name).microns_per_pixel is None and get_backbone_spec(name).field_um is None
    assert get_backbone_spec(SMALL).field_um is None  # timm models outside the registry: no physical scale
    assert "Apache-2.0" in get_backbone_spec("h-optimus-0").licence
    assert "CC-BY-NC-ND" in get_backbone_spec("virchow2").licence


def test_h_optimus_0_architecture():
    """H-optimus-0: ViT-g/14, 4 registers, SwiGLU, fixed 224 px, class token 1536-d, 1.13B parameters."""
    spec = get_backbone_spec("H-optimus-0")
    with torch.device("meta"):
        vit = create_model(spec)
    assert vit.num_features == 1536 == spec.dim and vit.global_pool == "token"
    assert vit.patch_embed.patch_size == (14, 14) and vit.num_reg_tokens == 4 and len(vit.blocks) == 40
    assert not vit.dynamic_img_size and vit.patch_embed.img_size == (224, 224)
    assert sum(p.numel() for p in vit.parameters()) == pytest.approx(1.134e9, rel=0.005)
    assert spec.mean == pytest.approx((0.707223, 0.578729, 0.703617))
    assert spec.std == pytest.approx((0.211883, 0.230117, 0.177517))


def test_virchow2_architecture():
    """Virchow2: ViT-H/14, 4 registers, SwiGLU (mlp_ratio 5.3375), token output, 632M parameters."""
    spec = get_backbone_spec("Virchow2")
    with torch.device("meta"):
        vit = create_model(spec)
    assert vit.embed_dim == 1280 and spec.dim == 2560 and spec.pooling == "cls+mean_patch"
    assert vit.num_reg_tokens == 4 and vit.num_prefix_tokens == 5 and len(vit.blocks) == 32
    assert vit.global_pool == "" and vit.blocks[0].mlp.fc1.out_features == 2 * 3416
    assert sum(p.numel() for p in vit.parameters()) == pytest.approx(632e6, rel=0.005)


def _reduced(name: str) -> _backbones.BackboneSpec:
    """The registered encoder at toy width/depth: same timm builder, layers, registers and pooling."""
    spec = get_backbone_spec(name)
    kwargs = {**spec.timm_kwargs, "embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 28}
    return dataclasses.replace(spec, timm_kwargs=kwargs, dim=None, input_size=28)


def test_virchow2_embedding_is_cls_and_mean_patch_tokens(monkeypatch, tmp_path):
    """Local weights load strictly into the timm model; the output is class token ⊕ mean of patch tokens."""
    from safetensors.torch import save_file

    spec = _reduced("virchow2")
    torch.manual_seed(0)
    ref = create_model(spec).eval()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "v2.safetensors"))
    monkeypatch.setitem(BACKBONES, "virchow2", spec)
    model, built = build_backbone("virchow2", weights=tmp_path / "v2.safetensors")
    assert built.dim == 64 and built.weights_source == str(tmp_path / "v2.safetensors")
    x = torch.randn(3, 3, 28, 28)
    with torch.inference_mode():
        tokens = ref(x)  # global_pool="": (n, 1 + 4 + 4, 32) after the final norm
        out = model(x)
    assert tokens.shape == (3, 9, 32) and out.shape == (3, 64)
    torch.testing.assert_close(out, torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=-1))
    # end to end: 64-d features per spot, its own 14 µm field (0.5 µm/px × 28 px) at 1 µm/px = 14 px
    sd = section(pattern(1.0), 1.0)
    extract_uni(sd, backbone="virchow2", weights=tmp_path / "v2.safetensors", progress_bar=False)
    table = sd.tables["table"]
    assert table.obsm["X_uni"].shape == (4, 64) and np.isfinite(table.obsm["X_uni"]).all()
    assert table.uns["X_uni"]["params"]["field_px"] == pytest.approx(14.0)


def test_h_optimus_0_local_weights_and_fixed_size(monkeypatch, tmp_path):
    """Weights saved from the timm model load strictly; the class token is the embedding; 224 px only."""
    spec = _reduced("h-optimus-0")
    torch.manual_seed(1)
    ref = create_model(spec).eval()
    torch.save(ref.state_dict(), tmp_path / "ho.pth")
    monkeypatch.setitem(BACKBONES, "h-optimus-0", spec)
    model, built = build_backbone("h-optimus-0", weights=tmp_path / "ho.pth")
    x = torch.randn(2, 3, 28, 28)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref.forward_features(x)[:, 0])
    assert built.dim == 32
    sd = section(pattern(1.0), 1.0)
    with pytest.raises(ValueError, match=r"only accepts 28-px inputs"):
        extract_uni(sd, backbone="h-optimus-0", weights=tmp_path / "ho.pth", size=32, progress_bar=False)
