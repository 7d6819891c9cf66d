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
      fast_manifest: null         # CSV of real fast acquisitions (optional)
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
      require_dp_statistics: false  # true: only noisy statistics leave
      secret: site-secret.key   # 0600, made by `fedbone site init`: seals the
                                # ledger and egress log, signs released images
    policy:                     # what the centre may ask (site's, never the study's)
      max_histogram_bins: 2000  # score histograms finer than this are refused
      min_patients_per_class: 5  # fewer positives or negatives: no histograms
      max_outcome_releases: 3   # distinct outcome groupings per cohort + endpoint
      cross_audit_peers: {}     # site-id: public key file (audit only their signed
                                # releases)
      encoders: []              # TorchScript encoder files the study may name by
                                # sha256 (never a path sent by the centre)
      require_study_approval: true  # answer only studies approved here with
                                # `fedbone site approve` (default false; `fedbone
                                # site init` and phantom sites set true)
    approvals: approvals.jsonl    # the studies this site approved (sealed)
    egress_log: egress-log.jsonl  # every outgoing message, appended
    work_dir: work                # site-local state: GANs, checkpoints, pools
    device: auto                  # auto | cpu | cuda
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from fedbone.config.reader import (
    SettingsCollector,
    flag,
    number,
    read_yaml,
    require_mapping,
    whole,
)
from fedbone.data.scan import View
from fedbone.data.spec import PreprocessSpec, ViewMode
from fedbone.errors import ConfigError

__all__ = [
    "AuditThresholds",
    "DataSettings",
    "Device",
    "PrivacySettings",
    "SiteConfig",
    "SitePolicy",
    "SiteRole",
    "load_site_config",
    "site_config_from_mapping",
    "site_config_to_mapping",
    "write_site_config",
]

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
    """Where a site's data and cache live.

    ``fast_manifest`` lists real fast acquisitions paired with standard scans
    of the manifest (``scan_id, fast_scan_file, speed``); ``None`` when the
    site has none.
    """

    manifest: Path
    cache_dir: Path = Path("cache")
    default_view: View | None = None
    workers: int = 1
    fast_manifest: Path | None = None


@dataclass(frozen=True)
class AuditThresholds:
    """A site's release rule for synthetic images (site config, never the study's).

    :func:`fedbone.generative.audit.similarity.audit_synthetic` applies it; the
    site YAML sets it under ``privacy.audit``, each key a field below, within
    the range its declaration gives.

    Parameters
    ----------
    real_quantile
        Quantile of the different-patient nearest-neighbour distances under
        which a synthetic image is blocked: 0.01 blocks images closer to a
        training scan than 99% of training scans are to another patient.
    ms_ssim_ceiling
        Block an image whose MS-SSIM to one of its ``top_k`` nearest training
        scans exceeds this. 0.95 leaves margin above the paper's most similar
        released pair (MS-SSIM 0.89) while still catching near-replicas, which
        score close to 1.
    top_k
        Nearest candidates (by MSE) per synthetic image on which MAE and
        MS-SSIM are computed exactly.
    feature_space
        Also apply the rule to shift-robust feature distances, which catch
        copies moved by a few pixels that pixel MSE misses.
    shift_px
        Feature distances are minimised over shifts of the synthetic image by
        even offsets up to this many pixels along each axis (4: 25 shifts,
        8 mm at 2 mm pixels); 0 compares unshifted images only.
    unrealistic_quantile
        Quantile of the different-patient nearest-neighbour distances above
        which a synthetic image is flagged "unrealistic" (farther from every
        training scan than almost any real scan is from another patient's).
        A flag for the report, never a reason to block: 0.99 flags images
        beyond 99% of the real-vs-real distances.
    """

    real_quantile: float = number(0.01, 0.0, 0.5)
    ms_ssim_ceiling: float = number(0.95, 0.0, 1.0)
    top_k: int = whole(5, 1, 100)
    feature_space: bool = flag(True)
    shift_px: int = whole(4, 0, 32)
    unrealistic_quantile: float = number(0.99, 0.5, 1.0)


@dataclass(frozen=True)
class PrivacySettings:
    """What the site lets out; decided by the site, never by the study."""

    small_cell_threshold: int = 5
    audit: AuditThresholds = field(default_factory=AuditThresholds)
    epsilon_budget: float | None = None
    """Total ε the site allows; with a budget, the site trains only with DP."""
    delta_budget: float | None = None
    """δ of the budget; ``None``: ``1 / (10 n)`` for ``n`` training scans."""
    ledger: Path = Path("privacy-ledger.jsonl")
    require_dp_statistics: bool = False
    """Refuse exact statistics (histograms, survival counts, Cox fits)."""
    secret: Path = Path("site-secret.key")
    """The site's secret (:mod:`fedbone.security.site_secret`)."""


