"""Fixtures of tests/pix_v3 (defined in pixv3_support)."""

from pix_v3.pixv3_support import pix, xref  # noqa: F401 - pytest fixtures
