"""The package's one logger (``logging.getLogger("spacrd_sc")``); every module imports it from here."""

from __future__ import annotations

import logging

logger = logging.getLogger("spacrd_sc")
