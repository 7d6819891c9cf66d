"""Typed, validated site configuration, loaded once from YAML.

A site YAML describes one hospital's installation: who it is, where its data
and cache live, and how scans are put on the canvas. Everything is checked up
front and *every* problem is reported in one :class:`~fedbone.errors.ConfigError`
(unknown keys too: a typo must not silently fall back to a default).

Example (``configs/site.example.yaml`` documents every key)::

    site:
      id: vienna
      role: train                 # train | validate-only
    data:
      manifest: manifest.csv      # relative paths are relative to this file
      cache_dir: cache
      default_view: null          # anterior | posterior | null
      workers: 2
    preprocessing:
      spacing_mm: 2.0
      canvas: [1024, 256]         # height, width of one view
      views: anterior             # anterior | posterior | both
      clip_percentile: 99.5
    privacy:
      small_cell_threshold: 5     # counts 1..4 never leave the site
      audit:                      # release rule for this site's synthetic images
        real_quantile: 0.01       # block if nearer a training scan than 1% of
                                  # different-patient pairs are to each other
        ms_ssim_ceiling: 0.95     # block if MS-SSIM to a close scan exceeds this
        top_k: 5
        feature_space: true       # also the shift-robust feature distance
        shift_px: 4
      budget:                     # differential privacy (absent: no DP budget)
        epsilon: 8.0              # total epsilon this site ever releases
        delta: null               # null: 1 / (10 * training scans)
      ledger: privacy-ledger.jsonl  # hash-chained record of every DP release
    egress_log: egress-log.jsonl  # every outgoing message, appended
    work_dir: work                # site-local state: GANs, checkpoints, pools
    device: auto                  # auto | cpu | cuda
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fedbone.data.scan import View
from fedbone.data.spec import PreprocessSpec, ViewMode
from fedbone.errors import ConfigError, Problem

__all__ = [
    "AuditSettings",
    "DataSettings",
    "Device",
    "PrivacySettings",
    "SettingsCollector",
    "SiteConfig",
    "SiteRole",
    "load_site_config",
    "read_yaml",
    "require_mapping",
    "site_config_from_mapping",
    "site_config_to_mapping",
    "write_site_config",
]

_E = TypeVar("_E", bound=StrEnum)
_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SiteRole(StrEnum):
    """What a site does in a study."""

    TRAIN = "train"
    VALIDATE_ONLY = "validate-only"


class Device(StrEnum):
    """Where a site computes: ``auto`` takes CUDA when present."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class DataSettings:
    """Where a site's data and cache live."""

    manifest: Path
    cache_dir: Path
    default_view: View | None = None
    workers: int = 1


@dataclass(frozen=True)
class AuditSettings:
    """The site's release rule for synthetic images.

    Each field means what it means in
    :class:`fedbone.generative.audit.similarity.AuditThresholds`.
    """

    real_quantile: float = 0.01
    ms_ssim_ceiling: float = 0.95
    top_k: int = 5
    feature_space: bool = True
    shift_px: int = 4


@dataclass(frozen=True)
class PrivacySettings:
    """What the site lets out; decided by the site, never by the study."""

    small_cell_threshold: int = 5
    audit: AuditSettings = field(default_factory=AuditSettings)
    epsilon_budget: float | None = None
    """Total ε the site allows; with a budget, the site trains only with DP."""
    delta_budget: float | None = None
    """δ of the budget; ``None``: ``1 / (10 n)`` for ``n`` training scans."""
    ledger: Path = Path("privacy-ledger.jsonl")


@dataclass(frozen=True)
class SiteConfig:
    """One hospital's configuration (see the module docstring for the YAML)."""

    site_id: str
    role: SiteRole
    data: DataSettings
    preprocessing: PreprocessSpec = field(default_factory=PreprocessSpec)
    device: Device = Device.AUTO
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    egress_log: Path = Path("egress-log.jsonl")
    work_dir: Path = Path("work")
    source: Path | None = None

    def file_sha256(self) -> str:
        """Return the sha256 of the YAML this came from ("" if none)."""
        if self.source is None:
            return ""
        return hashlib.sha256(self.source.read_bytes()).hexdigest()


