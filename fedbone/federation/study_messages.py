"""Study settings, models and metrics in and out of Flower records.

The server puts the study's model and training settings into each message's
``config`` ConfigRecord (kebab-case keys) and the models into ``model-<name>``
ArrayRecords; these functions turn them back into fedbone's typed objects.
The generative sections (``gan``, ``synthesis``) travel as one checked block
each: the section's settings as JSON, read back into the same dataclass.
A site's FedBN normalisation layers live in its Flower ``context.state``, which
never leaves the site.

Flower types every record value as the union of everything a record may hold;
the typed readers (:func:`config_int`, :func:`metric_floats`...) check that a
value has the type the study protocol gives it, and raise
:class:`StudyMessageError` when it does not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, TypeVar

import numpy as np
from flwr.app import ConfigRecord, Context, MetricRecord, RecordDict

from fedbone.classifier.augment import AugmentSpec
from fedbone.classifier.folds import MAX_MEMBERS
from fedbone.classifier.local import TrainSpec
from fedbone.classifier.rounds import DpRoundSpec
from fedbone.classifier.sampling import Sampling
from fedbone.config.enhance import ENHANCE_SECTIONS, EnhanceSettings, read_enhance
from fedbone.config.privacy import DpPhaseSettings
from fedbone.config.reader import SettingsCollector
from fedbone.config.synthetic import GanSettings, SynthesisSettings
from fedbone.errors import Problem, ProblemsError
from fedbone.federation.kinds import MODEL_RECORD_PREFIX
from fedbone.federation.records import arrays_to_record, record_to_arrays
from fedbone.models import Architecture, ClassifierSpec, Norm
from fedbone.site.requests import FoldRequest
from fedbone.validation.histograms import ScoreHistograms
from fedbone.validation.private import DpStatisticsSpec

__all__ = [
    "ENHANCE_SETTINGS",
    "GAN_SETTINGS",
    "POOLED_RECORD_PREFIX",
    "SYNTHESIS_SETTINGS",
    "MetricValue",
    "StudyMessageError",
    "classifier_spec_from",
    "config_bool",
    "config_float",
    "config_floats",
    "config_int",
    "config_str",
    "config_strs",
    "dp_gan_from",
    "dp_round_from",
    "dp_statistics_from",
    "enhance_settings_from",
    "enhance_settings_json",
    "fold_from",
    "gan_settings_from",
    "local_state_from",
    "local_state_to",
    "metric_floats",
    "metric_ints",
    "metric_record",
    "models_from",
    "pairs_from",
    "pooled_histograms_from",
    "settings_json",
    "synthesis_settings_from",
    "train_spec_from",
]

POOLED_RECORD_PREFIX = "pooled-"
_LOCAL_STATE = "fedbn-local-state"
_CONFIG = "ConfigRecord"
_VERSION_HINT = "check that the server and the sites run the same fedbone version"

MetricValue = int | float | list[int] | list[float]
"""One value of a Flower MetricRecord."""


class StudyMessageError(ProblemsError):
    """A message whose records lack a study setting or hold one of the wrong type."""

    kind = "message"


def _wrong_type(
    subject: str, key: str, expected: str, value: object
) -> StudyMessageError:
    problem = Problem(
        "wrong-type",
        f"expected {expected}, got {value!r} ({type(value).__name__}); "
        + _VERSION_HINT,
        key,
    )
    return StudyMessageError(subject, [problem])


def _config_value(config: ConfigRecord, key: str, default: object) -> object:
    if key in config:
        return config[key]
    if default is None:
        problem = Problem(
            "missing-setting", f"the message carries no {key!r}; " + _VERSION_HINT, key
        )
        raise StudyMessageError(_CONFIG, [problem])
    return default


def config_int(config: ConfigRecord, key: str, default: int | None = None) -> int:
    """Return ``config[key]``, an integer (``default`` when absent).

    Parameters
    ----------
    config
        The request's ``config`` record.
    key
        The kebab-case setting, e.g. ``n-bootstrap``.
    default
        What an absent key means; ``None``: the key is required.

    Raises
    ------
    StudyMessageError
        When ``key`` is absent and there is no default, or holds no integer.
    """
    value = _config_value(config, key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(_CONFIG, key, "an integer", value)
    return value


def config_float(config: ConfigRecord, key: str, default: float | None = None) -> float:
    """Return ``config[key]``, a number, as a float (``default`` when absent).

    Parameters
    ----------
    config
        The request's ``config`` record.
    key
        The kebab-case setting, e.g. ``n-bootstrap``.
    default
        What an absent key means; ``None``: the key is required.

    Raises
    ------
    StudyMessageError
        When ``key`` is absent and there is no default, or holds no number.
    """
    value = _config_value(config, key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(_CONFIG, key, "a number", value)
    return float(value)


def config_str(config: ConfigRecord, key: str, default: str | None = None) -> str:
    """Return ``config[key]``, a string (``default`` when absent).

    Parameters
    ----------
    config
        The request's ``config`` record.
    key
        The kebab-case setting, e.g. ``n-bootstrap``.
    default
        What an absent key means; ``None``: the key is required.

    Raises
    ------
    StudyMessageError
        When ``key`` is absent and there is no default, or holds no string.
    """
    value = _config_value(config, key, default)
    if not isinstance(value, str):
        raise _wrong_type(_CONFIG, key, "a string", value)
    return value


def config_bool(config: ConfigRecord, key: str, default: bool | None = None) -> bool:
    """Return ``config[key]``, a boolean (``default`` when absent).

    Parameters
    ----------
    config
        The request's ``config`` record.
    key
        The kebab-case setting, e.g. ``n-bootstrap``.
    default
        What an absent key means; ``None``: the key is required.

    Raises
    ------
    StudyMessageError
        When ``key`` is absent and there is no default, or holds no boolean.
    """
    value = _config_value(config, key, default)
    if not isinstance(value, bool):
        raise _wrong_type(_CONFIG, key, "true or false", value)
    return value


def config_strs(
    config: ConfigRecord, key: str, default: list[str] | None = None
) -> list[str]:
    """Return ``config[key]``, a list of strings (``default`` when absent).

    Parameters
    ----------
    config
        The request's ``config`` record.
    key
        The kebab-case setting, e.g. ``n-bootstrap``.
    default
        What an absent key means; ``None``: the key is required.

    Raises
    ------
    StudyMessageError
        When ``key`` is absent and there is no default, or holds something
        other than a list of strings.
    """
    value = _config_value(config, key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _wrong_type(_CONFIG, key, "a list of strings", value)
    return [str(v) for v in value]


def config_floats(config: ConfigRecord, key: str) -> list[float]:
    """Return ``config[key]``, a list of finite numbers.

    Raises
    ------
    StudyMessageError
        When ``key`` is absent or holds anything else.
    """
    value = _config_value(config, key, None)
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in value
    ):
        raise _wrong_type(_CONFIG, key, "a list of finite numbers", value)
    return [float(v) for v in value]


def _metric_scalars(record: MetricRecord) -> dict[str, int | float]:
    scalars: dict[str, int | float] = {}
    for key, value in record.items():
        if isinstance(value, list):
            raise _wrong_type("MetricRecord", key, "a number, not a list", value)
        scalars[key] = value
    return scalars


def metric_floats(record: MetricRecord) -> dict[str, float]:
    """Return every value of ``record`` (all of them numbers) as a float.

    Raises
    ------
    StudyMessageError
        When a value is a list.
    """
    return {key: float(value) for key, value in _metric_scalars(record).items()}


def metric_ints(record: MetricRecord) -> dict[str, int]:
    """Return every value of ``record`` (all of them numbers) as an integer.

    Raises
    ------
    StudyMessageError
        When a value is a list.
    """
    return {key: int(value) for key, value in _metric_scalars(record).items()}


def metric_record(values: Mapping[str, MetricValue]) -> MetricRecord:
    """Return a MetricRecord holding ``values`` (any mapping of metric values)."""
    return MetricRecord(dict(values))


def classifier_spec_from(config: ConfigRecord) -> ClassifierSpec:
    """Return the classifier the study trains (no pretrained file: weights come in)."""
    return ClassifierSpec(
        architecture=Architecture(config_str(config, "architecture")),
        norm=Norm(config_str(config, "norm")),
        in_channels=config_int(config, "in-channels"),
    )


def train_spec_from(config: ConfigRecord) -> TrainSpec:
    """Return the local training settings for one round."""
    patience = config_int(config, "early-stopping-patience", 0)
    return TrainSpec(
        epochs=config_int(config, "local-epochs"),
        batch_size=config_int(config, "batch-size"),
        lr=config_float(config, "lr"),
        weight_decay=config_float(config, "weight-decay"),
        sampling=Sampling(config_str(config, "sampling")),
        augment=AugmentSpec(enabled=config_bool(config, "augment")),
        early_stopping_patience=patience or None,
        proximal_mu=config_float(config, "proximal-mu", 0.0),
        seed=config_int(config, "seed") + config_int(config, "server-round", 0),
    )


def models_from(content: RecordDict) -> dict[str, dict[str, np.ndarray]]:
    """Return every ``model-<name>`` ArrayRecord of a message, by name."""
    return {
        name.removeprefix(MODEL_RECORD_PREFIX): record_to_arrays(record)
        for name, record in content.array_records.items()
        if name.startswith(MODEL_RECORD_PREFIX)
    }


def pairs_from(config: ConfigRecord) -> list[tuple[str, str]]:
    """Return the model pairs to compare, sent as ``"a|b"`` strings.

    Raises
    ------
    StudyMessageError
        When ``pairs`` is not a list of ``"a|b"`` strings.
    """
    pairs = []
    for pair in config_strs(config, "pairs", []):
        first, bar, second = pair.partition("|")
        if not bar:
            raise _wrong_type(_CONFIG, "pairs", 'a list of "a|b" strings', pair)
        pairs.append((first, second))
    return pairs


def pooled_histograms_from(content: RecordDict) -> dict[str, ScoreHistograms]:
    """Return the server's pooled per-class histograms, by model name."""
    return {
        name.removeprefix(POOLED_RECORD_PREFIX): ScoreHistograms.from_dict(dict(record))
        for name, record in content.metric_records.items()
        if name.startswith(POOLED_RECORD_PREFIX)
    }


