"""How the command line talks: log lines (plain with timestamps off a terminal), progress bars (on a terminal
only), Python warnings as one log line, and every error as one line (``--debug``: the traceback)."""

from __future__ import annotations

import logging
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger("spacrd_sc")

#: Exit codes: success, an error (bad input, a failed section), a usage error (argparse's own code).
OK, FAILED, USAGE = 0, 1, 2


def on_terminal() -> bool:
    return sys.stderr.isatty()


def setup(*, quiet: bool, debug: bool, device: str) -> bool:
    """Configure logging, warnings and spacrd_sc's settings for one run; return whether to draw progress bars."""
    import spacrd_sc as sc_crd

    terminal = on_terminal()
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(message)s" if terminal else "%(asctime)s spacrd-sc %(levelname)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S" if terminal else "%Y-%m-%dT%H:%M:%S"))
    for h in list(logger.handlers):  # one handler, also when main() runs twice in one process (tests)
        if getattr(h, "_spacrd_cli", False):
            logger.removeHandler(h)
    handler._spacrd_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False

    seen: set[tuple[str, str]] = set()

    def show(message: Any, category: type[Warning], filename: str, lineno: int, *args: Any, **kwargs: Any) -> None:
        text = " ".join(str(message).split())
        if (category.__name__, text) in seen and not debug:  # once per run, however often a library repeats it
            return
        seen.add((category.__name__, text))
        where = f" ({Path(filename).name}:{lineno})" if debug else ""
        logger.info("%s: %s%s", category.__name__, text, where)

    warnings.showwarning = show  # library warnings become one plain log line (hidden by --quiet)
    # docstring-parsing noise of a dependency at import (also ignored by the test configuration)
    warnings.filterwarnings("ignore", message=".* is not a valid key!", category=SyntaxWarning)
    sc_crd.settings.device = device
    progress = terminal and not quiet
    sc_crd.settings.progress_bar = progress
    return progress


def quiet_libraries(debug: bool) -> None:
    """spatialdata (and squidpy through it) log INFO lines with terminal colour codes; keep their warnings only.
    Called by each command once its cheap checks passed (importing spatialdata takes seconds)."""
    if not debug:
        import spatialdata  # noqa: F401  (configures its logger on import)

        logging.getLogger("spatialdata._logging").setLevel(logging.WARNING)


def one_line(err: BaseException) -> str:
    """``Type: message`` on one line, the error's own type and words (the API's named errors)."""
    msg = " ".join(str(err).split()) if str(err) else repr(err)
    if isinstance(err, KeyError) and msg.startswith(("'", '"')) and msg.endswith(("'", '"')):
        msg = msg[1:-1]  # KeyError's str() quotes its message
    return f"{type(err).__name__}: {msg}"


def report(err: BaseException, *, debug: bool, prefix: str = "") -> None:
    """Print ``error: [prefix: ]Type: message`` on stderr; with ``debug`` the traceback before it."""
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    print(f"spacrd-sc: error: {prefix}{one_line(err)}", file=sys.stderr, flush=True)