_ALLOWED: dict[str, set[str]] = {
    "": {
        "site",
        "data",
        "preprocessing",
        "device",
        "privacy",
        "egress_log",
        "work_dir",
    },
    "site": {"id", "role"},
    "data": {"manifest", "cache_dir", "default_view", "workers"},
    "preprocessing": {"spacing_mm", "canvas", "views", "clip_percentile"},
    "privacy": {"small_cell_threshold", "audit", "budget", "ledger"},
    "privacy.budget": {"epsilon", "delta"},
    "privacy.audit": {f for f in AuditSettings.__dataclass_fields__},
}


class SettingsCollector:
    """Reads a nested settings mapping, gathering every problem found.

    Parameters
    ----------
    allowed
        For each section name (``""`` for the top level), the keys it may hold.
    """

    def __init__(self, allowed: Mapping[str, set[str]]) -> None:
        self.allowed = allowed
        self.problems: list[Problem] = []

    def add(self, code: str, where: str, message: str) -> None:
        """Record one problem at ``where``."""
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

    def choice(
        self, raw: Mapping[str, Any], key: str, where: str, enum: type[_E], default: _E
    ) -> _E:
        """Return ``raw[key]`` as a member of ``enum``, or ``default``."""
        value = raw.get(key)
        if value is None:
            return default
        try:
            return enum(str(value))
        except ValueError:
            options = ", ".join(e.value for e in enum)
            self.add("invalid-choice", where, f"{value!r} is not one of: {options}")
            return default

    def number(
        self,
        raw: Mapping[str, Any],
        key: str,
        where: str,
        default: float,
        low: float,
        high: float,
    ) -> float:
        """Return ``raw[key]`` as a number within ``[low, high]``, or ``default``."""
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add("wrong-type", where, f"expected a number, got {value!r}")
            return default
        if not low <= value <= high:
            self.add("out-of-range", where, f"{value} is outside [{low}, {high}]")
            return default
        return float(value)


def _resolve(path_value: Any, base_dir: Path) -> Path:
    path = Path(str(path_value)).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def _read_site(c: SettingsCollector, raw: Mapping[str, Any]) -> tuple[str, SiteRole]:
    site = c.section(raw, "site")
    site_id = str(site.get("id", "")).strip()
    if not site_id:
        c.add("missing-key", "site.id", "every site needs an id, e.g. 'vienna'")
    elif not _SITE_ID.match(site_id):
        c.add(
            "invalid-value",
            "site.id",
            f"{site_id!r} must be 1-64 letters, digits, '.', '_' or '-'",
        )
    role = c.choice(site, "role", "site.role", SiteRole, SiteRole.TRAIN)
    return site_id, role


def _read_data(
    c: SettingsCollector, raw: Mapping[str, Any], base_dir: Path
) -> DataSettings:
    data = c.section(raw, "data")
    manifest = Path()
    if "manifest" not in data:
        c.add(
            "missing-key", "data.manifest", "give the path of the site's manifest CSV"
        )
    else:
        manifest = _resolve(data["manifest"], base_dir)
        if not manifest.is_file():
            c.add("missing-file", "data.manifest", f"no file at {manifest}")
    cache_dir = _resolve(data.get("cache_dir", "cache"), base_dir)
    default_view: View | None = None
    if data.get("default_view") is not None:
        try:
            default_view = View(str(data["default_view"]).lower())
        except ValueError:
            c.add(
                "invalid-choice",
                "data.default_view",
                f"{data['default_view']!r} is not one of: anterior, posterior, null",
            )
    workers = c.number(data, "workers", "data.workers", 1, 1, 64)
    if not float(workers).is_integer():
        c.add("wrong-type", "data.workers", "expected a whole number of processes")
    return DataSettings(manifest, cache_dir, default_view, int(workers))