def local_state_from(context: Context) -> dict[str, np.ndarray] | None:
    """Return the site's own normalisation layers kept from earlier FedBN rounds."""
    if _LOCAL_STATE not in context.state.array_records:
        return None
    return record_to_arrays(context.state.array_records[_LOCAL_STATE])


def local_state_to(context: Context, arrays: dict[str, np.ndarray] | None) -> None:
    """Keep (or, with ``None``, leave unchanged) the site's FedBN layers."""
    if arrays is not None:
        context.state[_LOCAL_STATE] = arrays_to_record(arrays)


def fold_from(config: ConfigRecord) -> FoldRequest | None:
    """Return the cross-validation fold a classifier round holds out, if any.

    ``cv-folds`` of 2 to :data:`~fedbone.classifier.folds.MAX_MEMBERS` (more
    is refused: a site scores nothing for an unbounded ensemble); the site
    checks ``cv-fold`` and its own small-cell rule when it builds the fold.
    """
    folds = config_int(config, "cv-folds", 0)
    if folds == 0:
        return None
    if not 2 <= folds <= MAX_MEMBERS:
        raise StudyMessageError(
            "cv-folds",
            [
                Problem(
                    "bad-folds",
                    f"{folds} folds; ask for 2 to {MAX_MEMBERS}",
                    "cv-folds",
                )
            ],
        )
    return FoldRequest(
        fold=config_int(config, "cv-fold"),
        folds=folds,
        seed=config_int(config, "seed", 0),
    )


