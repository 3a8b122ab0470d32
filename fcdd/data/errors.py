"""The one error type of the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: the message names the file or value and what is wrong."""