@dataclass(frozen=True)
class SitePolicy:
    """What the centre may ask of this site; decided by the site, never the study.

    Every parameter the centre sends is chosen by someone who may be curious:
    these bounds are checked at the site before any work and again by the
    egress guard on the reply. ``docs/threat-model.md`` says what each answers.

    Parameters
    ----------
    max_histogram_bins
        Most bins a score histogram may have. Finer histograms locate each
        patient's score; the study's pooled ROC needs 1000-2000 (the guard
        refuses fewer than 1000).
    min_patients_per_class
        Fewest positive and fewest negative scans a validation split must
        hold for its score histograms to leave (below: withheld, like metrics).
    max_outcome_releases
        Most distinct patient groupings (model and threshold) the site releases
        per outcome cohort and endpoint; two groupings that differ by fewer
        than ``small_cell_threshold`` patients are refused whatever this says.
    cross_audit_peers
        Site id to the public key file of each site whose released images
        this site audits; images without that site's valid signature are refused.
    encoders
        TorchScript feature encoders the study may name by sha256; a study
        never names a file at the site.
    require_study_approval
        Answer only messages of a study approved at this site (``fedbone site
        approve``, :mod:`fedbone.privacy.approvals`), within what the approval
        lists. Off when absent so that configs written before it keep working;
        ``fedbone site init`` writes it on and phantom sites run with it on.
    """

    max_histogram_bins: int = whole(2000, 1000, 100_000)
    min_patients_per_class: int = whole(5, 1, 100_000)
    max_outcome_releases: int = whole(3, 1, 1000)
    cross_audit_peers: Mapping[str, Path] = field(default_factory=dict)
    encoders: tuple[Path, ...] = ()
    require_study_approval: bool = flag(False)


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
    policy: SitePolicy = field(default_factory=SitePolicy)
    approvals: Path = Path("approvals.jsonl")
    """The studies this site approved (:mod:`fedbone.privacy.approvals`)."""

    @property
    def secret_file(self) -> Path:
        """The site secret's path: ``privacy.secret``, anchored at the site.

        A loaded YAML already holds it absolute (relative to the file); a
        config built in code anchors a relative one beside its ledger (or at
        the work folder's parent), never at the current directory.
        """
        return self._anchored(self.privacy.secret)

    @property
    def approvals_file(self) -> Path:
        """The approvals list's path, anchored at the site as :attr:`secret_file`."""
        return self._anchored(self.approvals)

    def _anchored(self, path: Path) -> Path:
        if path.is_absolute():
            return path
        if self.source is not None:
            base = self.source.parent
        elif self.privacy.ledger.is_absolute():
            base = self.privacy.ledger.parent
        else:
            base = self.work_dir.parent
        return base.resolve() / path

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
        "policy",
        "egress_log",
        "work_dir",
        "approvals",
    },
    "site": {"id", "role"},
    "data": {"manifest", "cache_dir", "default_view", "workers", "fast_manifest"},
    "preprocessing": {"spacing_mm", "canvas", "views", "clip_percentile"},
    "privacy": {
        "small_cell_threshold",
        "audit",
        "budget",
        "ledger",
        "require_dp_statistics",
        "secret",
    },
    "policy": {f.name for f in fields(SitePolicy)},
    "privacy.budget": {"epsilon", "delta"},
    "privacy.audit": {f.name for f in fields(AuditThresholds)},
}


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
    role = c.choice(site, "site.role", SiteRole, SiteRole.TRAIN)
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
    cache_dir = _resolve(data.get("cache_dir", DataSettings.cache_dir), base_dir)
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
    workers = c.number(data, "data.workers", DataSettings.workers, 1, 64)
    if not float(workers).is_integer():
        c.add("wrong-type", "data.workers", "expected a whole number of processes")
    fast_manifest: Path | None = None
    if data.get("fast_manifest") is not None:
        fast_manifest = _resolve(data["fast_manifest"], base_dir)
        if not fast_manifest.is_file():
            c.add(
                "missing-file",
                "data.fast_manifest",
                f"no file at {fast_manifest}; give the CSV of fast acquisitions "
                "(scan_id, fast_scan_file, speed) or remove the key",
            )
    return DataSettings(manifest, cache_dir, default_view, int(workers), fast_manifest)