def dp_round_from(config: ConfigRecord) -> DpRoundSpec | None:
    """Return the study's DP-SGD request for classifier training, if any."""
    noise = config_float(config, "dp-noise-multiplier", 0.0)
    target = config_float(config, "dp-target-epsilon", 0.0)
    if noise <= 0 and target <= 0:
        return None
    return DpRoundSpec(
        noise_multiplier=noise if noise > 0 else None,
        target_epsilon=target if target > 0 else None,
        max_grad_norm=config_float(config, "dp-max-grad-norm", 1.0),
        clipping=config_str(config, "dp-clipping"),
        rounds=config_int(config, "rounds", 1),
        train_layers=_train_layers(config),
    )


def _train_layers(config: ConfigRecord) -> str:
    layers = config_str(config, "dp-train-layers", "all")
    if layers not in ("all", "head"):
        raise StudyMessageError(
            "dp-train-layers",
            [
                Problem(
                    "bad-train-layers",
                    f"{layers[:40]!r}; ask for all or head",
                    "dp-train-layers",
                )
            ],
        )
    return layers


def dp_statistics_from(config: ConfigRecord) -> DpStatisticsSpec | None:
    """Return the study's noisy-statistics request for validation, if any."""
    epsilon = config_float(config, "dp-stat-epsilon", 0.0)
    if epsilon <= 0:
        return None
    return DpStatisticsSpec(
        epsilon=epsilon,
        bins=config_int(config, "dp-stat-bins", 20),
        max_scans_per_patient=config_int(config, "dp-stat-max-scans", 1),
    )


