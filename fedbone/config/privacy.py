"""Study settings for differential privacy: the ``dp`` section of the study YAML.

::

    dp:
      classifier:                 # DP-SGD for every classifier a site trains
        target_epsilon: 8.0       # over the whole planned run (rounds x epochs),
                                  # at the site's own delta; or noise_multiplier
        max_grad_norm: 1.0
        clipping: ghost           # ghost (fast gradient clipping) | hooks
      gan:                        # DP-SGD on the discriminator (phase gan)
        noise_multiplier: 1.0
        max_grad_norm: 1.0
      statistics:                 # noisy validation histograms (Laplace)
        epsilon: 1.0              # per site, the whole validation reply
        bins: 20                  # coarse on purpose: every bin gets noise
        max_scans_per_patient: 1  # contribution bound = sensitivity
      on_budget_exhausted: continue   # continue without the site | stop

The study asks for DP; each **site** decides its budget (site config
``privacy.budget``), keeps its ledger and refuses a release that would exceed
it. δ is always the site's. DP-SGD needs a model without batch-coupled layers:
``model.norm`` must be ``group`` or ``instance``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedbone.config.reader import (
    SettingsCollector,
    number,
    one_of,
    setting_keys,
    whole,
)

__all__ = [
    "DP_SECTIONS",
    "DpPhaseSettings",
    "DpSettings",
    "DpStatisticsSettings",
    "read_dp",
]

_POLICIES = ("continue", "stop")
_CLIPPING = ("ghost", "hooks")
#: The DP-SGD settings of which a section gives exactly one, with their range.
_NOISE_OR_TARGET = {"noise_multiplier": (0.01, 100.0), "target_epsilon": (0.01, 1e3)}


@dataclass(frozen=True)
class DpPhaseSettings:
    """DP-SGD settings of one kind of training (noise xor target ε)."""

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = number(1.0, 1e-4, 1e4)
    clipping: str = one_of("ghost", _CLIPPING)
    """Read for ``dp.classifier`` only; ``dp.gan`` keeps the default."""
    train_layers: str = one_of("all", ("all", "head"))
    """``head``: DP-SGD trains only the classifier's last layer and the
    backbone stays as received (a pretrained one); far fewer noisy weights.
    Read for ``dp.classifier`` only."""

    def to_config(self, prefix: str = "dp") -> dict[str, float | str]:
        """Return the values a request carries (0 stands for "not given")."""
        return {
            f"{prefix}-noise-multiplier": self.noise_multiplier or 0.0,
            f"{prefix}-target-epsilon": self.target_epsilon or 0.0,
            f"{prefix}-max-grad-norm": self.max_grad_norm,
            f"{prefix}-clipping": self.clipping,
            f"{prefix}-train-layers": self.train_layers,
        }


@dataclass(frozen=True)
class DpStatisticsSettings:
    """Noisy validation histograms: ε per site, bins, contribution bound."""

    epsilon: float = number(1.0, 0.01, 100.0)
    bins: int = whole(20, 10, 1000)
    max_scans_per_patient: int = whole(1, 1, 100)

    def to_config(self) -> dict[str, float | int]:
        """Return the values a validation request carries."""
        return {
            "dp-stat-epsilon": self.epsilon,
            "dp-stat-bins": self.bins,
            "dp-stat-max-scans": self.max_scans_per_patient,
        }


@dataclass(frozen=True)
class DpSettings:
    """What is differentially private, and what happens when a site's budget ends."""

    classifier: DpPhaseSettings | None = None
    gan: DpPhaseSettings | None = None
    statistics: DpStatisticsSettings | None = None
    on_budget_exhausted: str = one_of("continue", _POLICIES)

    @property
    def enabled(self) -> bool:
        """Whether anything the study releases is differentially private."""
        return any(
            part is not None for part in (self.classifier, self.gan, self.statistics)
        )


DP_SECTIONS: dict[str, set[str]] = {
    "dp": setting_keys(DpSettings),
    "dp.statistics": setting_keys(DpStatisticsSettings),
    "dp.classifier": setting_keys(DpPhaseSettings),
    "dp.gan": setting_keys(DpPhaseSettings) - {"clipping", "train_layers"},
}


def _read_phase(
    c: SettingsCollector, raw: Mapping[str, Any], name: str
) -> DpPhaseSettings | None:
    section = raw.get(name)
    if section is None:
        return None
    where = f"dp.{name}"
    if not isinstance(section, Mapping):
        c.add("wrong-type", where, "expected a mapping of DP-SGD settings")
        return None
    c.unknown_keys(section, where)
    # a key given as null is read, and reported, like any other wrong value
    given: dict[str, Any] = {
        key: c.number(section, f"{where}.{key}", low, low, high)
        for key, (low, high) in _NOISE_OR_TARGET.items()
        if key in section
    }
    if len(given) != 1:
        c.add(
            "noise-or-target",
            where,
            "give exactly one of noise_multiplier and target_epsilon",
        )
    if name != "classifier":
        given["clipping"] = DpPhaseSettings.clipping
        given["train_layers"] = DpPhaseSettings.train_layers
    return c.settings(section, where, DpPhaseSettings, **given)


def _read_statistics(
    c: SettingsCollector, raw: Mapping[str, Any]
) -> DpStatisticsSettings | None:
    section = raw.get("statistics")
    if section is None:
        return None
    where = "dp.statistics"
    if not isinstance(section, Mapping):
        c.add("wrong-type", where, "expected a mapping of noisy-statistics settings")
        return None
    c.unknown_keys(section, where)
    settings = c.settings(section, where, DpStatisticsSettings)
    if settings.bins % 2:
        c.add(
            "odd-bins", f"{where}.bins", "use an even number (0.5 must be a bin edge)"
        )
    return settings


def read_dp(c: SettingsCollector, raw: Mapping[str, Any], norm: str) -> DpSettings:
    """Read the ``dp`` section (absent: no DP).

    Parameters
    ----------
    c
        Collects the problems found.
    raw
        The whole study YAML.
    norm
        ``model.norm``: DP-SGD cannot train batch norm.
    """
    if "dp" not in raw:
        return DpSettings()
    d = c.section(raw, "dp")
    settings = c.settings(
        d,
        "dp",
        DpSettings,
        classifier=_read_phase(c, d, "classifier"),
        gan=_read_phase(c, d, "gan"),
        statistics=_read_statistics(c, d),
    )
    if settings.classifier is not None and norm == "batch":
        c.add(
            "not-dp-compatible",
            "model.norm",
            "DP-SGD cannot train batch norm (it couples the samples of a batch); "
            "set model.norm: group",
        )
    return settings