def _read_preprocessing(c: SettingsCollector, raw: Mapping[str, Any]) -> PreprocessSpec:
    pre = c.section(raw, "preprocessing")
    defaults = PreprocessSpec()
    spacing = c.number(
        pre, "spacing_mm", "preprocessing.spacing_mm", defaults.spacing_mm, 0.5, 20
    )
    clip = c.number(
        pre,
        "clip_percentile",
        "preprocessing.clip_percentile",
        defaults.clip_percentile,
        50,
        100,
    )
    height, width = defaults.canvas_height, defaults.canvas_width
    canvas = pre.get("canvas", [height, width])
    if (
        not isinstance(canvas, list | tuple)
        or len(canvas) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in canvas)
    ):
        c.add("wrong-type", "preprocessing.canvas", "expected [height, width] integers")
    elif not all(16 <= v <= 4096 for v in canvas):
        c.add("out-of-range", "preprocessing.canvas", "each side must be 16..4096")
    else:
        height, width = int(canvas[0]), int(canvas[1])
    views = c.choice(pre, "views", "preprocessing.views", ViewMode, defaults.views)
    return PreprocessSpec(spacing, height, width, views, clip)


def site_config_from_mapping(
    raw: Any, *, base_dir: Path, source: Path | None = None
) -> SiteConfig:
    """Validate a parsed site YAML and build the typed config.

    Parameters
    ----------
    raw
        The parsed YAML document.
    base_dir
        Folder that relative paths are resolved against.
    source
        The file it came from, for messages.

    Raises
    ------
    ConfigError
        Listing every problem found.
    """
    subject = str(source) if source else "site config"
    raw = require_mapping(raw, subject)
    c = SettingsCollector(_ALLOWED)
    c.unknown_keys(raw, "")
    site_id, role = _read_site(c, raw)
    data = _read_data(c, raw, base_dir)
    spec = _read_preprocessing(c, raw)
    device = c.choice(raw, "device", "device", Device, Device.AUTO)
    privacy = c.section(raw, "privacy")
    threshold = c.number(
        privacy, "small_cell_threshold", "privacy.small_cell_threshold", 5, 1, 1000
    )
    audit = _read_audit(c, privacy)
    epsilon, delta = _read_budget(c, privacy)
    ledger = _resolve(privacy.get("ledger", "privacy-ledger.jsonl"), base_dir)
    egress_log = _resolve(raw.get("egress_log", "egress-log.jsonl"), base_dir)
    work_dir = _resolve(raw.get("work_dir", "work"), base_dir)
    ConfigError.raise_if_any(subject, c.problems)
    return SiteConfig(
        site_id,
        role,
        data,
        spec,
        device,
        PrivacySettings(int(threshold), audit, epsilon, delta, ledger),
        egress_log,
        work_dir,
        source,
    )


def _read_budget(
    c: SettingsCollector, privacy: Mapping[str, Any]
) -> tuple[float | None, float | None]:
    """Read ``privacy.budget``: the site's total (ε, δ), or no budget."""
    raw = privacy.get("budget")
    if raw is None:
        return None, None
    if not isinstance(raw, Mapping) or "epsilon" not in raw:
        c.add(
            "wrong-type",
            "privacy.budget",
            "expected a mapping with epsilon (and optionally delta), e.g. "
            "{epsilon: 8.0, delta: null}",
        )
        return None, None
    c.unknown_keys(raw, "privacy.budget")
    epsilon = c.number(raw, "epsilon", "privacy.budget.epsilon", 1.0, 1e-3, 1e3)
    if raw.get("delta") is None:
        return epsilon, None
    delta = c.number(raw, "delta", "privacy.budget.delta", 1e-5, 1e-12, 0.1)
    return epsilon, delta


