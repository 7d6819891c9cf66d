"""Phase ``train``: the federated model, then the baselines it is compared with.

- ``federated``: the configured Flower strategy over every ``train`` site;
- ``local-<site>`` (baseline ``local``): the same strategy and rounds over one
  site alone, i.e. that site training by itself through the same framework;
- ``pooled`` (baseline ``pooled``, simulation only): one model trained
  centrally on the concatenated training data of the train sites, for the
  same number of epochs — the upper bound federated learning approximates;
- ``cv-ensemble`` (``cross_validation.folds`` k > 0): Haberl et al.'s
  cross-validated ensemble. Fold model ``cv-j`` is federated training over
  every train site with each site's fold ``j`` held out; after every round the
  sites score the new global model on their held-out folds, and the round with
  the lowest example-weighted loss is kept (training stops
  ``early_stopping_rounds`` rounds after the last improvement). The k fold
  models travel and are validated as one model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message

from fedbone.classifier.folds import BestRound, pack_ensemble
from fedbone.classifier.pooled import train_pooled_baseline, train_spec_for
from fedbone.classifier.public_pretraining import (
    PhantomPretraining,
    pretrain_on_phantoms,
)
from fedbone.config.profiles import PROFILES
from fedbone.data.spec import PreprocessSpec, ViewMode
from fedbone.federation.records import (
    array_signature,
    arrays_to_record,
    record_to_arrays,
)
from fedbone.federation.study_messages import metric_floats
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.parameters import state_to_arrays
from fedbone.privacy.study_privacy import privacy_by_site
from server.checkpoint import save_checkpoint
from server.strategies import SecureFedAvg, build_strategy
from server.study_grid import StudyGrid
from server.study_run import StudyError, StudyRun

__all__ = ["initial_arrays", "recorder", "run_train", "train_config"]

logger = logging.getLogger(__name__)


def classifier_spec(run: StudyRun) -> ClassifierSpec:
    """Return the study's classifier as the library describes it."""
    model = run.study.model
    return ClassifierSpec(
        architecture=Architecture(model.architecture),
        norm=Norm(model.norm),
        in_channels=model.in_channels,
        pretrained_weights=Path(model.pretrained_weights)
        if model.pretrained_weights
        else None,
        pretrained_sha256=model.pretrained_sha256,
    )


def initial_arrays(run: StudyRun) -> dict[str, np.ndarray]:
    """Return the seeded initial global model every site starts from.

    With ``model.pretrain_phantom_epochs``, that model is first trained here,
    at the centre, on a phantom cohort of its own prepared as the sites
    prepare their scans (no site data, no budget spent).
    """
    import torch

    epochs = run.study.model.pretrain_phantom_epochs
    if epochs:
        t = run.study.training
        return pretrain_on_phantoms(
            classifier_spec(run),
            _sites_preprocessing(run),
            run.study.task,
            PhantomPretraining(epochs=epochs),
            train_spec_for(t, epochs=epochs, seed=run.study.seed),
            seed=run.study.seed,
            work_dir=run.study.runs_dir / "pretrained",
            workers=run.study.simulation.workers if run.study.simulation else 1,
        )
    torch.manual_seed(run.study.seed)
    return state_to_arrays(build_classifier(classifier_spec(run)))


def _sites_preprocessing(run: StudyRun) -> PreprocessSpec:
    """Return the standard preprocessing whose fingerprint the sites reported."""
    reported = {site.spec_fingerprint for site in run.sites.values()}
    for profile in PROFILES.values():
        for views in ViewMode:
            spec = replace(profile, views=views)
            if {spec.fingerprint()} == reported:
                return spec
    raise StudyError(
        "phantom pretraining prepares its cohort as the sites prepare scans, but "
        "their preprocessing is not one of the standard profiles "
        f"({', '.join(PROFILES)}); set model.pretrain_phantom_epochs: 0"
    )


