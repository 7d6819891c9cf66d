"""Phase ``gan``: conditional GANs trained where the scans are.

``local`` mode: each GAN site trains its own generator on its own scans, with
checkpoints and model selection by Fréchet distance on its held-out real scans;
only the selection figures and the checkpoint's sha256 come back (the
generator stays at the site, which synthesises and audits in phase
``synthesize``).

``federated`` mode: Flower's FedAvg over the GAN sites averages generator,
discriminator and EMA generator after every round of ``steps // rounds`` local
steps (weighted by each site's training scans). After each round every site
scores the global EMA generator on its own held-out scans (FD, KID,
precision/recall); each round's global model is a checkpoint, kept in the run
folder, and the round with the lowest mean *relative* FD (each site's FD
divided by its mean over the rounds, so sites whose feature spaces differ in
scale weigh alike) is selected. Phase ``synthesize`` sends that generator to
the sites, which curate and audit its images, and cross-audit each other's.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedbone.federation.kinds import PHASE_GAN
from fedbone.federation.records import (
    array_signature,
    arrays_to_record,
    record_to_arrays,
)
from fedbone.federation.study_messages import GAN_SETTINGS, metric_floats, settings_json
from fedbone.generative.arrays import arrays_digest, trainer_arrays
from fedbone.generative.gan_results import (
    GanResults,
    GanSelectionError,
    SiteGanResult,
    fd_by_site,
    federated_gan_results,
    select_generator_round,
)
from fedbone.generative.site_gan import gan_trainer_for
from server.phases.train import recorder, train_config
from server.study_grid import StudyGrid
from server.study_run import StudyError, StudyRun

__all__ = ["FEDERATED_GAN", "gan_nodes", "run_gan", "select_round"]

#: Model name of the federated GAN in ``rounds.json`` and the run folder.
FEDERATED_GAN = "gan-federated"

logger = logging.getLogger(__name__)


def gan_extra(run: StudyRun) -> dict[str, Any]:
    """Return the GAN settings (and the discriminator's DP request) to send."""
    dp = run.study.dp.gan
    private = dp.to_config("dp-gan") if dp is not None else {}
    return {GAN_SETTINGS: settings_json(run.study.gan), **private}


def gan_nodes(run: StudyRun) -> list[int]:
    """Nodes that train a GAN: ``gan.sites``, or every train site."""
    sites = run.study.gan.sites
    if not sites:
        return run.train_nodes
    return run.nodes_of(sites, what="gan.sites")


def run_gan(run: StudyRun) -> None:
    """Train the configured GANs; record each site's selected checkpoint."""
    if run.study.gan.mode == "federated":
        _run_federated_gan(run)
        return
    nodes = gan_nodes(run)
    config = train_config(run, PHASE_GAN, gan_extra(run))
    replies = run.query("gan_train", nodes, RecordDict({"config": config}))
    results = GanResults(mode=run.study.gan.mode)
    for reply in replies:
        site = run.site_of(reply.metadata.src_node_id)
        result = SiteGanResult(
            metrics=metric_floats(reply.content.metric_records["metrics"]),
            provenance={
                key: str(value)
                for key, value in reply.content.config_records["provenance"].items()
            },
        )
        run.generators[site] = result.provenance
        results.sites[site] = result
        logger.info(
            "GAN at %s: best FD %.4g at step %d (checkpoint %s)",
            site,
            result.metrics.get("best-fd", float("nan")),
            int(result.metrics.get("best-step", -1)),
            result.provenance.get("checkpoint-sha256", "?")[:12],
        )
    run.gan_results = results
    run.write_json("gan.json", results.to_json())
    if not run.generators:
        raise StudyError("phase gan: no site trained a GAN (see site-errors)")


def _initial_arrays(run: StudyRun, nodes: list[int]) -> dict[str, np.ndarray]:
    canvases = {run.sites[n].canvas for n in nodes if n in run.sites}
    if len(canvases) != 1 or not next(iter(canvases)):
        raise StudyError(
            f"federated GAN: the GAN sites report canvases {sorted(canvases)}; "
            "every site needs the same preprocessing (and a census first)"
        )
    height, width = (int(v) for v in next(iter(canvases)).split("x"))
    trainer = gan_trainer_for(
        run.study.gan, height, width, seed=run.study.seed, device="cpu"
    )
    return trainer_arrays(trainer)


def select_round(
    per_site_fd: dict[str, dict[int, float]],
) -> tuple[int, dict[int, float]]:
    """Return the round with the lowest mean relative FD, and every round's score.

    See :func:`~fedbone.generative.gan_results.select_generator_round`.

    Raises
    ------
    StudyError
        When no site reported a finite FD in any round.
    """
    try:
        return select_generator_round(per_site_fd)
    except GanSelectionError as error:
        raise StudyError(str(error)) from error


def _run_federated_gan(run: StudyRun) -> None:
    settings = run.study.gan
    nodes = gan_nodes(run)
    start = _initial_arrays(run, nodes)
    rounds_dir = run.run_dir / "gan" / "rounds"
    rounds_dir.mkdir(parents=True, exist_ok=True)

    def keep_round(number: int, arrays: ArrayRecord) -> MetricRecord | None:
        if number >= 1:
            np.savez(
                rounds_dir / f"round-{number}.npz",
                allow_pickle=False,
                **record_to_arrays(arrays),
            )
        return None

    config = train_config(run, PHASE_GAN, gan_extra(run))
    grid = StudyGrid(
        run.grid,
        nodes,
        expected=array_signature(arrays_to_record(start)),
        max_examples=run.max_examples(nodes),
        on_replies=recorder(run, FEDERATED_GAN),
    )
    n = len(nodes)
    strategy = FedAvg(min_train_nodes=n, min_evaluate_nodes=n, min_available_nodes=n)
    logger.info(
        "federated GAN over %s: %d rounds of %d local steps",
        ", ".join(run.site_of(node) for node in nodes),
        settings.rounds,
        max(1, settings.steps // settings.rounds),
    )
    strategy.start(
        grid=grid,
        initial_arrays=arrays_to_record(start),
        num_rounds=settings.rounds,
        train_config=config,
        evaluate_config=config,
        evaluate_fn=keep_round,
    )
    _record_rejections(run, grid)
    per_site = fd_by_site(run.rounds, FEDERATED_GAN)
    best, scores = select_round(per_site)
    generator_file = rounds_dir / f"round-{best}.npz"
    arrays = dict(np.load(generator_file, allow_pickle=False))
    digest = arrays_digest(arrays)
    run.federated_generator = (best, arrays)
    results = federated_gan_results(
        [run.site_of(node) for node in nodes],
        per_site,
        (best, scores),
        rounds=settings.rounds,
        steps=settings.steps,
        generator=(digest, str(generator_file)),
    )
    for site, result in results.sites.items():
        run.generators[site] = dict(result.provenance)
    run.gan_results = results
    run.write_json("gan.json", results.to_json())
    run.write_json("rounds.json", run.rounds)
    logger.info(
        "federated GAN: round %d selected (mean relative FD %.3f), generator %s",
        best,
        scores[best],
        digest[:12],
    )


def _record_rejections(run: StudyRun, grid: StudyGrid) -> None:
    run.results.setdefault("rejected-updates", []).extend(
        {"model": FEDERATED_GAN, "site": run.site_of(r.node_id), "reason": r.reason}
        for r in grid.rejected
    )
