"""Study settings of the outcome analysis (phase ``outcomes``).

An optional top-level section of the study YAML::

    outcomes:
      model: federated        # whose predictions group the patients
      endpoints: [death]      # default: death for task bm, hf for task ca
      split: test             # the validation split (validation-only sites: all)
      threshold: 0.5          # predicted positive at p >= threshold
      resolution_days: 7      # Kaplan-Meier / log-rank grid
      horizon_days: 3650      # follow-up beyond it is censored there
      ties: efron             # efron | breslow (Cox models)

The minimum patients per site and per group is the site's own
``privacy.small_cell_threshold``, never the study's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedbone.config.reader import SettingsCollector, number, one_of

__all__ = [
    "DEFAULT_ENDPOINTS",
    "OutcomeSettings",
    "read_outcomes",
]

#: The endpoint each task's prediction is expected to carry (Haberl et al.).
DEFAULT_ENDPOINTS = {"bm": ("death",), "ca": ("hf",)}


@dataclass(frozen=True)
class OutcomeSettings:
    """How the outcome phase groups patients and analyses follow-up."""

    model: str = "federated"
    endpoints: tuple[str, ...] = ()
    """Empty: the task's default (:data:`DEFAULT_ENDPOINTS`)."""
    split: str = one_of("test", ("test", "val"))
    threshold: float = number(0.5, 0, 1)
    resolution_days: float = number(7.0, 0.5, 3650)
    horizon_days: float = number(3650.0, 1.0, 36500)
    ties: str = one_of("efron", ("efron", "breslow"))

    def endpoints_for(self, task: str) -> tuple[str, ...]:
        """Return the endpoints analysed for ``task``."""
        return self.endpoints or DEFAULT_ENDPOINTS[task]


def _endpoint_names(c: SettingsCollector, raw: Mapping[str, Any]) -> tuple[str, ...]:
    names = c.names(raw, "outcomes.endpoints")
    bad = [n for n in names if not n.replace("_", "-").replace("-", "").isalnum()]
    if bad or any(n != n.lower() for n in names):
        c.add(
            "invalid-value",
            "outcomes.endpoints",
            f"{bad or names} must be lower-case names as in the manifest's "
            "time_<endpoint>_days columns, e.g. death, hf",
        )
        return ()
    return names


def read_outcomes(c: SettingsCollector, raw: Mapping[str, Any]) -> OutcomeSettings:
    """Read the ``outcomes`` section (defaults when absent)."""
    s = c.section(raw, "outcomes")
    model = s.get("model", OutcomeSettings.model)
    if not isinstance(model, str) or not model:
        c.add("wrong-type", "outcomes.model", "expected a model name, e.g. federated")
        model = OutcomeSettings.model
    settings = c.settings(
        s, "outcomes", OutcomeSettings, model=model, endpoints=_endpoint_names(c, s)
    )
    if settings.horizon_days < settings.resolution_days:
        c.add(
            "invalid-value",
            "outcomes.horizon_days",
            f"{settings.horizon_days} is shorter than one interval of "
            f"{settings.resolution_days} days",
        )
    return settings
