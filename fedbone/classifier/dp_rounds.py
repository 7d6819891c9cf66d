"""One federated classifier round at a site, with DP-SGD and a charged ledger.

The DP twin of :func:`fedbone.classifier.rounds.train_round`: the round's
spend (noise, Poisson rate, steps) is planned first and checked against the
site's budget (:func:`fedbone.privacy.site_spending.plan_sgd_release`); only
then does the site train, and the release is written to the ledger before the
weights are returned. With a target ε the noise is set so that the study's
``rounds`` of this training reach it; the site's ledger composes everything.

The reply carries no training loss: it is a statistic of the training scans
outside the accountant. Validation figures are of the validation split, as in
every other round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from fedbone.classifier.dp_local import plan_dp_call, train_local_dp
from fedbone.classifier.errors import TrainingError
from fedbone.classifier.local import TrainSpec, labelled_rows
from fedbone.classifier.rounds import Arrays, RoundResult
from fedbone.classifier.runtime import TrainingImages
from fedbone.errors import Problem
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.parameters import load_arrays, state_to_arrays
from fedbone.privacy.dp_sgd import DpSgdSpec, make_dp_compatible
from fedbone.privacy.ledger import PrivacyLedger
from fedbone.privacy.site_spending import plan_sgd_release

__all__ = ["DpRoundSpec", "train_round_dp"]


@dataclass(frozen=True)
class DpRoundSpec:
    """The study's DP-SGD request for one training (noise xor target ε)."""

    noise_multiplier: float | None
    target_epsilon: float | None
    max_grad_norm: float
    clipping: str
    rounds: int


def _finite(value: float | None) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan


def train_round_dp(
    cache: TrainingImages,
    task: str,
    spec: ClassifierSpec,
    train_spec: TrainSpec,
    global_arrays: Arrays,
    dp_round: DpRoundSpec,
    ledger: PrivacyLedger,
    *,
    run_name: str,
    phase: str,
) -> RoundResult:
    """Train the received model with DP-SGD if the site's budget allows it.

    Returns
    -------
    RoundResult
        Weights (dtypes as received) and ``num-examples``, ``val-loss``,
        ``val-auc``, ``epochs``, ``seconds``, ``dp-epsilon`` (the site's
        cumulative DP-SGD ε after this round), ``dp-delta`` and
        ``dp-noise-multiplier``.

    Raises
    ------
    PrivacyError
        For a model DP-SGD cannot train (batch norm) -- before anything runs.
    BudgetExceeded
        When the round would take the site over its budget -- nothing is
        trained and nothing recorded.
    """
    model = build_classifier(spec)
    load_arrays(model, global_arrays)
    make_dp_compatible(model, fix=False)
    n_examples = len(labelled_rows(cache, task, "train")[0])
    if n_examples == 0:
        raise TrainingError(
            "train",
            [Problem("no-training-scans", f"no training scan labelled for {task}")],
        )
    dp = DpSgdSpec(
        noise_multiplier=dp_round.noise_multiplier,
        target_epsilon=dp_round.target_epsilon,
        max_grad_norm=dp_round.max_grad_norm,
        delta=ledger.budget.delta,
        clipping=dp_round.clipping,
    )
    probe = replace(dp, noise_multiplier=1.0, target_epsilon=None)
    steps_per_round = plan_dp_call(n_examples, train_spec, probe, None).steps
    plan = plan_dp_call(n_examples, train_spec, dp, steps_per_round * dp_round.rounds)
    release = plan_sgd_release(
        ledger, plan.noise_multiplier, plan.sample_rate, plan.steps
    )
    fixed = replace(dp, noise_multiplier=plan.noise_multiplier, target_epsilon=None)
    result = train_local_dp(
        model, cache, task, train_spec, fixed, state=release.before, planned_steps=None
    )
    release.commit(run=run_name, phase=phase, kind="classifier-round")
    trained = state_to_arrays(model)
    arrays = {
        key: value.astype(np.asarray(global_arrays[key]).dtype, copy=False)
        for key, value in trained.items()
    }
    metrics: dict[str, float | int] = {
        "num-examples": int(result.n_examples),
        "val-loss": _finite(result.val_loss),
        "val-auc": _finite(result.val_auc),
        "epochs": float(result.epochs_run),
        "seconds": float(result.seconds),
        "dp-epsilon": release.epsilon,
        "dp-delta": release.delta,
        "dp-noise-multiplier": plan.noise_multiplier,
    }
    return RoundResult(arrays, metrics, None)