def _read_preprocessing(c: SettingsCollector, raw: Mapping[str, Any]) -> PreprocessSpec:
    pre = c.section(raw, "preprocessing")
    defaults = PreprocessSpec()
    spacing = c.number(pre, "preprocessing.spacing_mm", defaults.spacing_mm, 0.5, 20)
    clip = c.number(
        pre, "preprocessing.clip_percentile", defaults.clip_percentile, 50, 100
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
    views = c.choice(pre, "preprocessing.views", ViewMode, defaults.views)
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
    device = c.choice(raw, "device", Device, SiteConfig.device)
    privacy = _read_privacy(c, raw, base_dir)
    policy = _read_policy(c, raw, base_dir)
    egress_log = _resolve(raw.get("egress_log", SiteConfig.egress_log), base_dir)
    work_dir = _resolve(raw.get("work_dir", SiteConfig.work_dir), base_dir)
    approvals = _resolve(raw.get("approvals", SiteConfig.approvals), base_dir)
    ConfigError.raise_if_any(subject, c.problems)
    return SiteConfig(
        site_id,
        role,
        data,
        spec,
        device,
        privacy,
        egress_log,
        work_dir,
        source,
        policy,
        approvals,
    )


def _read_policy(
    c: SettingsCollector, raw: Mapping[str, Any], base_dir: Path
) -> SitePolicy:
    """Read ``policy``: the bounds on what the centre may ask of this site."""
    policy = c.section(raw, "policy")
    peers_raw = policy.get("cross_audit_peers") or {}
    peers: dict[str, Path] = {}
    if not isinstance(peers_raw, Mapping):
        c.add(
            "wrong-type",
            "policy.cross_audit_peers",
            "expected a mapping of site id to public key file, e.g. {A: keys/A.pem}",
        )
    else:
        for site_id, key_path in peers_raw.items():
            where = f"policy.cross_audit_peers.{site_id}"
            if not _SITE_ID.match(str(site_id)):
                c.add("invalid-value", where, "not a valid site id")
                continue
            path = _resolve(key_path, base_dir)
            if not path.is_file():
                c.add("missing-file", where, f"no public key file at {path}")
            peers[str(site_id)] = path
    encoders_raw = policy.get("encoders") or []
    encoders: list[Path] = []
    if not isinstance(encoders_raw, list):
        c.add("wrong-type", "policy.encoders", "expected a list of encoder files")
    else:
        for index, entry in enumerate(encoders_raw):
            path = _resolve(entry, base_dir)
            if not path.is_file():
                c.add("missing-file", f"policy.encoders[{index}]", f"no file at {path}")
            encoders.append(path)
    return c.settings(
        policy,
        "policy",
        SitePolicy,
        cross_audit_peers=peers,
        encoders=tuple(encoders),
    )


def _read_privacy(
    c: SettingsCollector, raw: Mapping[str, Any], base_dir: Path
) -> PrivacySettings:
    privacy = c.section(raw, "privacy")
    threshold = c.number(
        privacy,
        "privacy.small_cell_threshold",
        PrivacySettings.small_cell_threshold,
        1,
        1000,
    )
    audit = _read_audit(c, privacy)
    epsilon, delta = _read_budget(c, privacy)
    ledger = _resolve(privacy.get("ledger", PrivacySettings.ledger), base_dir)
    require_dp = privacy.get("require_dp_statistics", False)
    if not isinstance(require_dp, bool):
        c.add("wrong-type", "privacy.require_dp_statistics", "expected true or false")
        require_dp = False
    if require_dp and epsilon is None:
        c.add(
            "invalid-value",
            "privacy.require_dp_statistics",
            "noisy statistics are charged to a budget: set privacy.budget too",
        )
    secret = _resolve(privacy.get("secret", PrivacySettings.secret), base_dir)
    return PrivacySettings(
        int(threshold), audit, epsilon, delta, ledger, require_dp, secret
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
    epsilon = c.number(raw, "privacy.budget.epsilon", 1.0, 1e-3, 1e3)
    if raw.get("delta") is None:
        return epsilon, None
    delta = c.number(raw, "privacy.budget.delta", 1e-5, 1e-12, 0.1)
    return epsilon, delta


def _read_audit(c: SettingsCollector, privacy: Mapping[str, Any]) -> AuditThresholds:
    """Read ``privacy.audit``: the site's release rule for synthetic images."""
    raw = privacy.get("audit") or {}
    if not isinstance(raw, Mapping):
        c.add("wrong-type", "privacy.audit", "expected a mapping of settings")
        return AuditThresholds()
    c.unknown_keys(raw, "privacy.audit")
    return c.settings(raw, "privacy.audit", AuditThresholds)


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
    fast_manifest = config.data.fast_manifest
    return {
        "site": {"id": config.site_id, "role": config.role.value},
        "data": {
            "manifest": rel(config.data.manifest),
            "cache_dir": rel(config.data.cache_dir),
            "default_view": default_view.value if default_view else None,
            "workers": config.data.workers,
            # Only when set: configs written before the key existed stay as they were.
            **({} if fast_manifest is None else {"fast_manifest": rel(fast_manifest)}),
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
            "require_dp_statistics": config.privacy.require_dp_statistics,
            "secret": rel(config.privacy.secret),
        },
        "policy": {
            "max_histogram_bins": config.policy.max_histogram_bins,
            "min_patients_per_class": config.policy.min_patients_per_class,
            "max_outcome_releases": config.policy.max_outcome_releases,
            "cross_audit_peers": {
                site: rel(path)
                for site, path in config.policy.cross_audit_peers.items()
            },
            "encoders": [rel(path) for path in config.policy.encoders],
            "require_study_approval": config.policy.require_study_approval,
        },
        "approvals": rel(config.approvals_file),
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
