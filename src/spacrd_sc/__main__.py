"""``python -m spacrd_sc``: the ``spacrd-sc`` command line."""

from ._cli import main

raise SystemExit(main())
