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

from fedbone.settings_reader import StudyCollector

__all__ = ["DP_SECTIONS", "DpPhaseSettings", "DpSettings", "read_dp"]

_POLICIES = ("continue", "stop")
_CLIPPING = ("ghost", "hooks")

DP_SECTIONS: dict[str, set[str]] = {
    "dp": {"classifier", "gan", "on_budget_exhausted"},
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
class DpSettings:
    """Which trainings use DP-SGD, and what happens when a site's budget ends."""

    classifier: DpPhaseSettings | None = None
    gan: DpPhaseSettings | None = None
    on_budget_exhausted: str = "continue"

    @property
    def enabled(self) -> bool:
        """Whether any training in the study is differentially private."""
        return self.classifier is not None or self.gan is not None


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


def read_dp(c: StudyCollector, raw: Mapping[str, Any], norm: str) -> DpSettings:
    """Read the ``dp`` section (absent: no DP); ``norm`` is ``model.norm``."""
    if "dp" not in raw:
        return DpSettings()
    d = c.section(raw, "dp")
    settings = DpSettings(
        classifier=_read_phase(c, d, "classifier"),
        gan=_read_phase(c, d, "gan"),
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