def train_config(
    run: StudyRun, phase: str = "train", extra: Mapping[str, Any] | None = None
) -> ConfigRecord:
    """Return the config record of local classifier training (plus ``extra``).

    Parameters
    ----------
    run
        The study run.
    phase
        The phase the messages belong to (DP-SGD settings go to ``train`` only).
    extra
        Further settings (model name, round offset, synthetic mix...).
    """
    t = run.study.training
    dp = run.study.dp.classifier
    private = dp.to_config() if dp is not None and phase == "train" else {}
    return run.config(
        phase,
        {
            **private,
            "rounds": t.rounds,
            **(extra or {}),
            "local-epochs": t.local_epochs,
            "batch-size": t.batch_size,
            "lr": t.lr,
            "weight-decay": t.weight_decay,
            "sampling": t.sampling,
            "augment": t.augment,
            "early-stopping-patience": t.early_stopping_patience or 0,
            "seed": run.study.seed,
        },
    )


def recorder(
    run: StudyRun, model_name: str, rounds_done: int = 0
) -> Callable[[list[Message]], None]:
    """Return a grid callback appending each reply's metrics to ``run.rounds``.

    Parameters
    ----------
    run
        The study run.
    model_name
        The model the replies train or evaluate.
    rounds_done
        Rounds completed before a restart (numbering goes on).
    """
    rounds = {"train": rounds_done, "evaluate": rounds_done}

    def record(replies: list[Message]) -> None:
        if not replies:
            return
        # train.secagg (a secure round's masked training) counts as train
        kind = replies[0].metadata.message_type.partition(".")[0]
        if kind not in rounds:
            return
        rounds[kind] += 1
        for reply in replies:
            if reply.has_error():
                _record_site_error(run, model_name, rounds[kind], reply)
                continue
            record = next(iter(reply.content.metric_records.values()), None)
            metrics = metric_floats(record) if record is not None else {}
            entry = {
                "model": model_name,
                "round": rounds[kind],
                "kind": kind,
                "site": run.site_of(reply.metadata.src_node_id),
            }
            entry.update(metrics)
            run.rounds.append(entry)
            logger.info(
                "%s round %d %s %s: %s",
                model_name,
                rounds[kind],
                kind,
                entry["site"],
                ", ".join(
                    f"{k}={v:.4g}" for k, v in metrics.items() if k != "num-examples"
                ),
            )

    return record


def _record_site_error(
    run: StudyRun, model_name: str, number: int, reply: Message
) -> None:
    """Keep a site's refusal or failure (e.g. an exhausted privacy budget)."""
    reason = str(reply.error.reason)
    site = run.site_of(reply.metadata.src_node_id)
    logger.warning("%s round %d: %s failed: %s", model_name, number, site, reason)
    run.results.setdefault("site-errors", []).append(
        {"site": site, "action": f"{model_name} round {number}", "reason": reason}
    )
    if "budget-exceeded" in reason:
        run.results.setdefault("budget-refusals", []).append(
            {"site": site, "model": model_name, "round": number}
        )


class _StoppedEarlyError(Exception):
    """Raised by the round callback to end a fold model's training."""


