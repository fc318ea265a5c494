"""The ``spacrd-sc`` command line (``python -m spacrd_sc``): ``demo``, ``score`` and ``train`` over the public API.

Built on :mod:`argparse` (standard library): subcommands, ``--help`` with examples and usage errors (exit code
2) without adding a dependency to the package; click / typer would add one (and typer pulls in rich) for
features these three commands do not need.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._run import FAILED, USAGE, report, setup
from ._sections import PLATFORMS, RULES

PROG = "spacrd-sc"

_DESCRIPTION = """\
Find cancer tissue regions in spatial transcriptomics sections (SpaCRD, as an scverse plugin).

  demo    train on four her2st sections, score a held-out one, print the metrics
  score   score Visium / Visium HD / Xenium / legacy ST folders or SpatialData zarr stores
  train   train a model from annotated sections (a label column or QuPath annotations)

Run `spacrd-sc COMMAND --help` for a command's options and examples."""

_DEMO = """\
examples:
  spacrd-sc demo                          # her2st: $SPACRD_DATA_DIR, else downloaded once (pinned, checked)
  spacrd-sc demo --out demo_run --target H1 --train B1,D1,E1,G2

writes into --out: model/ (a saved model with its card), <TARGET>_score.png, <TARGET>_scores.csv (spot
coordinates, scores, calls, regions, the pathologist's labels) and metrics.json."""

_SCORE = """\
examples:
  spacrd-sc score run1/outs run2/outs --model her2st --out scored/
  spacrd-sc score section.zarr --model my_model/ --out scored/ --threshold gmm
  spacrd-sc score xenium_out/ --model my_model/ --out scored/ --bin-size-um 55 --quiet
  spacrd-sc score outs/ --model he_model/ --backbone uni --weights uni.safetensors --out scored/

writes, per input <name> (its folder name; the run folder's for a Space Ranger outs/):
  <out>/<name>.zarr              SpatialData: table with obs spacrd_score / spacrd_cancer / spacrd_region,
                                 shapes 'spacrd_regions' (the region polygons)
  <out>/<name>_regions.geojson   the regions for QuPath (File > Import objects)
  <out>/<name>_score.png         the score map, calls outlined
and prints one line per input. A failed input is reported on one line and the others still run; the exit
code is then 1.

input types (tried in this order; --platform forces one):
""" + "\n".join(f"  {k:10s} {v}" for k, v in RULES.items())

_TRAIN = """\
examples:
  spacrd-sc train A.zarr B.zarr --labels cancer --out my_model/
  spacrd-sc train A.zarr B.zarr --labels pathology --cancer-classes "invasive cancer,cancer in situ" --out m/
  spacrd-sc train run1/outs run2/outs --labels run1.geojson --labels run2.geojson --cancer-classes Tumor --out m/

--labels is an obs column of every input (bool or 0/1; or categories with --cancer-classes), or a QuPath
GeoJSON (annotations exported from QuPath, in the H&E's full-resolution pixels), given once per input.
The model folder holds the weights, a manifest and a model card (README.md); score with --model FOLDER."""


def _common(device: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("run options")
    if device:
        g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N or mps")
    g.add_argument("--seed", type=int, default=0, help="random seed of training and of the GMM threshold (0)")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs (refused otherwise)")
    g.add_argument("--quiet", "-q", action="store_true", help="only warnings, errors and the result lines")
    g.add_argument("--debug", action="store_true", help="debug log lines and the full traceback of an error")
    return p


def _reading(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input options")
    g.add_argument("--platform", choices=PLATFORMS, help="force the input type instead of detecting it")
    g.add_argument(
        "--bin-size-um", type=float, default=None, help="Visium HD / Xenium: side of the pseudo-spots in µm (55)"
    )
    g.add_argument("--backbone", help="H&E features with this backbone (uni, uni2-h, resnet50, any timm name)")
    g.add_argument("--weights", help="local weights file of --backbone (else the hub; UNI needs $HF_TOKEN)")


def _schedule(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training options")
    g.add_argument("--epochs", type=int, default=None, help="epochs of both training stages (default: the API's)")
    g.add_argument("--members", type=int, default=None, help="networks in the seed ensemble (default 3; 1: 3x faster)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=PROG, description=_DESCRIPTION, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser(
        "demo",
        parents=[_common()],
        formatter_class=fmt,
        help="train on four her2st sections and score a held-out one",
        description="Train on her2st sections, score a held-out one, print its metrics against the pathologist.",
        epilog=_DEMO,
    )
    d.add_argument("--out", default="spacrd_demo", help="output folder (default: ./spacrd_demo)")
    d.add_argument("--train", default="B1,D1,E1,H1", help="training sections, comma-separated (B1,D1,E1,H1)")
    d.add_argument("--target", default="G2", help="held-out section to score (G2)")
    _schedule(d)

    s = sub.add_parser(
        "score",
        parents=[_common()],
        formatter_class=fmt,
        help="score sections with a trained model",
        description="Score every spot of each INPUT, call cancer regions, write them for SpatialData and QuPath.",
        epilog=_SCORE,
    )
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="section folder(s) or SpatialData zarr store(s)")
    s.add_argument("--model", required=True, help="a saved model folder, a hub id, or 'her2st' (the ready model)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument(
        "--threshold", default="half_smooth", help="call rule: half_smooth (default), gmm, prior, or a number"
    )
    s.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="--model her2st only: epochs when the ready model must be trained for these genes (default: its card's)",
    )
    _reading(s)

    t = sub.add_parser(
        "train",
        parents=[_common()],
        formatter_class=fmt,
        help="train a model from annotated sections",
        description="Train a SpaCRD model on annotated sections and save it with its model card.",
        epilog=_TRAIN,
    )
    t.add_argument("inputs", nargs="+", metavar="INPUT", help="section folder(s) or SpatialData zarr store(s)")
    t.add_argument("--labels", required=True, action="append", help="obs column, or QuPath GeoJSON (once per input)")
    t.add_argument("--cancer-classes", help="comma-separated classes that count as cancer (GeoJSON / categories)")
    t.add_argument("--out", required=True, help="model folder to write")
    _schedule(t)
    _reading(t)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``spacrd-sc`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help / --version (0) and usage errors (2)
        return int(exit_.code or 0) if isinstance(exit_.code, int) else USAGE
    from ._commands import COMMANDS

    try:
        progress = setup(quiet=args.quiet, debug=args.debug, device=args.device)
        return COMMANDS[args.command](args, progress)
    except KeyboardInterrupt:
        print("spacrd-sc: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the API's named errors, on one line
        report(err, debug=args.debug)
        return FAILED
