"""``python -m loadtest.sim``: the same as ``presage simulate``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