def _train_over(
    run: StudyRun,
    name: str,
    nodes: list[int],
    start: dict[str, np.ndarray],
    extra: Mapping[str, Any] | None = None,
    best: BestRound | None = None,
) -> dict[str, np.ndarray]:
    if name in run.models:
        logger.info("%s: trained before the restart; kept", name)
        return run.models[name]
    settings = run.study.training
    done, arrays = run.progress.get(name, (0, start))
    bounds = run.max_examples(nodes)
    grid = StudyGrid(
        run.grid,
        nodes,
        expected=array_signature(arrays_to_record(start)),
        max_examples=bounds,
        on_replies=recorder(run, name, done),
    )
    strategy = build_strategy(settings, len(nodes), max_examples=bounds)
    logger.info(
        "training %s: %s over %s for %d rounds%s",
        name,
        settings.strategy.value,
        ", ".join(run.site_of(n) for n in nodes),
        settings.rounds,
        f" (resuming after round {done})" if done else "",
    )
    if done >= settings.rounds:
        return arrays
    fold_keys = {k: v for k, v in (extra or {}).items() if k.startswith("cv-")}
    try:
        result = strategy.start(
            grid=grid,
            initial_arrays=arrays_to_record(arrays),
            num_rounds=settings.rounds - done,
            timeout=settings.round_timeout_s,
            train_config=train_config(
                run, extra={**(extra or {}), "model": name, "round-offset": done}
            ),
            evaluate_config=run.config(
                "train",
                {"model": name, "round-offset": done, "seed": run.study.seed}
                | fold_keys,
            ),
            evaluate_fn=_checkpoint_each_round(run, name, done, best),
        )
    except _StoppedEarlyError:
        result = None
    run.progress.pop(name, None)
    if isinstance(strategy, SecureFedAvg):
        run.results.setdefault("secure-aggregation", []).extend(
            {"model": name, **report.to_json(run.site_of)}
            for report in strategy.reports
        )
    if grid.rejected:
        run.results.setdefault("rejected-updates", []).extend(
            {"model": name, "site": run.site_of(r.node_id), "reason": r.reason}
            for r in grid.rejected
        )
    if best is not None:
        return _best_round(run, name, best)
    if (
        result is None
        or not isinstance(result.arrays, ArrayRecord)
        or not len(result.arrays)
    ):
        raise StudyError(f"{name}: no round produced a model (every update failed)")
    return record_to_arrays(result.arrays)


def _best_round(run: StudyRun, name: str, best: BestRound) -> dict[str, np.ndarray]:
    """Return the kept round's model and record which round it was."""
    if best.best_arrays is None:
        raise StudyError(
            f"{name}: no round gave a held-out loss; the sites' folds may be "
            "too small or every round failed"
        )
    logger.info(
        "%s: kept round %d of %d (held-out loss %.4f)",
        name,
        best.best_round,
        max(best.losses),
        best.best_loss,
    )
    run.results.setdefault("fold-models", []).append(
        {
            "model": name,
            "kept-round": best.best_round,
            "rounds-run": max(best.losses),
            "held-out-loss": best.best_loss,
            "losses": {str(k): v for k, v in sorted(best.losses.items())},
        }
    )
    return best.best_arrays


def _checkpoint_each_round(
    run: StudyRun, name: str, done: int, best: BestRound | None = None
) -> Callable[[int, ArrayRecord], None]:
    """Strategy callback: after every round, checkpoint the global model.

    With ``best`` (a fold model), the round's held-out losses, which the
    sites sent in this round's evaluation just before this call, update the
    early stopping; when it says stop, training ends here.
    """

    def checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        if server_round == 0:  # called once before the first round
            return
        as_arrays = record_to_arrays(arrays)
        run.progress[name] = (done + server_round, as_arrays)
        save_checkpoint(run)
        if best is None:
            return
        number = done + server_round
        losses = [
            (float(entry.get("val-loss", float("nan"))), int(entry["num-examples"]))
            for entry in run.rounds
            if entry["model"] == name
            and entry["kind"] == "evaluate"
            and entry["round"] == number
            and "num-examples" in entry
        ]
        if best.update(number, losses, as_arrays):
            raise _StoppedEarlyError

    return checkpoint


def run_train(run: StudyRun) -> None:
    """Train the federated model and the configured baselines."""
    start = initial_arrays(run)
    run.models["federated"] = _train_over(run, "federated", run.train_nodes, start)
    _apply_budget_policy(run)
    if "local" in run.study.baselines:
        for node in run.train_nodes:
            _train_baseline(run, f"local-{run.site_of(node)}", [node], start)
    if "pooled" in run.study.baselines and "pooled" not in run.models:
        if run.sim_site_configs is None:
            logger.warning("baseline 'pooled' needs simulation; skipped")
        else:
            train_sites = {run.site_of(n) for n in run.train_nodes}
            run.models["pooled"] = train_pooled_baseline(
                site_configs=[Path(p) for p in run.sim_site_configs],
                site_ids=train_sites,
                spec=classifier_spec(run),
                start=start,
                task=run.study.task,
                settings=run.study.training,
                seed=run.study.seed,
                work_dir=run.run_dir,
            )
            save_checkpoint(run)
    _train_with_synthetic(run, start)
    _train_cv_ensemble(run, start)
    models_dir = run.run_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    for name, arrays in run.models.items():
        np.savez(models_dir / f"{name}.npz", allow_pickle=False, **arrays)
    run.write_json("rounds.json", run.rounds)
    if run.study.dp.enabled:
        run.results["privacy"] = privacy_by_site(run.rounds)
        run.write_json("privacy.json", run.results["privacy"])


