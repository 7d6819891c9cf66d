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
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedbone.config.outcomes import OUTCOME_KEYS, OutcomeSettings, read_outcomes
from fedbone.config.privacy import DP_SECTIONS, DpSettings, read_dp
from fedbone.config.reader import StudyCollector
from fedbone.config.site import read_yaml, require_mapping
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

__all__ = [
    "PHASES",
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
PHASES = ("census", "gan", "synthesize", "train", "validate", "outcomes", "report")
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
)
NORMS = ("batch", "group", "instance")
SAMPLINGS = ("oversample", "balanced", "none")


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

    architecture: str = "densenet121"
    norm: str = "batch"
    in_channels: int = 1
    pretrained_weights: str | None = None
    pretrained_sha256: str | None = None


@dataclass(frozen=True)
class TrainingSettings:
    """Federated training: strategy, rounds and the sites' local training."""

    strategy: StrategyName = StrategyName.FEDAVG
    rounds: int = 10
    local_epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    proximal_mu: float = 0.01
    server_lr: float = 0.01
    sampling: str = "oversample"
    augment: bool = True
    early_stopping_patience: int | None = None
    min_train_sites: int = 1
    krum_byzantine: int = 0
    round_timeout_s: float = 3600.0
    census_timeout_s: float = 300.0
    """How long the census waits for the expected sites to connect."""
    """How long a round waits for sites' replies; late or dead sites are left
    out of that round (the strategy needs ``min_train_sites`` replies)."""


@dataclass(frozen=True)
class ValidationSettings:
    """Shared external validation at the end of the study."""

    split: str = "test"
    bins: int = 2000
    n_bootstrap: int = 1000
    threshold: float = 0.5


@dataclass(frozen=True)
class SimulationSettings:
    """A phantom federation for simulation (absent in deployment)."""

    sites_dir: Path = Path("runs/phantom-sites")
    sites: tuple[str, ...] = ("A", "B", "C", "D", "E", "F")
    scale: float = 0.02
    min_scans: int = 40
    profile: str = "cpu"
    workers: int = 2
    seed: int = 0
    cpus_per_site: float = 1.0
    site_epsilon: float | None = None
    """Privacy budget (total ε) written into every phantom site's config."""
    outcome_sites: tuple[str, ...] | None = None
    """Phantom sites whose patients have follow-up; ``None``: the profiles' (D)."""


@dataclass(frozen=True)
class StudyConfig:
    """A whole study, as the coordinating centre configured it."""

    name: str
    task: str = "bm"
    seed: int = 0
    phases: tuple[str, ...] = DEFAULT_PHASES
    baselines: tuple[str, ...] = ()
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    gan: GanSettings = field(default_factory=GanSettings)
    synthesis: SynthesisSettings = field(default_factory=SynthesisSettings)
    synthetic_training: SyntheticTrainingSettings = field(
        default_factory=SyntheticTrainingSettings
    )
    dp: DpSettings = field(default_factory=DpSettings)
    outcomes: OutcomeSettings = field(default_factory=OutcomeSettings)
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


_STUDY_KEYS = {
    "": {"study", "model", "training", "validation", "simulation", "output"}
    | set(SYNTHETIC_SECTIONS)
    | {"dp", "outcomes"},
    **SYNTHETIC_SECTIONS,
    **DP_SECTIONS,
    "study": {"name", "task", "seed", "phases", "baselines"},
    "model": {
        "architecture",
        "norm",
        "in_channels",
        "pretrained_weights",
        "pretrained_sha256",
    },
    "training": {f for f in TrainingSettings.__dataclass_fields__},
    "validation": {f for f in ValidationSettings.__dataclass_fields__},
    "simulation": {f for f in SimulationSettings.__dataclass_fields__},
    "output": {"runs_dir"},
    "outcomes": OUTCOME_KEYS,
}


def _read_model(c: StudyCollector, raw: Mapping[str, Any]) -> ModelSettings:
    m = c.section(raw, "model")
    d = ModelSettings()
    weights = m.get("pretrained_weights")
    sha = m.get("pretrained_sha256")
    if bool(weights) != bool(sha):
        c.add(
            "missing-key",
            "model.pretrained_sha256",
            "pretrained weights need both a local file and its sha256",
        )
    return ModelSettings(
        architecture=c.one_of(
            m, "architecture", "model.architecture", ARCHITECTURES, d.architecture
        ),
        norm=c.one_of(m, "norm", "model.norm", NORMS, d.norm),
        in_channels=c.integer(m, "in_channels", "model.in_channels", 1, 1, 2),
        pretrained_weights=str(weights) if weights else None,
        pretrained_sha256=str(sha) if sha else None,
    )


