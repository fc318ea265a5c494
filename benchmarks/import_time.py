"""Import time of ``spacrd_sc``: the bare package (lazy) and each subpackage a user reaches for.

Every figure is a fresh Python process (``python -X importtime`` is not used: the wall time of the whole
``python -c`` command is what a user waits for), repeated; the table gives medians. The row
"all subpackages" imports what ``import spacrd_sc`` loaded eagerly before the package became lazy.

    python benchmarks/import_time.py --repeats 7
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

CASES = {
    "python alone (baseline)": "pass",
    "import spacrd_sc": "import spacrd_sc",
    "spacrd_sc.pl": "import spacrd_sc; spacrd_sc.pl",
    "spacrd_sc.io": "import spacrd_sc; spacrd_sc.io",
    "spacrd_sc.tl": "import spacrd_sc; spacrd_sc.tl",
    "all subpackages (the former eager import)": "import spacrd_sc; [getattr(spacrd_sc, m) for m in "
    "('datasets', 'io', 'pl', 'pp', 'tl', 'SpaCRD')]",
}
HEAVY = ("torch", "spatialdata", "scanpy", "squidpy", "anndata")


def _run(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def _loaded(code: str) -> str:
    probe = f"{code}\nimport sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return out.strip() or "none"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "import_time.md")
    args = p.parse_args()
    rows = []
    for name, code in CASES.items():
        _run(code)  # warm the file cache
        times = [_run(code) for _ in range(args.repeats)]
        rows.append((name, statistics.median(times), min(times), max(times), _loaded(code)))
        print(f"{name:45s} median {rows[-1][1]:.2f} s  (min {rows[-1][2]:.2f}, max {rows[-1][3]:.2f})")
    lines = [
        "# Import time",
        "",
        f"Fresh process per run, {args.repeats} runs per row after one warm-up; Python {platform.python_version()}, "
        f"{platform.machine()}, 2-core shared CPU; {datetime.now():%Y-%m-%d %H:%M}. "
        "Target: `import spacrd_sc` < 1.5 s.",
        "",
        "| what | median s | min s | max s | heavy packages loaded |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {n} | {m:.2f} | {lo:.2f} | {hi:.2f} | {mods} |" for n, m, lo, hi, mods in rows]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
