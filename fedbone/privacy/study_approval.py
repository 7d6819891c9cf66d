"""What a site approves when it approves a study, and a request checked against it.

A hospital approves a study once (``fedbone site approve <study.yaml>``), after
reading what the study will ask of it. :class:`StudyApproval` is that
summary:

- the study's name and :meth:`~fedbone.config.study.StudyConfig.approval_sha256`
  (every setting except where the centre keeps files), which every message of
  the study carries as ``study-approval-sha256``;
- its phases and the message kinds each phase sends a site
  (:data:`PHASE_KINDS`, and :data:`SECURE_AGGREGATION_KINDS` in phase
  ``train`` under secure aggregation);
- its differential privacy: the classifier's DP-SGD target ε or noise
  multiplier, the GAN discriminator's, and the ε of noisy statistics;
- the most histogram bins it asks for (validation and, noisy, statistics).

:meth:`StudyApproval.request_problems` then checks one request against it:
its phase and kind must be ones the approval lists, its run name must be a run
of the approved study (``<study name>-...``), the DP settings it carries
(:data:`DP_KEYS`) must be the approved ones, and so must their absence where a
request's work would run with DP under the approval, and its bins must not
exceed the approved ones. The approval sha256 already pins every other
setting; these checks stop a centre that sends the approved sha256 with other
terms. Lists, seals and revocations: :mod:`fedbone.privacy.approvals`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedbone.config.study import StudyConfig
from fedbone.errors import Problem

__all__ = [
    "DP_KEYS",
    "NOT_APPROVED",
    "NOT_IN_APPROVED_STUDY",
    "PHASE_KINDS",
    "SECURE_AGGREGATION_KINDS",
    "StudyApproval",
]

NOT_APPROVED = "study-not-approved"
"""Problem code: the request names no study approved (and not revoked) here."""
NOT_IN_APPROVED_STUDY = "not-in-approved-study"
"""Problem code: the study is approved, but not for what the request asks."""

#: The message kinds each phase sends a site (``report`` sends none).
PHASE_KINDS: Mapping[str, tuple[str, ...]] = {
    "census": ("query.census",),
    "gan": ("query.gan_train", "train", "evaluate"),
    "synthesize": (
        "query.synthesize",
        "query.umap",
        "query.receive_synthetic",
        "query.cross_audit",
    ),
    "train": ("train", "evaluate"),
    "enhance": (
        "train",
        "evaluate",
        "query.enhance_evaluate",
        "query.enhance_components",
    ),
    "validate": ("query.validate", "query.paired_components"),
    "outcomes": ("query.outcomes", "query.outcome_cox"),
    "report": (),
}
#: What phase ``train`` also sends under ``training.secure_aggregation``
#: (:data:`fedbone.federation.kinds.SECURE_AGGREGATION_KINDS`).
SECURE_AGGREGATION_KINDS = (
    "query.secagg_keys",
    "query.secagg_shares",
    "train.secagg",
    "query.secagg_unmask",
)

#: Each DP request setting a message may carry, and the (phase, kind) pairs
#: whose work it governs: there, a missing setting means "no DP".
DP_KEYS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "dp-noise-multiplier": (("train", "train"), ("train", "train.secagg")),
    "dp-target-epsilon": (("train", "train"), ("train", "train.secagg")),
    "dp-gan-noise-multiplier": (("gan", "train"), ("gan", "query.gan_train")),
    "dp-gan-target-epsilon": (("gan", "train"), ("gan", "query.gan_train")),
    "dp-stat-epsilon": (
        ("validate", "query.validate"),
        ("outcomes", "query.outcomes"),
    ),
}
_DP_LABELS = {
    "dp-noise-multiplier": "classifier DP-SGD noise multiplier",
    "dp-target-epsilon": "classifier DP-SGD target epsilon",
    "dp-gan-noise-multiplier": "GAN DP-SGD noise multiplier",
    "dp-gan-target-epsilon": "GAN DP-SGD target epsilon",
    "dp-stat-epsilon": "noisy statistics epsilon",
}
_BINS = "bins"
_STAT_BINS = "dp-stat-bins"


@dataclass(frozen=True)
class StudyApproval:
    """What a study asks of a site, as the site approves it.

    Parameters
    ----------
    study
        The study's name; its runs are named ``<study>-<time stamp>``.
    approval_sha256
        :meth:`~fedbone.config.study.StudyConfig.approval_sha256`.
    kinds
        Phase to the message kinds it sends a site, in phase order.
    dp
        Each :data:`DP_KEYS` setting the study asks for (0: not asked).
    validation_bins
        Most bins of a score histogram (``validation.bins``).
    statistics_bins
        Bins of noisy statistics (``dp.statistics.bins``; 0: none asked).
    study_file_sha256
        sha256 of the study YAML approved (empty when not approved from a file).
    """

    study: str
    approval_sha256: str
    kinds: Mapping[str, tuple[str, ...]]
    dp: Mapping[str, float] = field(default_factory=dict)
    validation_bins: int = 0
    statistics_bins: int = 0
    study_file_sha256: str = ""

    @classmethod
    def of(cls, study: StudyConfig, study_file_sha256: str = "") -> StudyApproval:
        """Return what ``study`` asks of a site.

        Parameters
        ----------
        study
            The study config, loaded from the YAML the centre sent.
        study_file_sha256
            sha256 of that YAML file's bytes, kept with the approval.
        """
        dp = study.dp
        asked: dict[str, float] = dict.fromkeys(DP_KEYS, 0.0)
        for prefix, settings in (("dp", dp.classifier), ("dp-gan", dp.gan)):
            if settings is not None:
                asked[f"{prefix}-noise-multiplier"] = settings.noise_multiplier or 0.0
                asked[f"{prefix}-target-epsilon"] = settings.target_epsilon or 0.0
        if dp.statistics is not None:
            asked["dp-stat-epsilon"] = dp.statistics.epsilon
        kinds = {phase: PHASE_KINDS[phase] for phase in study.phases}
        if "train" in kinds and study.training.secure_aggregation:
            kinds["train"] += SECURE_AGGREGATION_KINDS
        return cls(
            study=study.name,
            approval_sha256=study.approval_sha256(),
            kinds=kinds,
            dp=asked,
            validation_bins=study.validation.bins,
            statistics_bins=dp.statistics.bins if dp.statistics is not None else 0,
            study_file_sha256=study_file_sha256,
        )

    @property
    def phases(self) -> tuple[str, ...]:
        """The approved phases, in order."""
        return tuple(self.kinds)

    def describe_dp(self) -> str:
        """Return the approved differential privacy in one line ("none" if none)."""
        parts = [
            f"{_DP_LABELS[key]} {value:g}" for key, value in self.dp.items() if value
        ]
        if self.statistics_bins:
            parts.append(f"noisy statistics bins {self.statistics_bins}")
        return "; ".join(parts) or "none"

    def request_problems(self, kind: str, config: Mapping[str, Any]) -> list[Problem]:
        """Return every way a request of this study asks for more than approved.

        Parameters
        ----------
        kind
            The message type (``train``, ``query.validate``...).
        config
            The request's ``config`` record (``phase``, ``run-name``, DP and
            bins settings).

        Returns
        -------
        list of Problem
            ``not-in-approved-study`` problems; empty if the request is within
            the approval.
        """
        phase = str(config.get("phase", ""))
        problems = self._scope_problems(kind, phase, config.get("run-name"))
        problems += self._dp_problems(kind, phase, config)
        problems += self._bins_problems(config)
        return problems

    def _scope_problems(self, kind: str, phase: str, run_name: object) -> list[Problem]:
        problems = []
        if phase not in self.kinds:
            problems.append(
                _outside(
                    f"phase {phase!r} is not one of the approved phases "
                    f"({', '.join(self.phases)})",
                    "phase",
                )
            )
        elif kind not in self.kinds[phase]:
            problems.append(
                _outside(
                    f"phase {phase!r} was approved for "
                    f"{', '.join(self.kinds[phase]) or 'no message'}, not {kind!r}",
                    "kind",
                )
            )
        if not isinstance(run_name, str) or not (
            run_name == self.study or run_name.startswith(f"{self.study}-")
        ):
            problems.append(
                _outside(
                    f"run {run_name!r} is not a run of the approved study "
                    f"{self.study!r} (its runs are named '{self.study}-...')",
                    "run-name",
                )
            )
        return problems

    def _dp_problems(
        self, kind: str, phase: str, config: Mapping[str, Any]
    ) -> list[Problem]:
        problems = []
        for key, governed in DP_KEYS.items():
            if key not in config and (phase, kind) not in governed:
                continue  # this request's work does not use the setting
            sent = _number(config.get(key, 0.0))
            approved = self.dp.get(key, 0.0)
            if sent is None or not math.isclose(sent, approved, rel_tol=1e-9):
                problems.append(
                    _outside(
                        f"the request's {_DP_LABELS[key]} is "
                        f"{_shown(config.get(key))}, the approval's "
                        f"{_shown(approved)}",
                        key,
                    )
                )
        return problems

    def _bins_problems(self, config: Mapping[str, Any]) -> list[Problem]:
        problems = []
        for key, approved in (
            (_BINS, self.validation_bins),
            (_STAT_BINS, self.statistics_bins),
        ):
            if key not in config:
                continue
            sent = _number(config[key])
            if sent is None or sent > approved:
                problems.append(
                    _outside(
                        f"the request asks for {config[key]!r} {key}, the approval "
                        f"allows at most {approved}",
                        key,
                    )
                )
        return problems


def _outside(message: str, where: str) -> Problem:
    return Problem(
        NOT_IN_APPROVED_STUDY,
        f"{message}; the centre must send the study as approved, or the site "
        "approve the changed study (`fedbone site approve <study.yaml>`)",
        where,
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _shown(value: object) -> str:
    if value is None or value == 0:
        return "none"
    return f"{value:g}" if isinstance(value, float) else repr(value)