def _read_training(c: StudyCollector, raw: Mapping[str, Any]) -> TrainingSettings:
    t = c.section(raw, "training")
    d = TrainingSettings()
    patience = t.get("early_stopping_patience")
    if patience is not None:
        patience = c.integer(
            t, "early_stopping_patience", "training.early_stopping_patience", 3, 1, 1000
        )
    augment = t.get("augment", d.augment)
    if not isinstance(augment, bool):
        c.add("wrong-type", "training.augment", "expected true or false")
        augment = d.augment
    return TrainingSettings(
        strategy=c.choice(t, "strategy", "training.strategy", StrategyName, d.strategy),
        rounds=c.integer(t, "rounds", "training.rounds", d.rounds, 1, 10_000),
        local_epochs=c.integer(
            t, "local_epochs", "training.local_epochs", d.local_epochs, 1, 1000
        ),
        batch_size=c.integer(
            t, "batch_size", "training.batch_size", d.batch_size, 1, 4096
        ),
        lr=c.number(t, "lr", "training.lr", d.lr, 1e-7, 10.0),
        weight_decay=c.number(
            t, "weight_decay", "training.weight_decay", d.weight_decay, 0.0, 1.0
        ),
        proximal_mu=c.number(
            t, "proximal_mu", "training.proximal_mu", d.proximal_mu, 0.0, 100.0
        ),
        server_lr=c.number(
            t, "server_lr", "training.server_lr", d.server_lr, 1e-6, 10.0
        ),
        sampling=c.one_of(t, "sampling", "training.sampling", SAMPLINGS, d.sampling),
        augment=augment,
        early_stopping_patience=patience,
        min_train_sites=c.integer(
            t,
            "min_train_sites",
            "training.min_train_sites",
            d.min_train_sites,
            1,
            10_000,
        ),
        krum_byzantine=c.integer(
            t, "krum_byzantine", "training.krum_byzantine", d.krum_byzantine, 0, 100
        ),
        census_timeout_s=c.number(
            t,
            "census_timeout_s",
            "training.census_timeout_s",
            d.census_timeout_s,
            1.0,
            7 * 86400.0,
        ),
        round_timeout_s=c.number(
            t,
            "round_timeout_s",
            "training.round_timeout_s",
            d.round_timeout_s,
            1.0,
            7 * 86400.0,
        ),
    )


def _read_validation(c: StudyCollector, raw: Mapping[str, Any]) -> ValidationSettings:
    v = c.section(raw, "validation")
    d = ValidationSettings()
    return ValidationSettings(
        split=c.one_of(v, "split", "validation.split", ("test", "val"), d.split),
        bins=c.integer(v, "bins", "validation.bins", d.bins, 1000, 1_000_000),
        n_bootstrap=c.integer(
            v, "n_bootstrap", "validation.n_bootstrap", d.n_bootstrap, 0, 100_000
        ),
        threshold=c.number(
            v, "threshold", "validation.threshold", d.threshold, 0.0, 1.0
        ),
    )


def _read_simulation(
    c: StudyCollector, raw: Mapping[str, Any], base_dir: Path
) -> SimulationSettings | None:
    if raw.get("simulation") is None:
        return None
    s = c.section(raw, "simulation")
    d = SimulationSettings()
    sites = c.subset(
        s, "sites", "simulation.sites", ("A", "B", "C", "D", "E", "F"), d.sites
    )
    sites_dir = Path(str(s.get("sites_dir", d.sites_dir)))
    site_epsilon = None
    if s.get("site_epsilon") is not None:
        site_epsilon = c.number(
            s, "site_epsilon", "simulation.site_epsilon", 8.0, 1e-3, 1e3
        )
    outcome_sites = None
    if s.get("outcome_sites") is not None:
        outcome_sites = c.subset(
            s, "outcome_sites", "simulation.outcome_sites", sites, ()
        )
    return SimulationSettings(
        sites_dir=sites_dir if sites_dir.is_absolute() else base_dir / sites_dir,
        sites=sites,
        scale=c.number(s, "scale", "simulation.scale", d.scale, 1e-5, 10.0),
        min_scans=c.integer(
            s, "min_scans", "simulation.min_scans", d.min_scans, 4, 1_000_000
        ),
        profile=c.one_of(
            s, "profile", "simulation.profile", ("cpu", "paper"), d.profile
        ),
        workers=c.integer(s, "workers", "simulation.workers", d.workers, 1, 64),
        seed=c.integer(s, "seed", "simulation.seed", d.seed, 0, 2**31),
        cpus_per_site=c.number(
            s, "cpus_per_site", "simulation.cpus_per_site", d.cpus_per_site, 0.1, 64
        ),
        site_epsilon=site_epsilon,
        outcome_sites=outcome_sites,
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
    c = StudyCollector(_STUDY_KEYS)
    c.unknown_keys(raw, "")
    study = c.section(raw, "study")
    name = str(study.get("name", "")).strip()
    if not name:
        c.add("missing-key", "study.name", "give the study a name, e.g. 'bm-fedavg'")
    phases = c.subset(study, "phases", "study.phases", PHASES, DEFAULT_PHASES)
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
    output = c.section(raw, "output")
    runs_dir = Path(str(output.get("runs_dir", "runs")))
    model = _read_model(c, raw)
    config = StudyConfig(
        name=name,
        task=c.one_of(study, "task", "study.task", TASKS, "bm"),
        seed=c.integer(study, "seed", "study.seed", 0, 0, 2**31),
        phases=phases,
        baselines=c.subset(study, "baselines", "study.baselines", BASELINES, ()),
        model=model,
        training=_read_training(c, raw),
        validation=_read_validation(c, raw),
        gan=read_gan(c, raw),
        synthesis=read_synthesis(c, raw),
        synthetic_training=read_synthetic_training(c, raw),
        dp=read_dp(c, raw, model.norm),
        outcomes=read_outcomes(c, raw),
        simulation=_read_simulation(c, raw, base_dir),
        runs_dir=runs_dir if runs_dir.is_absolute() else base_dir / runs_dir,
        source=source,
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
