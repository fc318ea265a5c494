"""Speed of ``tl.extract_uni``: patches/s for a UNI-sized backbone (ViT-L/16, random init, no network needed).

Three timings over the same ``--n`` spot patches of one H&E image:

- ``read``: patch decoding alone (``sc_crd.pp.spot_patches`` in batches: crop, pad, resize);
- ``model``: the backbone alone on already-read uint8 batches (host→device copy, normalisation, forward;
  bf16 autocast on CUDA), one batch re-used ``n / batch_size`` times. The network is built here with timm
  exactly as UNI is (``vit_large_patch16_224``, ``init_values=1e-5``, ``dynamic_img_size=True``,
  ``num_classes=0``; ImageNet normalisation);
- ``end-to-end``: ``sc_crd.tl.extract_uni`` itself (DataLoader with ``--num-workers`` readers overlapping the
  model).

The image is the full-resolution her2st B4 H&E when found (``$SPACRD_DATA_DIR/her2st/...`` or
``../shared/data``), else a synthetic 8000 px image; spots are placed on a jittered grid over it with
B4's spot diameter (≈145 px), so many more spots than the section has can be timed. The SpatialData is
built by ``sc_crd.io.legacy_st`` from that grid.

    python benchmarks/extract_speed.py --device cpu --n 64
    python benchmarks/extract_speed.py --device cuda --n 20000          # bf16 by default on CUDA

Writes a table to stdout and ``benchmarks/results/extract_speed.md`` (one section per backbone and device).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import platform
import sys
import time
from pathlib import Path

import _common as cm
import numpy as np

HERE = Path(__file__).resolve().parent
B4_DIAMETER_PX = 145.0  # ≈ 100 µm at the B4 image's resolution
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _load_image(path: str | None, seed: int) -> tuple[np.ndarray, str]:
    """(h, w, 3) uint8 RGB H&E and a description of where it came from."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    candidates = [Path(path)] if path else sorted((cm.data_dir() / "her2st/data/ST-imgs/B/B4").glob("*.jpg"))
    for p in candidates:
        if p.is_file():
            t = time.perf_counter()
            img = np.asarray(Image.open(p).convert("RGB"))
            desc = f"{p.name} ({img.shape[1]}x{img.shape[0]} px, decoded in {time.perf_counter() - t:.1f} s)"
            return np.ascontiguousarray(img), desc
    if path:
        raise FileNotFoundError(path)
    rng = np.random.default_rng(seed)
    side = 8000
    yy, xx = np.mgrid[0:side:8, 0:side:8]
    base = np.stack([200 + 40 * np.sin(xx / 300), 120 + 60 * np.cos(yy / 250), 190 + 30 * np.sin((xx + yy) / 400)], -1)
    base = np.repeat(np.repeat(base, 8, 0), 8, 1)
    img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    return img, f"synthetic ({side}x{side} px; her2st B4 not found)"


def _make_sdata(image: np.ndarray, n: int, diameter: float, seed: int):
    """``sc_crd.io.legacy_st`` section over ``image``: ``n`` spots on a jittered grid, one dummy gene."""
    import pandas as pd

    import spacrd_sc as sc_crd

    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    step_x, step_y = w / side, h / side
    gx, gy = (g.ravel()[:n] for g in np.meshgrid(np.arange(side), np.arange(side)))
    px = (gx + 0.5 + rng.uniform(-0.25, 0.25, n)) * step_x
    py = (gy + 0.5 + rng.uniform(-0.25, 0.25, n)) * step_y
    ids = [f"{x}x{y}" for x, y in zip(gx, gy, strict=True)]
    spots = pd.DataFrame({"x": gx, "y": gy, "new_x": gx, "new_y": gy, "pixel_x": px, "pixel_y": py})
    counts = pd.DataFrame({"GENE": np.ones(n, dtype=np.int64)}, index=ids)
    return sc_crd.io.legacy_st(counts, spots, image, library_id="bench", pixel_size_um=100.0 / diameter)


def build_vit_l16():
    """A UNI-sized network: timm ViT-L/16 with UNI's arguments, random weights (1024-d output)."""
    import timm

    return timm.create_model(
        "vit_large_patch16_224", pretrained=False, init_values=1e-5, dynamic_img_size=True, num_classes=0
    ).eval()


