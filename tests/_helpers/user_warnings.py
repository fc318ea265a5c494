"""Assert that a chain of calls emits no warning a user would see (Deprecation/Future/UserWarning)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: Categories a notebook user sees by default (PendingDeprecationWarning is hidden unless asked for).
USER_VISIBLE = (DeprecationWarning, FutureWarning, UserWarning)


@contextmanager
def no_user_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning in the block; fail naming them if any is user-visible."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    shown = [w for w in caught if issubclass(w.category, USER_VISIBLE)]
    assert not shown, "user-visible warnings:\n" + "\n".join(
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in shown
    )
