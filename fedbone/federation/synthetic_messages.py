"""GAN and synthesis settings in and out of a message's ``config`` record.

The server sends a whole settings block as one JSON string (``gan-settings``,
``synthesis-settings``); the site rebuilds the typed dataclass. One key per
block keeps the config record small and the two ends in step: a field the site
does not know is an error naming the version mismatch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any, TypeVar

from flwr.app import ConfigRecord

from fedbone.config.synthetic import GanSettings, SynthesisSettings
from fedbone.errors import Problem
from fedbone.federation.study_messages import StudyMessageError, config_str

__all__ = [
    "GAN_SETTINGS",
    "SYNTHESIS_SETTINGS",
    "gan_settings_from",
    "settings_json",
    "synthesis_settings_from",
]

GAN_SETTINGS = "gan-settings"
SYNTHESIS_SETTINGS = "synthesis-settings"

_S = TypeVar("_S", GanSettings, SynthesisSettings)


def settings_json(settings: GanSettings | SynthesisSettings) -> str:
    """Serialise a settings block for a config record."""
    return json.dumps(asdict(settings), sort_keys=True)


def _settings_from(config: ConfigRecord, key: str, cls: type[_S]) -> _S:
    raw: dict[str, Any] = json.loads(config_str(config, key))
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise StudyMessageError(
            key,
            [
                Problem(
                    "unknown-setting",
                    f"{unknown} are not {cls.__name__} fields; check that the "
                    "server and the sites run the same fedbone version",
                    key,
                )
            ],
        )
    for name, value in raw.items():
        if isinstance(value, list):
            raw[name] = tuple(value)
    return cls(**raw)


def gan_settings_from(config: ConfigRecord) -> GanSettings:
    """Read the ``gan-settings`` block."""
    return _settings_from(config, GAN_SETTINGS, GanSettings)


def synthesis_settings_from(config: ConfigRecord) -> SynthesisSettings:
    """Read the ``synthesis-settings`` block."""
    return _settings_from(config, SYNTHESIS_SETTINGS, SynthesisSettings)
