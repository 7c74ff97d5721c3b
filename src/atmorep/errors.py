"""Errors that mean "bad input": the CLI prints their message on one line and exits non-zero.

Every message names the file, variable or key concerned and what was expected.
"""

from __future__ import annotations


class AtmorepError(Exception):
    """Base class of all user-facing errors."""


class DataError(AtmorepError, ValueError):
    """A dataset, file, variable, coordinate or store is missing or not as expected."""
