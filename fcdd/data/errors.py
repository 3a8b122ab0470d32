"""The one error type of the data layer (defined in fcdd.errors)."""

from __future__ import annotations

from fcdd.errors import DataError

__all__ = ["DataError"]
