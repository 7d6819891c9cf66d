"""A site's privacy budget: the total (ε, δ) it allows itself to release.

The budget lives in the **site** config (the site decides its own privacy). When
the site gives no δ, it defaults to ``1 / (10 n)`` for a site with ``n`` training
scans: well below ``1 / n``, so a mechanism that simply published one patient's
record with probability δ would be unlikely to do so for anyone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedbone.errors import Problem
from fedbone.privacy.errors import PrivacyError

__all__ = ["PrivacyBudget", "default_delta"]

_SUBJECT = "privacy budget"


def default_delta(n_training_scans: int) -> float:
    """Return the default δ ``1 / (10 n)`` for a site with ``n`` training scans.

    Parameters
    ----------
    n_training_scans
        Number of scans in the site's training split; at least 1.

    Returns
    -------
    float
        ``1 / (10 * n_training_scans)``.

    Raises
    ------
    PrivacyError
        ``no-training-scans`` when ``n_training_scans < 1``.
    """
    if isinstance(n_training_scans, bool) or n_training_scans < 1:
        raise PrivacyError(
            _SUBJECT,
            [
                Problem(
                    "no-training-scans",
                    f"the default delta 1/(10 n) needs n >= 1 training scans, got "
                    f"{n_training_scans!r}; set delta explicitly in the site config "
                    "or check that the site's training split is not empty",
                    "n_training_scans",
                )
            ],
        )
    return 1.0 / (10.0 * n_training_scans)


@dataclass(frozen=True)
class PrivacyBudget:
    """Total ε at a δ that a site allows across all its releases.

    Parameters
    ----------
    epsilon
        Total privacy loss ε; finite and > 0.
    delta
        Total failure probability δ; 0 < δ < 1.

    Raises
    ------
    PrivacyError
        Listing every invalid value (``epsilon-not-positive``,
        ``delta-out-of-range``).
    """

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        if not _is_real(self.epsilon) or not (
            math.isfinite(self.epsilon) and self.epsilon > 0
        ):
            problems.append(
                Problem(
                    "epsilon-not-positive",
                    f"epsilon must be a finite number > 0, got {self.epsilon!r}; "
                    "set the site's privacy epsilon (e.g. 8) in its config",
                    "epsilon",
                )
            )
        if not _is_real(self.delta) or not (0 < self.delta < 1):
            problems.append(
                Problem(
                    "delta-out-of-range",
                    f"delta must satisfy 0 < delta < 1, got {self.delta!r}; "
                    "leave it unset for the default 1/(10 n) or give a small "
                    "value such as 1e-5",
                    "delta",
                )
            )
        PrivacyError.raise_if_any(_SUBJECT, problems)

    @classmethod
    def for_site(
        cls, epsilon: float, delta: float | None, n_training_scans: int
    ) -> PrivacyBudget:
        """Build a site's budget, defaulting δ to ``1 / (10 n)``.

        Parameters
        ----------
        epsilon
            Total ε from the site config.
        delta
            Total δ from the site config, or ``None`` for the default.
        n_training_scans
            Number of training scans; used only when ``delta`` is ``None``.

        Returns
        -------
        PrivacyBudget
            The validated budget.
        """
        chosen = default_delta(n_training_scans) if delta is None else delta
        return cls(epsilon=epsilon, delta=chosen)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
