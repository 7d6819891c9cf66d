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

from fedbone.config.reader import StudyCollector

__all__ = [
    "DP_SECTIONS",
    "DpPhaseSettings",
    "DpSettings",
    "DpStatisticsSettings",
    "read_dp",
]

_POLICIES = ("continue", "stop")
_CLIPPING = ("ghost", "hooks")

DP_SECTIONS: dict[str, set[str]] = {
    "dp": {"classifier", "gan", "statistics", "on_budget_exhausted"},
    "dp.statistics": {"epsilon", "bins", "max_scans_per_patient"},
    "dp.classifier": {
        "noise_multiplier",
        "target_epsilon",
        "max_grad_norm",
        "clipping",
    },
    "dp.gan": {"noise_multiplier", "target_epsilon", "max_grad_norm"},
}


@dataclass(frozen=True)
class DpPhaseSettings:
    """DP-SGD settings of one kind of training (noise xor target ε)."""

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = 1.0
    clipping: str = "ghost"

    def to_config(self, prefix: str = "dp") -> dict[str, float | str]:
        """Return the values a request carries (0 stands for "not given")."""
        return {
            f"{prefix}-noise-multiplier": self.noise_multiplier or 0.0,
            f"{prefix}-target-epsilon": self.target_epsilon or 0.0,
            f"{prefix}-max-grad-norm": self.max_grad_norm,
            f"{prefix}-clipping": self.clipping,
        }


@dataclass(frozen=True)
class DpStatisticsSettings:
    """Noisy validation histograms: ε per site, bins, contribution bound."""

    epsilon: float = 1.0
    bins: int = 20
    max_scans_per_patient: int = 1

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
    on_budget_exhausted: str = "continue"

    @property
    def enabled(self) -> bool:
        """Whether anything the study releases is differentially private."""
        return any(
            part is not None for part in (self.classifier, self.gan, self.statistics)
        )


def _read_phase(
    c: StudyCollector, raw: Mapping[str, Any], name: str
) -> DpPhaseSettings | None:
    section = raw.get(name)
    if section is None:
        return None
    where = f"dp.{name}"
    if not isinstance(section, Mapping):
        c.add("wrong-type", where, "expected a mapping of DP-SGD settings")
        return None
    c.unknown_keys(section, where)
    given = [k for k in ("noise_multiplier", "target_epsilon") if k in section]
    if len(given) != 1:
        c.add(
            "noise-or-target",
            where,
            "give exactly one of noise_multiplier and target_epsilon",
        )
    noise = target = None
    if "noise_multiplier" in section:
        noise = c.number(
            section, "noise_multiplier", f"{where}.noise_multiplier", 1.0, 0.01, 100.0
        )
    if "target_epsilon" in section:
        target = c.number(
            section, "target_epsilon", f"{where}.target_epsilon", 8.0, 0.01, 1000.0
        )
    clipping = "ghost"
    if name == "classifier":
        clipping = c.one_of(
            section, "clipping", f"{where}.clipping", _CLIPPING, "ghost"
        )
    return DpPhaseSettings(
        noise_multiplier=noise,
        target_epsilon=target,
        max_grad_norm=c.number(
            section, "max_grad_norm", f"{where}.max_grad_norm", 1.0, 1e-4, 1e4
        ),
        clipping=clipping,
    )


def _read_statistics(
    c: StudyCollector, raw: Mapping[str, Any]
) -> DpStatisticsSettings | None:
    section = raw.get("statistics")
    if section is None:
        return None
    where = "dp.statistics"
    if not isinstance(section, Mapping):
        c.add("wrong-type", where, "expected a mapping of noisy-statistics settings")
        return None
    c.unknown_keys(section, where)
    bins = c.integer(section, "bins", f"{where}.bins", 20, 10, 1000)
    if bins % 2:
        c.add(
            "odd-bins", f"{where}.bins", "use an even number (0.5 must be a bin edge)"
        )
    return DpStatisticsSettings(
        epsilon=c.number(section, "epsilon", f"{where}.epsilon", 1.0, 0.01, 100.0),
        bins=bins,
        max_scans_per_patient=c.integer(
            section,
            "max_scans_per_patient",
            f"{where}.max_scans_per_patient",
            1,
            1,
            100,
        ),
    )


def read_dp(c: StudyCollector, raw: Mapping[str, Any], norm: str) -> DpSettings:
    """Read the ``dp`` section (absent: no DP); ``norm`` is ``model.norm``."""
    if "dp" not in raw:
        return DpSettings()
    d = c.section(raw, "dp")
    settings = DpSettings(
        classifier=_read_phase(c, d, "classifier"),
        gan=_read_phase(c, d, "gan"),
        statistics=_read_statistics(c, d),
        on_budget_exhausted=c.one_of(
            d, "on_budget_exhausted", "dp.on_budget_exhausted", _POLICIES, "continue"
        ),
    )
    if settings.classifier is not None and norm == "batch":
        c.add(
            "not-dp-compatible",
            "model.norm",
            "DP-SGD cannot train batch norm (it couples the samples of a batch); "
            "set model.norm: group",
        )
    return settings
