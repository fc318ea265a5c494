"""Speed of ``tl.extract_uni``: patches/s for the UNI backbone (random init, no network needed).

Three timings over the same ``--n`` spot patches of one H&E image:

- ``read``: patch decoding alone (``_PatchReader.read`` in batches: crop from the image, pad, resize);
- ``model``: the backbone alone on already-read uint8 batches (host→device copy, normalisation, forward;
  bf16 autocast on CUDA), one batch re-used ``n / batch_size`` times;
- ``end-to-end``: ``extract_uni`` itself (DataLoader with ``--num-workers`` readers overlapping the model).

The image is the full-resolution her2st B4 H&E when found (``$SPACRD_DATA_DIR/her2st/...`` or
``../shared/data``), else a synthetic 8000 px image; spots are placed on a jittered grid over it with
B4's spot diameter (≈145 px), so many more spots than the section has can be timed.

    python benchmarks/extract_speed.py --device cpu --n 64
    python benchmarks/extract_speed.py --device cuda --n 20000

Writes a table to stdout and ``benchmarks/results/extract_speed.md``.
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

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
B4_DIAMETER_PX = 145.0  # ≈ 100 µm at the B4 image's resolution


def _data_dir() -> Path:
    env = os.environ.get("SPACRD_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _load_image(path: str | None, seed: int) -> tuple[np.ndarray, str]:
    """(h, w, 3) uint8 RGB H&E and a description of where it came from."""
    from spacrd_sc._images import _read_image_file

    candidates = [Path(path)] if path else sorted((_data_dir() / "her2st/data/ST-imgs/B/B4").glob("*.jpg"))
    for p in candidates:
        if p.is_file():
            t = time.perf_counter()
            img = _read_image_file(p)[..., :3]
            return np.ascontiguousarray(
                img
            ), f"{p.name} ({img.shape[1]}x{img.shape[0]} px, decoded in {time.perf_counter() - t:.1f} s)"
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
    """SpatialData with ``image`` (chunked/multiscale like ``spacrd_sc.io``), ``n`` circles and a table."""
    import anndata as ad
    import pandas as pd
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel

    from spacrd_sc._images import _image_model
    from spacrd_sc._spatial import _set_scanpy_spatial

    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    step_x, step_y = w / side, h / side
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    xy = np.c_[(gx.ravel() + 0.5) * step_x, (gy.ravel() + 0.5) * step_y][:n]
    xy += rng.uniform(-0.25, 0.25, xy.shape) * [step_x, step_y]
    shapes = ShapesModel.parse(xy, geometry=0, radius=np.full(n, diameter / 2))
    obs = pd.DataFrame(
        {"region": pd.Categorical(["spots"] * n), "spot_id": np.arange(n)}, index=[f"s{i}" for i in range(n)]
    )
    table = ad.AnnData(np.zeros((n, 1), dtype=np.float32), obs=obs)
    table.obsm["spatial"] = xy
    _set_scanpy_spatial(table, "bench", spot_diameter_fullres=diameter)
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    return SpatialData(images={"he": _image_model(image)}, shapes={"spots": shapes}, tables={"table": table})


def _time_read(reader, n: int, batch_size: int) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    first = None
    for s in range(0, n, batch_size):
        batch = reader.read(np.arange(s, min(s + batch_size, n)))
        if first is None:
            first = np.ascontiguousarray(batch)
    return time.perf_counter() - t, first


def _time_model(model, spec, batch: np.ndarray, n: int, device: str, precision: str) -> float:
    import torch

    from spacrd_sc.tl._extract import _to_model_input

    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    cpu_batch = torch.from_numpy(batch)
    if device.startswith("cuda"):
        cpu_batch = cpu_batch.pin_memory()
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=amp, enabled=amp is not None)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    n_batches = max(1, int(np.ceil(n / len(batch))))
    with torch.inference_mode(), autocast:
        for _ in range(2 if device.startswith("cuda") else 0):  # warm-up (kernels, allocator)
            model(_to_model_input(cpu_batch, mean, std, device)).float().cpu()
        sync()
        t = time.perf_counter()
        for _ in range(n_batches):
            model(_to_model_input(cpu_batch, mean, std, device)).float().cpu()
        sync()
    return (time.perf_counter() - t) * n / (n_batches * len(batch))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--n", type=int, default=64, help="number of spot patches")
    ap.add_argument("--backbone", default="uni")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 16 on CPU, 256 on CUDA")
    ap.add_argument("--num-workers", type=int, default=None, help="DataLoader readers; default: 0 on CPU, 6 on CUDA")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--image", default=None, help="H&E image file (default: her2st B4, else synthetic)")
    ap.add_argument("--diameter", type=float, default=B4_DIAMETER_PX, help="spot diameter in px")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=str(HERE / "results" / "extract_speed.md"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import timm
    import torch

    from spacrd_sc._patch_reader import _PatchReader
    from spacrd_sc._utils import _resolve_device
    from spacrd_sc.model._backbones import build_backbone
    from spacrd_sc.tl._extract import _resolve_precision, extract_uni

    logging.getLogger("spacrd_sc").setLevel(logging.ERROR)  # the random-init warning is expected here
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _resolve_device(args.device)
    cuda = device.startswith("cuda")
    precision = _resolve_precision(args.precision, device)
    bs = args.batch_size or (256 if cuda else 16)
    workers = args.num_workers if args.num_workers is not None else (6 if cuda else 0)

    image, image_desc = _load_image(args.image, args.seed)
    sdata = _make_sdata(image, args.n, args.diameter, args.seed)
    torch.manual_seed(args.seed)
    model, spec = build_backbone(args.backbone, pretrained=False)
    model = model.to(device)
    reader = _PatchReader(sdata, size=spec.input_size)

    t_read, first = _time_read(reader, args.n, bs)
    t_model = _time_model(model, spec, first, args.n, device, precision)
    del model
    if cuda:
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    extract_uni(
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
    assert sdata.tables["table"].obsm["X_uni"].shape == (n, spec.dim)

    if cuda:
        dev_name = torch.cuda.get_device_name(torch.device(device))
    else:
        dev_name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    rows = [
        ("read (patch decoding)", t_read, "main process, batches of reader.read"),
        ("model (copy + normalise + forward)", t_model, precision),
        ("end-to-end `extract_uni`", t_e2e, f"num_workers={workers}; includes model build"),
    ]
    header = "| stage | seconds | patches/s | ms/patch | notes |\n|---|---:|---:|---:|---|"
    lines = [f"| {name} | {t:.2f} | {n / t:.1f} | {1000 * t / n:.2f} | {note} |" for name, t, note in rows]
    share = t_read / (t_read + t_model)
    summary = (
        f"- backbone: `{spec.name}` ({spec.timm_name}, {spec.dim}-d, random init), "
        f"input {spec.input_size} px\n"
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
