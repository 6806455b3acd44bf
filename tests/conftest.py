"""Suite-wide settings: property tests draw the same examples on every run (seeded randomness),
so a failure on CI reproduces locally."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("presage", derandomize=True, print_blob=True)
settings.load_profile("presage")
