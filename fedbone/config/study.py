"""Typed, validated study configuration (the coordinating centre's YAML).

The study YAML says what the federation does: the task, the phases, the model,
the federated strategy, the baselines and how validation is summarised. Where
the sites are and what they let out is each site's business (``site.yaml``).
For simulation, a ``simulation`` block describes the phantom federation.
Every problem is reported at once; unknown keys are errors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedbone.config.enhance import ENHANCE_SECTIONS, EnhanceSettings, read_enhance
from fedbone.config.outcomes import OutcomeSettings, read_outcomes
from fedbone.config.privacy import DP_SECTIONS, DpSettings, read_dp
from fedbone.config.reader import (
    SettingsCollector,
    choice,
    flag,
    number,
    one_of,
    optional_number,
    optional_whole,
    read_yaml,
    require_mapping,
    setting_keys,
    subset,
    whole,
)
from fedbone.config.synthetic import (
    SYNTHETIC_SECTIONS,
    GanSettings,
    SynthesisSettings,
    SyntheticTrainingSettings,
    read_gan,
    read_synthesis,
    read_synthetic_training,
)
from fedbone.errors import ConfigError
from fedbone.safe_names import is_safe_name

__all__ = [
    "PHASES",
    "CrossValidationSettings",
    "ModelSettings",
    "SimulationSettings",
    "StrategyName",
    "StudyConfig",
    "TrainingSettings",
    "ValidationSettings",
    "load_study_config",
    "study_config_from_mapping",
]

#: Phases this version runs, in the only order they may appear.
PHASES = (
    "census",
    "gan",
    "synthesize",
    "train",
    "enhance",
    "validate",
    "outcomes",
    "report",
)
#: Phases a study runs when its YAML names none: the classifier study.
DEFAULT_PHASES = ("census", "train", "validate", "report")
TASKS = ("bm", "ca")
BASELINES = ("local", "pooled")
ARCHITECTURES = (
    "densenet121",
    "resnet18",
    "resnet50",
    "efficientnet-b0",
    "small-cnn",
    "small-cnn-narrow",
    "vgg16",
    "vgg-small",
    "fusion-shared",
    "fusion-separate",
)
NORMS = ("batch", "group", "instance")
SAMPLINGS = ("oversample", "balanced", "none")
PHANTOM_SITES = ("A", "B", "C", "D", "E", "F")
DAY_S = 86400.0


class StrategyName(StrEnum):
    """Federated strategies a study can select."""

    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"
    FEDMEDIAN = "fedmedian"
    KRUM = "krum"
    FEDBN = "fedbn"


@dataclass(frozen=True)
class ModelSettings:
    """The classifier every site trains."""

    architecture: str = one_of("densenet121", ARCHITECTURES)
    norm: str = one_of("batch", NORMS)
    in_channels: int = whole(1, 1, 2)
    pretrained_weights: str | None = None
    pretrained_sha256: str | None = None
    pretrain_phantom_epochs: int = whole(0, 0, 1000)
    """Epochs the centre pretrains the classifier on a phantom cohort of its own
    before federated training (0: no pretraining). Costs no site's budget."""


@dataclass(frozen=True)
class TrainingSettings:
    """Federated training: strategy, rounds and the sites' local training."""

    strategy: StrategyName = choice(StrategyName.FEDAVG)  # noqa: RUF009 (a field)
    rounds: int = whole(10, 1, 10_000)
    local_epochs: int = whole(1, 1, 1000)
    batch_size: int = whole(16, 1, 4096)
    lr: float = number(1e-3, 1e-7, 10.0)
    weight_decay: float = number(1e-4, 0.0, 1.0)
    proximal_mu: float = number(0.01, 0.0, 100.0)
    server_lr: float = number(0.01, 1e-6, 10.0)
    sampling: str = one_of("oversample", SAMPLINGS)
    augment: bool = flag(True)
    early_stopping_patience: int | None = optional_whole(None, 1, 1000)
    min_train_sites: int = whole(1, 1, 10_000)
    krum_byzantine: int = whole(0, 0, 100)
    round_timeout_s: float = number(3600.0, 1.0, 7 * DAY_S)
    """How long a round waits for sites' replies; late or dead sites are left
    out of that round (the strategy needs ``min_train_sites`` replies)."""
    census_timeout_s: float = number(300.0, 1.0, 7 * DAY_S)
    """How long the census waits for the expected sites to connect."""
    secure_aggregation: bool = flag(False)
    """The centre learns only the sum of the sites' weighted updates (pairwise
    masking with Shamir-shared seeds, ``docs/secure-aggregation.md``); needs
    ``strategy: fedavg``."""
    secure_aggregation_clip: float = number(100.0, 1e-6, 1e6)
    """Under secure aggregation, the largest magnitude of one element of a
    site's update (trained minus received); larger changes are clipped."""
    secure_aggregation_scale_bits: int = whole(24, 8, 40)
    """Fractional bits of secure aggregation's fixed-point encoding."""


