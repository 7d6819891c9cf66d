"""Reading settings mappings: every problem recorded, each setting declared once.

A settings dataclass declares each YAML setting once, as a field whose default
also says how the setting is read and which values it allows::

    @dataclass(frozen=True)
    class TrainingSettings:
        rounds: int = whole(10, 1, 10_000)
        lr: float = number(1e-3, 1e-7, 10.0)

``collector.settings(raw, "training", TrainingSettings)`` then reads every
declared field from ``raw`` (key = field name, default = field default) and
builds the dataclass. Adding a setting is adding one field; a check that
relates several settings goes after the ``settings`` call.

Readers record a problem instead of raising, so all of a YAML file's problems
are reported together; a reader that records one returns its default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import field, fields
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from fedbone.errors import ConfigError, Problem

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "SettingsCollector",
    "choice",
    "flag",
    "names",
    "number",
    "one_of",
    "optional_number",
    "optional_whole",
    "read_yaml",
    "require_mapping",
    "setting_keys",
    "subset",
    "whole",
]

_E = TypeVar("_E", bound=StrEnum)
_T = TypeVar("_T")
_S = TypeVar("_S", bound="DataclassInstance")
_RULE = "fedbone.config.rule"


class SettingsCollector:
    """Reads a nested settings mapping, gathering every problem found.

    Every reader takes ``where``, the setting's dotted place in the file
    (``training.rounds``); its last part is the key read from ``raw``.

    Parameters
    ----------
    allowed
        For each section name (``""`` for the top level), the keys it may hold.
    """

    def __init__(self, allowed: Mapping[str, set[str]]) -> None:
        self.allowed = allowed
        self.problems: list[Problem] = []

    def add(self, code: str, where: str, message: str) -> None:
        """Record one problem.

        Parameters
        ----------
        code
            Stable kebab-case problem code (``out-of-range``...).
        where
            Dotted place of the setting in the file.
        message
            What is wrong and what was expected.
        """
        self.problems.append(Problem(code, message, where))

    def section(self, raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        """Return the mapping under ``name`` (empty if absent), checking its keys."""
        value = raw.get(name, {})
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add("wrong-type", name, "expected a mapping of settings")
            return {}
        self.unknown_keys(value, name)
        return value

    def unknown_keys(self, raw: Mapping[str, Any], section: str) -> None:
        """Record every key of ``raw`` that ``section`` does not allow."""
        allowed = self.allowed[section]
        for key in raw:
            if key not in allowed:
                where = f"{section}.{key}" if section else str(key)
                self.add(
                    "unknown-key",
                    where,
                    f"unknown setting; allowed here: {', '.join(sorted(allowed))}",
                )

    def settings(
        self, raw: Mapping[str, Any], where: str, kind: type[_S], **given: Any
    ) -> _S:
        """Build ``kind`` from the section ``raw``, reading every declared field.

        Parameters
        ----------
        raw
            The section's mapping.
        where
            The section's dotted place in the file (``training``).
        kind
            A settings dataclass whose fields are declared with this module's
            field functions (:func:`whole`, :func:`number`...).
        **given
            Values of the fields read by hand; they are not read from ``raw``.
            Fields neither declared nor given keep their default.
        """
        values = dict(given)
        for setting in fields(kind):
            rule: _Rule | None = setting.metadata.get(_RULE)
            if rule is not None and setting.name not in given:
                place = f"{where}.{setting.name}"
                values[setting.name] = self._read(raw, place, setting.default, rule)
        return kind(**values)

    def number(
        self,
        raw: Mapping[str, Any],
        where: str,
        default: float,
        low: float,
        high: float,
    ) -> float:
        """Return the setting as a number within ``[low, high]``, or ``default``.

        Parameters
        ----------
        raw
            The mapping holding the setting.
        where
            Dotted place of the setting; its last part is the key.
        default
            Returned when the setting is absent or invalid.
        low, high
            The range allowed, both ends included.
        """
        return self._read(raw, where, default, _in_range(low, high))

    def choice(
        self, raw: Mapping[str, Any], where: str, enum: type[_E], default: _E
    ) -> _E:
        """Return the setting as a member of ``enum``, or ``default``.

        Parameters
        ----------
        raw
            The mapping holding the setting.
        where
            Dotted place of the setting; its last part is the key.
        enum
            The members allowed.
        default
            Returned when the setting is absent, null or invalid.
        """
        return self._read(raw, where, default, _member_of(enum))

    def subset(
        self,
        raw: Mapping[str, Any],
        where: str,
        options: tuple[str, ...],
        default: tuple[str, ...],
    ) -> tuple[str, ...]:
        """Return the setting as a list of names, each one of ``options``.

        Parameters
        ----------
        raw
            The mapping holding the setting.
        where
            Dotted place of the setting; its last part is the key.
        options
            The names allowed.
        default
            Returned when the setting is absent or invalid.
        """
        return self._read(raw, where, default, _names_among(options))

    def names(self, raw: Mapping[str, Any], where: str) -> tuple[str, ...]:
        """Return the setting as a list of free-form names (site ids...), or ``()``."""
        return self._read(raw, where, (), _names_among(None))

    def _read(
        self, raw: Mapping[str, Any], where: str, default: Any, rule: _Rule
    ) -> Any:
        return rule(self, raw.get(_key(where), default), where, default)


# A rule checks one setting's value: (collector, value, where, default) -> the
# value to use; a value it rejects is recorded as a problem and replaced by the
# default.
_Rule = Callable[[SettingsCollector, Any, str, Any], Any]


def _in_range(low: float, high: float, *, whole: bool = False) -> _Rule:
    def check(c: SettingsCollector, value: Any, where: str, default: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            c.add("wrong-type", where, f"expected a number, got {value!r}")
            value = default
        elif not low <= value <= high:
            c.add("out-of-range", where, f"{value} is outside [{low}, {high}]")
            value = default
        else:
            value = float(value)
        if not whole:
            return value
        if not float(value).is_integer():
            c.add("wrong-type", where, f"expected a whole number, got {value}")
        return int(value)

    return check


def _among(options: tuple[str, ...]) -> _Rule:
    def check(c: SettingsCollector, value: Any, where: str, default: Any) -> Any:
        if str(value) not in options:
            c.add(
                "invalid-choice",
                where,
                f"{value!r} is not one of: {', '.join(options)}",
            )
            return default
        return str(value)

    return check


def _member_of(enum: type[StrEnum]) -> _Rule:
    def check(c: SettingsCollector, value: Any, where: str, default: Any) -> Any:
        if value is None:
            return default
        try:
            return enum(str(value))
        except ValueError:
            options = ", ".join(e.value for e in enum)
            c.add("invalid-choice", where, f"{value!r} is not one of: {options}")
            return default

    return check


def _names_among(options: tuple[str, ...] | None) -> _Rule:
    """Return the rule of a list of names, each one of ``options`` (``None``: any)."""

    def check(c: SettingsCollector, value: Any, where: str, default: Any) -> Any:
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, str) for v in value
        ):
            c.add("wrong-type", where, "expected a list of names")
            return default
        unknown = [v for v in value if options is not None and v not in options]
        if unknown:
            c.add(
                "invalid-choice",
                where,
                f"{unknown} not among: {', '.join(options or ())}",
            )
            return default
        return tuple(value)

    return check


def _true_or_false(c: SettingsCollector, value: Any, where: str, default: Any) -> Any:
    if not isinstance(value, bool):
        c.add("wrong-type", where, "expected true or false")
        return default
    return value


def _unless_null(rule: _Rule, fallback: float) -> _Rule:
    """Return ``rule`` for a setting that null (or an absent default) switches off."""

    def check(c: SettingsCollector, value: Any, where: str, default: Any) -> Any:
        if value is None:
            return None
        # the fallback is only ever returned with a recorded problem
        return rule(c, value, where, fallback if default is None else default)

    return check


def setting_keys(kind: type[DataclassInstance]) -> set[str]:
    """Return the YAML keys of a settings dataclass: its field names."""
    return {setting.name for setting in fields(kind)}


def _key(where: str) -> str:
    return where.rpartition(".")[2]


def _declared(default: _T, rule: _Rule) -> _T:
    return field(default=default, metadata={_RULE: rule})


def number(default: float, low: float, high: float) -> float:
    """Declare a number setting within ``[low, high]``.

    Parameters
    ----------
    default
        The value when the setting is absent.
    low, high
        The range allowed, both ends included.
    """
    return _declared(default, _in_range(low, high))


def whole(default: int, low: int, high: int) -> int:
    """Declare a whole-number setting within ``[low, high]``.

    Parameters
    ----------
    default
        The value when the setting is absent.
    low, high
        The range allowed, both ends included.
    """
    return _declared(default, _in_range(low, high, whole=True))


def optional_number(default: float | None, low: float, high: float) -> float | None:
    """Declare a number setting within ``[low, high]`` that null switches off.

    Parameters
    ----------
    default
        The value when the setting is absent (``None``: off).
    low, high
        The range allowed, both ends included.
    """
    return _declared(default, _unless_null(_in_range(low, high), low))


def optional_whole(default: int | None, low: int, high: int) -> int | None:
    """Declare a whole-number setting within ``[low, high]`` that null switches off.

    Parameters
    ----------
    default
        The value when the setting is absent (``None``: off).
    low, high
        The range allowed, both ends included.
    """
    return _declared(default, _unless_null(_in_range(low, high, whole=True), low))


def one_of(default: str, options: tuple[str, ...]) -> str:
    """Declare a setting that takes one of ``options``."""
    return _declared(default, _among(options))


def choice(default: _E) -> _E:
    """Declare a setting that takes a member of ``default``'s enum."""
    return _declared(default, _member_of(type(default)))