def dp_gan_from(config: ConfigRecord) -> DpPhaseSettings | None:
    """Return the study's DP-SGD request for the GAN discriminator, if any."""
    noise = config_float(config, "dp-gan-noise-multiplier", 0.0)
    target = config_float(config, "dp-gan-target-epsilon", 0.0)
    if noise <= 0 and target <= 0:
        return None
    return DpPhaseSettings(
        noise_multiplier=noise if noise > 0 else None,
        target_epsilon=target if target > 0 else None,
        max_grad_norm=config_float(config, "dp-gan-max-grad-norm", 1.0),
    )


# Generative settings travel as one checked block each: the section as JSON.
GAN_SETTINGS = "gan-settings"
ENHANCE_SETTINGS = "enhance-settings"
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


def enhance_settings_json(settings: EnhanceSettings) -> str:
    """Serialise the ``enhance`` block for a config record."""
    return json.dumps(asdict(settings), sort_keys=True)


def enhance_settings_from(config: ConfigRecord) -> EnhanceSettings:
    """Read the ``enhance-settings`` block, checked against the study's bounds.

    The site validates it as if it were its own YAML: a centre cannot ask for
    a million-step round or an unknown method through this record.

    Raises
    ------
    StudyMessageError
        Listing every setting out of bounds or unknown.
    """
    try:
        raw = json.loads(config_str(config, ENHANCE_SETTINGS))
    except json.JSONDecodeError as error:
        raise StudyMessageError(
            ENHANCE_SETTINGS,
            [Problem("not-json", f"not JSON: {error}", ENHANCE_SETTINGS)],
        ) from error
    if not isinstance(raw, dict):
        raise StudyMessageError(
            ENHANCE_SETTINGS,
            [Problem("not-a-mapping", "expected a JSON object", ENHANCE_SETTINGS)],
        )
    collector = SettingsCollector({"": {"enhance"}, **ENHANCE_SECTIONS})
    settings = read_enhance(collector, {"enhance": raw})
    if collector.problems:
        raise StudyMessageError(ENHANCE_SETTINGS, list(collector.problems))
    return settings