#: The cross-validated ensemble's name; its fold models are ``cv-1`` .. ``cv-k``.
ENSEMBLE = "cv-ensemble"


def _train_cv_ensemble(run: StudyRun, start: dict[str, np.ndarray]) -> None:
    """Train the k fold models and keep them as one model, ``cv-ensemble``.

    While training, each finished fold model is kept in ``run.models`` (so a
    restart resumes after it); once all are trained they are packed into the
    ensemble and leave ``run.models``, so validation scores the ensemble and
    not its members one by one.
    """
    folds = run.study.cross_validation.folds
    if folds == 0 or ENSEMBLE in run.models:
        return
    patience = run.study.cross_validation.early_stopping_rounds
    names = [f"cv-{j}" for j in range(1, folds + 1)]
    for j, name in enumerate(names):
        if name in run.models:
            continue
        # a fold model resumes from scratch: the early stopping's best round
        # is not in the checkpoint
        run.progress.pop(name, None)
        run.models[name] = _train_over(
            run,
            name,
            run.train_nodes,
            start,
            {"cv-fold": j, "cv-folds": folds},
            best=BestRound(patience),
        )
        save_checkpoint(run)
        _apply_budget_policy(run)
    run.models[ENSEMBLE] = pack_ensemble([run.models.pop(name) for name in names])
    save_checkpoint(run)


def _apply_budget_policy(run: StudyRun) -> None:
    """Stop the study when a site's budget ran out and the study says so."""
    refusals = run.results.get("budget-refusals", [])
    if refusals and run.study.dp.on_budget_exhausted == "stop":
        sites = sorted({r["site"] for r in refusals})
        raise StudyError(
            f"privacy budget exhausted at {', '.join(sites)}; the study stops "
            "(dp.on_budget_exhausted: stop). Use 'continue' to go on without "
            "those sites, or ask them to raise privacy.budget"
        )


def _train_baseline(
    run: StudyRun,
    name: str,
    nodes: list[int],
    start: dict[str, np.ndarray],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Train one comparison model; a model no site could train is reported."""
    try:
        run.models[name] = _train_over(run, name, nodes, start, extra)
    except StudyError as error:
        # One model the sites cannot train (a pool lacking a class, a budget
        # spent) must not sink the study: report it, train the others.
        logger.error("%s not trained: %s", name, error)
        run.results.setdefault("skipped-models", []).append(
            {"model": name, "site": run.site_of(nodes[0]), "reason": str(error)}
        )
    _apply_budget_policy(run)


def _train_with_synthetic(run: StudyRun, start: dict[str, np.ndarray]) -> None:
    """Train ``local-<site>-syn<r>`` (and ``-synonly``) models on mixed data.

    Each such model is the site training alone, exactly like its ``local-<site>``
    baseline, except that the pooled synthetic images it received in phase
    ``synthesize`` are mixed in at the ratio (class prevalence kept).
    """
    wanted = run.study.synthetic_training.model_names()
    if not wanted:
        return
    if run.pool is None:
        raise StudyError(
            "synthetic_training needs a synthetic pool: put phase synthesize "
            "(after gan) before train"
        )
    for name, (site, ratio) in wanted.items():
        (node,) = run.nodes_of([site], what="synthetic_training.sites")
        extra = {
            "synthetic-ratio": 0.0 if ratio is None else float(ratio),
            "synthetic-only": ratio is None,
        }
        _train_baseline(run, name, [node], start, extra)
