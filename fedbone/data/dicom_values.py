"""Small, forgiving accessors for DICOM element values."""

from __future__ import annotations

from typing import Any

__all__ = ["as_list"]


def as_list(value: object) -> list[Any]:
    """Return a DICOM value as a list: empty for absent, one item for a scalar.

    Multi-valued elements (``MultiValue``, sequences) become plain lists;
    strings and bytes count as single values.
    """
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)