def _to_input(batch, mean, std, device: str):
    """uint8 ``(k, s, s, 3)`` → normalised float ``(k, 3, s, s)`` on ``device``."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    return (x - mean) / std


def _time_read(sdata, n: int, batch_size: int, size: int) -> tuple[float, np.ndarray]:
    import spacrd_sc as sc_crd

    t = time.perf_counter()
    first = None
    for s in range(0, n, batch_size):
        batch = sc_crd.pp.spot_patches(sdata, size=size, indices=np.arange(s, min(s + batch_size, n)))
        if first is None:
            first = np.ascontiguousarray(batch)
    return time.perf_counter() - t, first


def _time_model(model, batch: np.ndarray, n: int, device: str, precision: str) -> float:
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    cpu_batch = torch.from_numpy(batch)
    cuda = device.startswith("cuda")
    if cuda:
        cpu_batch = cpu_batch.pin_memory()
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast("cuda" if cuda else "cpu", dtype=amp, enabled=amp is not None)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    n_batches = max(1, int(np.ceil(n / len(batch))))
    with torch.inference_mode(), autocast:
        for _ in range(2 if cuda else 0):  # warm-up (kernels, allocator)
            model(_to_input(cpu_batch, mean, std, device)).float().cpu()
        sync()
        t = time.perf_counter()
        for _ in range(n_batches):
            model(_to_input(cpu_batch, mean, std, device)).float().cpu()
        sync()
    return (time.perf_counter() - t) * n / (n_batches * len(batch))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--n", type=int, default=64, help="number of spot patches")
    ap.add_argument("--backbone", default="uni", help="backbone of the end-to-end `extract_uni` call")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 16 on CPU, 256 on CUDA")
    ap.add_argument("--num-workers", type=int, default=None, help="DataLoader readers; default: 0 on CPU, 6 on CUDA")
    ap.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16")
    ap.add_argument("--image", default=None, help="H&E image file (default: her2st B4, else synthetic)")
    ap.add_argument("--diameter", type=float, default=B4_DIAMETER_PX, help="spot diameter in px")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=str(HERE / "results" / "extract_speed.md"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import timm
    import torch

    import spacrd_sc as sc_crd

    logging.getLogger("spacrd_sc").setLevel(logging.ERROR)  # the random-init warning is expected here
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available here.")
    cuda = device.startswith("cuda")
    precision = ("bf16" if cuda else "fp32") if args.precision == "auto" else args.precision
    bs = args.batch_size or (256 if cuda else 16)
    workers = args.num_workers if args.num_workers is not None else (6 if cuda else 0)
    size = 224

    image, image_desc = _load_image(args.image, args.seed)
    sdata = _make_sdata(image, args.n, args.diameter, args.seed)
    torch.manual_seed(args.seed)
    model = build_vit_l16().to(device)
    dim = model.num_features

    t_read, first = _time_read(sdata, args.n, bs, size)
    t_model = _time_model(model, first, args.n, device, precision)
    del model
    if cuda:
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    sc_crd.tl.extract_uni(
        sdata,
        backbone=args.backbone,
        pretrained=False,
        device=device,
        batch_size=bs,
        num_workers=workers,
        precision=precision,
        progress_bar=False,
    )
    t_e2e = time.perf_counter() - t0
    n = args.n
    feats = sdata.tables["table"].obsm["X_uni"]
    assert feats.shape[0] == n, feats.shape

    if cuda:
        dev_name = torch.cuda.get_device_name(torch.device(device))
    else:
        dev_name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    rows = [
        ("read (patch decoding)", t_read, "main process, batches of `pp.spot_patches`"),
        ("model (copy + normalise + forward)", t_model, precision),
        ("end-to-end `extract_uni`", t_e2e, f"num_workers={workers}; includes model build"),
    ]
    header = "| stage | seconds | patches/s | ms/patch | notes |\n|---|---:|---:|---:|---|"
    lines = [f"| {name} | {t:.2f} | {n / t:.1f} | {1000 * t / n:.2f} | {note} |" for name, t, note in rows]
    share = t_read / (t_read + t_model)
    summary = (
        f"- model timing: timm `vit_large_patch16_224` (UNI's architecture, {dim}-d, random init), input {size} px;"
        f" end-to-end: `extract_uni(backbone={args.backbone!r}, pretrained=False)`, {feats.shape[1]}-d\n"
        f"- device: {device} ({dev_name}); precision {precision}; batch size {bs}\n"
        f"- patches: {n} spots, diameter {args.diameter:.0f} px, from {image_desc}\n"
        f"- split (read vs model, sequential): {100 * share:.1f}% reading / {100 * (1 - share):.1f}% model\n"
        f"- torch {torch.__version__}, timm {timm.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; {_dt.datetime.now().isoformat(timespec='seconds')}"
    )
    text = "\n".join([header, *lines])
    print(text)
    print(summary)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    section = f"## {args.backbone} on {device} ({dev_name}), n={n}\n\n{summary}\n\n{text}\n"
    previous = out.read_text() if out.exists() else "# extract_uni speed\n\nWritten by `benchmarks/extract_speed.py`.\n"
    # keep one section per (backbone, device kind): a re-run replaces its own section
    head = f"## {args.backbone} on {device} "
    parts = previous.split("\n## ")
    kept = [parts[0]] + ["## " + p if not p.startswith("## ") else p for p in parts[1:]]
    kept = [p for p in kept if not p.startswith(head)]
    out.write_text("\n".join(s.rstrip("\n") + "\n" for s in [*kept, section]))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