def subset(default: tuple[str, ...], options: tuple[str, ...]) -> tuple[str, ...]:
    """Declare a list-of-names setting, each one of ``options``."""
    return _declared(default, _names_among(options))


def names() -> tuple[str, ...]:
    """Declare a setting that lists free-form names (site ids...); default none."""
    return _declared((), _names_among(None))


def flag(default: bool) -> bool:
    """Declare a true/false setting."""
    return _declared(default, _true_or_false)


def require_mapping(raw: Any, subject: str) -> Mapping[str, Any]:
    """Return ``raw`` if it is a mapping, else raise ConfigError for ``subject``."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            subject, [Problem("wrong-type", "the file must hold a YAML mapping")]
        )
    return raw


#: A site or study YAML is a few KiB; anything above this is refused unread.
MAX_YAML_BYTES = 1 << 20
#: Nested mappings and lists allowed; the deepest real config nests 4.
MAX_YAML_DEPTH = 64


class _RefusedError(Exception):
    """A YAML construct refused while composing (alias, anchor, nesting)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}" if mark is not None else ""


class _ConfigLoader(yaml.SafeLoader):
    """A safe loader for settings files: no aliases, bounded nesting.

    Anchors and aliases are refused outright (settings never need them and
    they are how a few hundred bytes expand to gigabytes, the "billion
    laughs"). Nesting is counted while composing, so a deep document is
    refused long before Python's recursion limit. Duplicate mapping keys are
    gathered, not silently resolved to the last one.
    """

    def __init__(self, text: str, max_depth: int) -> None:
        super().__init__(text)
        self.max_depth = max_depth
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            kind = "alias" if isinstance(event, yaml.AliasEvent) else "anchor"
            raise _RefusedError(
                Problem(
                    "yaml-alias",
                    f"YAML {kind} {event.anchor!r} refused: settings files may not "
                    "use anchors (&name) or aliases (*name); write the values out",
                    _line(event.start_mark),
                )
            )
        if not isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > self.max_depth:
                raise _RefusedError(
                    Problem(
                        "too-deep",
                        f"mappings and lists nest deeper than {self.max_depth} "
                        "levels; a settings file never needs that",
                        _line(event.start_mark),
                    )
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def duplicate_keys(self, root: yaml.Node) -> list[Problem]:
        """Return one ``duplicate-key`` problem per key given twice in a mapping.

        The tree is walked with an explicit stack (no recursion); keys are
        compared as constructed (``on`` and ``true`` are the same key).
        """
        problems: list[tuple[int, Problem]] = []
        stack: list[tuple[yaml.Node, str]] = [(root, "")]
        while stack:
            node, where = stack.pop()
            if isinstance(node, yaml.SequenceNode):
                stack += [(v, f"{where}[{i}]") for i, v in enumerate(node.value)]
            if not isinstance(node, yaml.MappingNode):
                continue
            lines: dict[Any, list[int]] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(
                    ":merge"
                ):
                    continue
                key = self.construct_object(key_node)
                place = f"{where}.{key}" if where else str(key)
                stack.append((value_node, place))
                try:
                    lines.setdefault(key, []).append(key_node.start_mark.line + 1)
                except TypeError:  # unhashable: the constructor reports it
                    continue
            for key, found in lines.items():
                if len(found) > 1:
                    place = f"{where}.{key}" if where else str(key)
                    listed = ", ".join(str(n) for n in found)
                    problem = Problem(
                        "duplicate-key",
                        f"given {len(found)} times (lines {listed}); YAML would "
                        "keep only the last one silently: keep one",
                        place,
                    )
                    problems.append((found[0], problem))
        return [problem for _, problem in sorted(problems, key=lambda p: p[0])]


def _problem(path: Path, code: str, message: str, where: str = "") -> ConfigError:
    return ConfigError(path, [Problem(code, message, where)])


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    """Return the file's bytes, refusing one larger than ``max_bytes``."""
    too_large = (
        f"the file is larger than {max_bytes} bytes; a settings file is a few "
        "KiB, check that the right file is named"
    )
    try:
        if path.stat().st_size > max_bytes:
            raise _problem(path, "file-too-large", too_large)
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise _problem(path, "unreadable-file", f"cannot read the file: {exc}") from exc
    if len(data) > max_bytes:  # grew since, or a device without a size
        raise _problem(path, "file-too-large", too_large)
    return data


def read_yaml(
    path: Path, *, max_bytes: int = MAX_YAML_BYTES, max_depth: int = MAX_YAML_DEPTH
) -> Any:
    """Parse a settings YAML file, or raise ConfigError saying why it cannot be read.

    Parameters
    ----------
    path
        The file.
    max_bytes
        Larger files are refused before parsing (``file-too-large``).
    max_depth
        Deeper nesting of mappings and lists is refused (``too-deep``).

    Raises
    ------
    ConfigError
        Codes: ``unreadable-file``, ``file-too-large``, ``not-utf8``,
        ``invalid-yaml``, ``yaml-alias`` (anchors and aliases are refused),
        ``too-deep``, and ``duplicate-key`` (every key given twice, each with
        its lines).
    """
    data = _read_bounded(path, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _problem(
            path,
            "not-utf8",
            f"byte {exc.start} ({data[exc.start : exc.start + 1]!r}) is not UTF-8; "
            "save the file as UTF-8",
            f"line {line}",
        ) from exc
    loader = _ConfigLoader(text, max_depth)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        ConfigError.raise_if_any(path, loader.duplicate_keys(root))
        return loader.construct_document(root)
    except _RefusedError as exc:
        raise ConfigError(path, [exc.problem]) from exc
    except yaml.YAMLError as exc:
        raise _problem(path, "invalid-yaml", f"not valid YAML: {exc}") from exc
    except (ValueError, OverflowError, RecursionError) as exc:
        # A value YAML accepts but Python cannot build (2024-13-45, a
        # 5,000-digit integer).
        raise _problem(path, "invalid-yaml", f"not a usable value: {exc}") from exc
    finally:
        loader.dispose()