@dataclass(frozen=True)
class CrossValidationSettings:
    """Haberl et al.'s cross-validated ensemble, trained in phase ``train``.

    ``folds`` federated models (``cv-1`` .. ``cv-k``), model ``j`` trained on
    every site's development data but fold ``j`` (by patient, stratified) and
    stopped on the sites' held-out folds; validated as one model,
    ``cv-ensemble`` (majority vote; mean probability for the ROC).
    ``folds: 0`` trains no ensemble.
    """

    folds: int = whole(0, 0, 20)
    early_stopping_rounds: int = whole(3, 1, 1000)
    """Rounds without a lower held-out loss before a fold model stops."""


@dataclass(frozen=True)
class ValidationSettings:
    """Shared external validation at the end of the study."""

    split: str = one_of("test", ("test", "val"))
    bins: int = whole(2000, 1000, 1_000_000)
    n_bootstrap: int = whole(1000, 0, 100_000)
    threshold: float = number(0.5, 0.0, 1.0)


@dataclass(frozen=True)
class SimulationSettings:
    """A phantom federation for simulation (absent in deployment)."""

    sites_dir: Path = Path("runs/phantom-sites")
    sites: tuple[str, ...] = subset(PHANTOM_SITES, PHANTOM_SITES)
    scale: float = number(0.02, 1e-5, 10.0)
    min_scans: int = whole(40, 4, 1_000_000)
    profile: str = one_of("cpu", ("cpu", "paper"))
    views: str = one_of("anterior", ("anterior", "posterior", "both"))
    """The views the phantom sites put on their canvas (``both``: side by
    side, for the two-view and fusion classifiers)."""
    workers: int = whole(2, 1, 64)
    seed: int = whole(0, 0, 2**31)
    cpus_per_site: float = number(1.0, 0.1, 64)
    site_epsilon: float | None = optional_number(None, 1e-3, 1e3)
    """Privacy budget (total ε) written into every phantom site's config."""
    outcome_sites: tuple[str, ...] | None = None
    """Phantom sites whose patients have follow-up; ``None``: the profiles' (D)."""
    fast_speeds: tuple[int, ...] = ()
    """Speeds (2, 3...) of the real fast acquisitions each phantom patient also
    gets (phase enhance); none by default."""