def _read_audit(c: SettingsCollector, privacy: Mapping[str, Any]) -> AuditSettings:
    """Read ``privacy.audit``: the site's release rule for synthetic images."""
    raw = privacy.get("audit") or {}
    if not isinstance(raw, Mapping):
        c.add("wrong-type", "privacy.audit", "expected a mapping of settings")
        return AuditSettings()
    c.unknown_keys(raw, "privacy.audit")
    d = AuditSettings()
    where = "privacy.audit."
    feature_space = raw.get("feature_space", d.feature_space)
    if not isinstance(feature_space, bool):
        c.add("wrong-type", where + "feature_space", "expected true or false")
        feature_space = d.feature_space
    top_k = c.number(raw, "top_k", where + "top_k", d.top_k, 1, 100)
    shift = c.number(raw, "shift_px", where + "shift_px", d.shift_px, 0, 32)
    for name, value in (("top_k", top_k), ("shift_px", shift)):
        if not float(value).is_integer():
            c.add("wrong-type", where + name, f"expected a whole number, got {value}")
    return AuditSettings(
        real_quantile=c.number(
            raw, "real_quantile", where + "real_quantile", d.real_quantile, 0.0, 0.5
        ),
        ms_ssim_ceiling=c.number(
            raw,
            "ms_ssim_ceiling",
            where + "ms_ssim_ceiling",
            d.ms_ssim_ceiling,
            0.0,
            1.0,
        ),
        top_k=int(top_k),
        feature_space=feature_space,
        shift_px=int(shift),
    )


def require_mapping(raw: Any, subject: str) -> Mapping[str, Any]:
    """Return ``raw`` if it is a mapping, else raise ConfigError for ``subject``."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            subject, [Problem("wrong-type", "the file must hold a YAML mapping")]
        )
    return raw


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, or raise ConfigError saying why it cannot be read."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            path, [Problem("unreadable-file", f"cannot read the file: {exc}")]
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            path, [Problem("invalid-yaml", f"not valid YAML: {exc}")]
        ) from exc


def load_site_config(path: str | Path) -> SiteConfig:
    """Load and validate a site YAML file.

    Raises
    ------
    ConfigError
        If the file is missing, is not YAML, or has any invalid setting; all
        problems are listed together.
    """
    path = Path(path)
    return site_config_from_mapping(
        read_yaml(path), base_dir=path.parent.resolve(), source=path
    )


def site_config_to_mapping(config: SiteConfig, *, relative_to: Path) -> dict[str, Any]:
    """Render a config as the YAML mapping :func:`load_site_config` reads back.

    Paths below ``relative_to`` are written relative to it, so a site folder
    can be moved as a whole.
    """

    def rel(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(relative_to.resolve()))
        except ValueError:
            return str(path)

    spec = config.preprocessing
    default_view = config.data.default_view
    return {
        "site": {"id": config.site_id, "role": config.role.value},
        "data": {
            "manifest": rel(config.data.manifest),
            "cache_dir": rel(config.data.cache_dir),
            "default_view": default_view.value if default_view else None,
            "workers": config.data.workers,
        },
        "preprocessing": {
            "spacing_mm": spec.spacing_mm,
            "canvas": [spec.canvas_height, spec.canvas_width],
            "views": spec.views.value,
            "clip_percentile": spec.clip_percentile,
        },
        "privacy": {
            "small_cell_threshold": config.privacy.small_cell_threshold,
            "audit": asdict(config.privacy.audit),
            **_budget_mapping(config.privacy),
            "ledger": rel(config.privacy.ledger),
        },
        "egress_log": rel(config.egress_log),
        "work_dir": rel(config.work_dir),
        "device": config.device.value,
    }


def _budget_mapping(privacy: PrivacySettings) -> dict[str, Any]:
    if privacy.epsilon_budget is None:
        return {}
    return {
        "budget": {"epsilon": privacy.epsilon_budget, "delta": privacy.delta_budget}
    }


def write_site_config(config: SiteConfig, path: str | Path) -> Path:
    """Write ``config`` as a site YAML file and return its path."""
    path = Path(path)
    mapping = site_config_to_mapping(config, relative_to=path.parent)
    path.write_text(yaml.safe_dump(mapping, sort_keys=False), encoding="utf-8")
    return path
