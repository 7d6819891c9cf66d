"""Readers for study settings: choices, whole numbers, lists of names.

Every reader records a problem instead of raising, so a study YAML's problems
are all reported together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedbone.config.site import SettingsCollector

__all__ = ["StudyCollector"]


class StudyCollector(SettingsCollector):
    """:class:`SettingsCollector` with the readers study sections need."""

    def one_of(
        self,
        raw: Mapping[str, Any],
        key: str,
        where: str,
        options: tuple[str, ...],
        default: str,
    ) -> str:
        """Return ``raw[key]`` if it is one of ``options``, else ``default``."""
        value = raw.get(key, default)
        if str(value) not in options:
            self.add(
                "invalid-choice",
                where,
                f"{value!r} is not one of: {', '.join(options)}",
            )
            return default
        return str(value)

    def integer(
        self,
        raw: Mapping[str, Any],
        key: str,
        where: str,
        default: int,
        low: int,
        high: int,
    ) -> int:
        """Return ``raw[key]`` as a whole number within ``[low, high]``."""
        value = self.number(raw, key, where, default, low, high)
        if not float(value).is_integer():
            self.add("wrong-type", where, f"expected a whole number, got {value}")
        return int(value)

    def subset(
        self,
        raw: Mapping[str, Any],
        key: str,
        where: str,
        options: tuple[str, ...],
        default: tuple[str, ...],
    ) -> tuple[str, ...]:
        """Return ``raw[key]`` as a list of names, each one of ``options``."""
        value = raw.get(key, list(default))
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, str) for v in value
        ):
            self.add("wrong-type", where, "expected a list of names")
            return default
        unknown = [v for v in value if v not in options]
        if unknown:
            self.add(
                "invalid-choice", where, f"{unknown} not among: {', '.join(options)}"
            )
            return default
        return tuple(value)

    def flag(self, raw: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        """Return ``raw[key]`` as a bool, or ``default``."""
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.add("wrong-type", where, "expected true or false")
            return default
        return value

    def names(self, raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        """Return a list of free-form names (e.g. site ids), or ``()``."""
        value = raw.get(key, [])
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, str) for v in value
        ):
            self.add("wrong-type", where, "expected a list of names")
            return ()
        return tuple(value)