@dataclass(frozen=True)
class StudyConfig:
    """A whole study, as the coordinating centre configured it.

    ``task``, ``seed``, ``phases`` and ``baselines`` are read from the YAML's
    ``study`` section, the other settings from sections of their own.
    """

    name: str
    task: str = one_of("bm", TASKS)
    seed: int = whole(0, 0, 2**31)
    phases: tuple[str, ...] = subset(DEFAULT_PHASES, PHASES)
    baselines: tuple[str, ...] = subset((), BASELINES)
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    cross_validation: CrossValidationSettings = field(
        default_factory=CrossValidationSettings
    )
    gan: GanSettings = field(default_factory=GanSettings)
    synthesis: SynthesisSettings = field(default_factory=SynthesisSettings)
    synthetic_training: SyntheticTrainingSettings = field(
        default_factory=SyntheticTrainingSettings
    )
    dp: DpSettings = field(default_factory=DpSettings)
    outcomes: OutcomeSettings = field(default_factory=OutcomeSettings)
    enhance: EnhanceSettings = field(default_factory=EnhanceSettings)
    simulation: SimulationSettings | None = None
    runs_dir: Path = Path("runs")
    source: Path | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the resolved configuration as JSON-ready data."""
        data = asdict(self)
        data.pop("source")
        return json.loads(json.dumps(data, default=str))

    def sha256(self) -> str:
        """Hash of the resolved configuration (sent to sites, kept in results)."""
        payload = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def file_sha256(self) -> str:
        """Return the sha256 of the YAML this came from ("" if none)."""
        if self.source is None or not Path(self.source).is_file():
            return ""
        return hashlib.sha256(Path(self.source).read_bytes()).hexdigest()

    def approval_json(self) -> dict[str, Any]:
        """Return what a site is asked to approve: the study less machine paths.

        The resolved configuration without where the machine that loaded it
        keeps files (``output.runs_dir``, the ``simulation`` block, the path
        of ``model.pretrained_weights``, whose ``pretrained_sha256`` stays),
        so the centre and every site get the same content from one YAML.
        """
        data = self.to_json()
        for key in _NOT_APPROVED:
            data.pop(key, None)
        for section, key in _MACHINE_PATHS:
            data[section].pop(key, None)
        return data

    def approval_sha256(self) -> str:
        """Hash of :meth:`approval_json`: the study a site approves.

        Sent in every message (``study-approval-sha256``); the same on every
        machine that loads the same study YAML, wherever it lives.
        """
        payload = json.dumps(self.approval_json(), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


#: Top-level settings a site does not approve: the centre's own machine.
_NOT_APPROVED = ("runs_dir", "simulation")
#: Paths on the machine that loaded the study (their content is pinned by hash).
_MACHINE_PATHS = (("model", "pretrained_weights"), ("gan", "encoder_path"))


_STUDY_KEYS = {
    "": {
        "study",
        "model",
        "training",
        "validation",
        "cross_validation",
        "simulation",
        "output",
    }
    | set(SYNTHETIC_SECTIONS)
    | {"dp", "outcomes"}
    | set(ENHANCE_SECTIONS),
    **SYNTHETIC_SECTIONS,
    **ENHANCE_SECTIONS,
    **DP_SECTIONS,
    "study": {"name", "task", "seed", "phases", "baselines"},
    "model": setting_keys(ModelSettings),
    "training": setting_keys(TrainingSettings),
    "validation": setting_keys(ValidationSettings),
    "cross_validation": setting_keys(CrossValidationSettings),
    "simulation": setting_keys(SimulationSettings),
    "output": {"runs_dir"},
    "outcomes": setting_keys(OutcomeSettings),
}


def _read_model(c: SettingsCollector, raw: Mapping[str, Any]) -> ModelSettings:
    m = c.section(raw, "model")
    weights = m.get("pretrained_weights")
    sha = m.get("pretrained_sha256")
    if bool(weights) != bool(sha):
        c.add(
            "missing-key",
            "model.pretrained_sha256",
            "pretrained weights need both a local file and its sha256",
        )
    if weights and m.get("pretrain_phantom_epochs"):
        c.add(
            "invalid-value",
            "model.pretrain_phantom_epochs",
            "choose one start: pretrained_weights or phantom pretraining",
        )
    return c.settings(
        m,
        "model",
        ModelSettings,
        pretrained_weights=str(weights) if weights else None,
        pretrained_sha256=str(sha) if sha else None,
    )


def _read_simulation(
    c: SettingsCollector, raw: Mapping[str, Any], base_dir: Path
) -> SimulationSettings | None:
    if raw.get("simulation") is None:
        return None
    s = c.section(raw, "simulation")
    sites_dir = Path(str(s.get("sites_dir", SimulationSettings.sites_dir)))
    settings = c.settings(
        s,
        "simulation",
        SimulationSettings,
        sites_dir=sites_dir if sites_dir.is_absolute() else base_dir / sites_dir,
    )
    speeds = s.get("fast_speeds", ())
    if not isinstance(speeds, list | tuple) or not all(
        isinstance(k, int) and not isinstance(k, bool) and 2 <= k <= 10 for k in speeds
    ):
        c.add(
            "invalid-value",
            "simulation.fast_speeds",
            "list whole speeds from 2 to 10, e.g. [2, 3]",
        )
    else:
        settings = replace(settings, fast_speeds=tuple(sorted(set(speeds))))
    if s.get("outcome_sites") is None:
        return settings
    # only sites of the simulated federation can have follow-up
    outcome_sites = c.subset(s, "simulation.outcome_sites", settings.sites, ())
    return replace(settings, outcome_sites=outcome_sites)


def _read_cross_validation(
    c: SettingsCollector, raw: Mapping[str, Any]
) -> CrossValidationSettings:
    settings = c.settings(
        c.section(raw, "cross_validation"),
        "cross_validation",
        CrossValidationSettings,
    )
    if settings.folds == 1:
        c.add(
            "invalid-value",
            "cross_validation.folds",
            "one fold leaves nothing to train on; use 0 (no ensemble) or 2-20",
        )
    return settings


def _check_phases(c: SettingsCollector, phases: tuple[str, ...]) -> None:
    if list(phases) != [p for p in PHASES if p in phases]:
        c.add(
            "invalid-value",
            "study.phases",
            f"phases must keep the order {', '.join(PHASES)}",
        )
    if "outcomes" in phases and "train" not in phases:
        c.add(
            "invalid-value",
            "study.phases",
            "phase outcomes groups patients by a model the study trains; add train",
        )
    if "enhance" in phases and "train" not in phases:
        c.add(
            "invalid-value",
            "study.phases",
            "phase enhance scores standard, fast and enhanced scans with the "
            "classifier the study trains; add train",
        )


#: Under secure aggregation, sites x largest weight a study must be able to sum
#: (one million: e.g. 100 sites of 10,000 scans).
SECURE_AGGREGATION_HEADROOM = 2**20


def _check_secure_aggregation(c: SettingsCollector, t: TrainingSettings) -> None:
    if not t.secure_aggregation:
        return
    if t.strategy is not StrategyName.FEDAVG:
        c.add(
            "invalid-value",
            "training.strategy",
            "secure aggregation shows the centre only the sum of the updates, "
            "which only fedavg aggregates (median and Krum need every update); "
            "use strategy: fedavg, or secure_aggregation: false",
        )
    # the fixed-point sum must not wrap: sites x weight x clip x 2^bits < 2^63
    largest = t.secure_aggregation_clip * 2.0**t.secure_aggregation_scale_bits
    if largest * SECURE_AGGREGATION_HEADROOM >= 2.0**63:
        c.add(
            "invalid-value",
            "training.secure_aggregation_clip",
            f"clip {t.secure_aggregation_clip:g} at "
            f"{t.secure_aggregation_scale_bits} scale bits leaves room for fewer "
            f"than {SECURE_AGGREGATION_HEADROOM} site examples in a 63-bit sum; "
            "lower the clip or secure_aggregation_scale_bits",
        )


def study_config_from_mapping(
    raw: Any, *, base_dir: Path, source: Path | None = None
) -> StudyConfig:
    """Validate a parsed study YAML and build the typed config.

    Parameters
    ----------
    raw
        The parsed YAML document.
    base_dir
        Folder that relative paths are resolved against (the project root for
        the shipped configs, i.e. the YAML's parent's parent when it lives in
        ``configs/``; callers decide).
    source
        The file it came from, for messages.

    Raises
    ------
    ConfigError
        Listing every problem found.
    """
    subject = str(source) if source else "study config"
    raw = require_mapping(raw, subject)
    c = SettingsCollector(_STUDY_KEYS)
    c.unknown_keys(raw, "")
    study = c.section(raw, "study")
    name = str(study.get("name", "")).strip()
    if not name:
        c.add("missing-key", "study.name", "give the study a name, e.g. 'bm-fedavg'")
    elif not is_safe_name(name) or len(name) > 100:
        # the run is named <name>-<timestamp>; sites use it as a folder name
        c.add(
            "invalid-value",
            "study.name",
            "use 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (sites keep the run's state in a folder of that name)",
        )
    model = _read_model(c, raw)
    runs_dir = Path(str(c.section(raw, "output").get("runs_dir", StudyConfig.runs_dir)))
    config = c.settings(
        study,
        "study",
        StudyConfig,
        name=name,
        model=model,
        training=c.settings(c.section(raw, "training"), "training", TrainingSettings),
        validation=c.settings(
            c.section(raw, "validation"), "validation", ValidationSettings
        ),
        cross_validation=_read_cross_validation(c, raw),
        gan=read_gan(c, raw),
        synthesis=read_synthesis(c, raw),
        synthetic_training=read_synthetic_training(c, raw),
        dp=read_dp(c, raw, model.norm),
        outcomes=read_outcomes(c, raw),
        enhance=read_enhance(c, raw),
        simulation=_read_simulation(c, raw, base_dir),
        runs_dir=runs_dir if runs_dir.is_absolute() else base_dir / runs_dir,
        source=source,
    )
    _check_phases(c, config.phases)
    _check_secure_aggregation(c, config.training)
    if config.outcomes.model == "cv-ensemble":
        c.add(
            "invalid-value",
            "outcomes.model",
            "outcomes groups patients by one model's calls; the ensemble's "
            "vote is not available there yet: use federated",
        )
    ConfigError.raise_if_any(subject, c.problems)
    return config


def load_study_config(path: str | Path, *, base_dir: Path | None = None) -> StudyConfig:
    """Load and validate a study YAML; relative paths resolve against ``base_dir``.

    ``base_dir`` defaults to the current working directory, so
    ``fedbone simulate configs/simulation.yaml`` run from the project root puts
    runs and phantom sites under the project's ``runs/``.

    Raises
    ------
    ConfigError
        If the file is missing, is not YAML, or has any invalid setting.
    """
    path = Path(path)
    return study_config_from_mapping(
        read_yaml(path), base_dir=(base_dir or Path.cwd()).resolve(), source=path
    )
