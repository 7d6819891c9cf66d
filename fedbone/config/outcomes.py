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

from fedbone.config.reader import StudyCollector

__all__ = [
    "DEFAULT_ENDPOINTS",
    "OUTCOME_KEYS",
    "OutcomeSettings",
    "read_outcomes",
]

#: The endpoint each task's prediction is expected to carry (Haberl et al.).
DEFAULT_ENDPOINTS = {"bm": ("death",), "ca": ("hf",)}

OUTCOME_KEYS = {
    "model",
    "endpoints",
    "split",
    "threshold",
    "resolution_days",
    "horizon_days",
    "ties",
}


@dataclass(frozen=True)
class OutcomeSettings:
    """How the outcome phase groups patients and analyses follow-up."""

    model: str = "federated"
    endpoints: tuple[str, ...] = ()
    """Empty: the task's default (:data:`DEFAULT_ENDPOINTS`)."""
    split: str = "test"
    threshold: float = 0.5
    resolution_days: float = 7.0
    horizon_days: float = 3650.0
    ties: str = "efron"

    def endpoints_for(self, task: str) -> tuple[str, ...]:
        """Return the endpoints analysed for ``task``."""
        return self.endpoints or DEFAULT_ENDPOINTS[task]


def _endpoint_names(c: StudyCollector, raw: Mapping[str, Any]) -> tuple[str, ...]:
    names = c.names(raw, "endpoints", "outcomes.endpoints")
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


def read_outcomes(c: StudyCollector, raw: Mapping[str, Any]) -> OutcomeSettings:
    """Read the ``outcomes`` section (defaults when absent)."""
    s = c.section(raw, "outcomes")
    d = OutcomeSettings()
    model = s.get("model", d.model)
    if not isinstance(model, str) or not model:
        c.add("wrong-type", "outcomes.model", "expected a model name, e.g. federated")
        model = d.model
    resolution = c.number(
        s, "resolution_days", "outcomes.resolution_days", d.resolution_days, 0.5, 3650
    )
    horizon = c.number(
        s, "horizon_days", "outcomes.horizon_days", d.horizon_days, 1.0, 36500
    )
    if horizon < resolution:
        c.add(
            "invalid-value",
            "outcomes.horizon_days",
            f"{horizon} is shorter than one interval of {resolution} days",
        )
    return OutcomeSettings(
        model=model,
        endpoints=_endpoint_names(c, s),
        split=c.one_of(s, "split", "outcomes.split", ("test", "val"), d.split),
        threshold=c.number(s, "threshold", "outcomes.threshold", d.threshold, 0, 1),
        resolution_days=float(resolution),
        horizon_days=float(horizon),
        ties=c.one_of(s, "ties", "outcomes.ties", ("efron", "breslow"), d.ties),
    )
