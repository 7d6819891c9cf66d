"""Phase ``enhance``: fast-scan enhancers trained where the scans are.

1. **Train**: for every method of ``enhance.methods`` the study's strategy
   runs federated rounds over the ``train`` sites (each trains on pairs made
   from its own standard scans; the Gaussian baseline's "weights" are its
   fitted filter widths, averaged in one round).
2. **Evaluate**: every site runs every enhancer on its validation split at
   every level and replies with sums only (quality, hottest-focus counts,
   score histograms of the study classifier).
3. **Diagnostic equivalence**: the pooled paired DeLong test of every image
   set against the standard scans of the same patients, from a second
   exchange of component sums, with a non-inferiority verdict.

The trained enhancers are kept in ``<run>/enhance/`` with the tables
(``enhance.json``); the report shows them with example triplets made at the
centre from a phantom scan of its own (never a site's scan).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from fedbone.config.profiles import profile_spec
from fedbone.enhance.phantom_examples import write_phantom_triplets
from fedbone.enhance.specs import GAUSSIAN, initial_enhancer_arrays
from fedbone.enhance.study_results import (
    SiteEnhanceReply,
    agreement_rows,
    comparison_pairs,
    equivalence_rows,
    holding_sites,
    pooled_score_histograms,
    quality_rows,
)
from fedbone.federation.kinds import PHASE_ENHANCE
from fedbone.federation.records import (
    array_signature,
    arrays_to_record,
    record_to_arrays,
)
from fedbone.federation.requests import ENHANCER_RECORD_PREFIX
from fedbone.federation.study_messages import (
    ENHANCE_SETTINGS,
    enhance_settings_json,
)
from fedbone.validation.pooled_roc import PairedComponentSums
from server.checkpoint import save_checkpoint
from server.phases.train import recorder
from server.strategies import build_strategy
from server.study_grid import StudyGrid
from server.study_run import StudyError, StudyRun

__all__ = ["enhancer_model_name", "run_enhance"]

logger = logging.getLogger(__name__)


def enhancer_model_name(method: str) -> str:
    """Name of ``method``'s federated enhancer in ``rounds.json``."""
    return f"enhancer-{method}"


def _config(run: StudyRun, extra: dict[str, Any] | None = None) -> Any:
    values: dict[str, Any] = {
        ENHANCE_SETTINGS: enhance_settings_json(run.study.enhance),
        "seed": run.study.seed,
    }
    return run.config(PHASE_ENHANCE, {**values, **(extra or {})})


def _train(run: StudyRun, method: str, nodes: list[int]) -> dict[str, np.ndarray]:
    settings = run.study.enhance
    start = initial_enhancer_arrays(method, settings, run.study.seed)
    rounds = 1 if method == GAUSSIAN else settings.rounds
    name = enhancer_model_name(method)
    grid = StudyGrid(
        run.grid,
        nodes,
        expected=array_signature(arrays_to_record(start)),
        max_examples=run.max_examples(nodes),
        on_replies=recorder(run, name),
    )
    strategy = build_strategy(run.study.training, len(nodes))
    config = _config(run, {"enhancer": method})
    logger.info(
        "training %s: %s over %s for %d round(s)",
        name,
        run.study.training.strategy.value,
        ", ".join(run.site_of(n) for n in nodes),
        rounds,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=arrays_to_record(start),
        num_rounds=rounds,
        timeout=run.study.training.round_timeout_s,
        train_config=config,
        evaluate_config=config,
    )
    if grid.rejected:
        run.results.setdefault("rejected-updates", []).extend(
            {"model": name, "site": run.site_of(r.node_id), "reason": r.reason}
            for r in grid.rejected
        )
    if not isinstance(result.arrays, ArrayRecord) or not len(result.arrays):
        raise StudyError(f"{name}: no round produced a model (every update failed)")
    return record_to_arrays(result.arrays)


def run_enhance(run: StudyRun) -> None:
    """Train every enhancer, evaluate them at every site, pool the tables."""
    if "federated" not in run.models:
        raise StudyError(
            "phase enhance scores scans with the federated classifier: run phase "
            "train first"
        )
    nodes = run.train_nodes
    if not nodes:
        raise StudyError("phase enhance: no train site answered the census")
    folder = run.run_dir / "enhance"
    folder.mkdir(parents=True, exist_ok=True)
    for method in run.study.enhance.methods:
        if method in run.enhancers:
            logger.info("%s: trained before the restart; kept", method)
            continue
        run.enhancers[method] = _train(run, method, nodes)
        np.savez(folder / f"{method}.npz", allow_pickle=False, **run.enhancers[method])
        save_checkpoint(run)
    run.write_json("rounds.json", run.rounds)
    replies, nodes_by_site = _evaluate(run)
    pairs = comparison_pairs(replies)
    results: dict[str, Any] = {
        "settings": asdict(run.study.enhance),
        "sites": [r.site for r in replies],
        "quality": quality_rows(replies),
        "agreement": agreement_rows(replies),
        "equivalence": _equivalence(run, replies, pairs, nodes_by_site),
    }
    run.results["enhance"] = results
    run.write_json("enhance/enhance.json", results)
    _log_tables(results)
    _write_examples(run, folder)


def _write_examples(run: StudyRun, folder: Path) -> None:
    """Triplets on the centre's own phantom patients (simulation: known canvas).

    In a deployment the centre does not know the sites' canvas and holds no
    scan; the sites keep their own example pages.
    """
    simulation = run.study.simulation
    if simulation is None or run.study.enhance.examples == 0:
        return
    path = write_phantom_triplets(
        run.enhancers,
        run.study.enhance,
        profile_spec(simulation.profile),
        folder / "examples.png",
        seed=run.study.seed,
    )
    logger.info("enhance: phantom examples at %s", path)


def _evaluate(run: StudyRun) -> tuple[list[SiteEnhanceReply], dict[str, int]]:
    validation = run.study.validation
    content = RecordDict(
        {"config": _config(run, {"split": validation.split, "bins": validation.bins})}
    )
    content["model-federated"] = arrays_to_record(run.models["federated"])
    for method, arrays in run.enhancers.items():
        content[f"{ENHANCER_RECORD_PREFIX}{method}"] = arrays_to_record(arrays)
    replies = run.query("enhance_evaluate", run.all_nodes, content)
    nodes_by_site = {}
    parsed = []
    for reply in replies:
        site = run.site_of(reply.metadata.src_node_id)
        records = {
            name: dict(record.items())
            for name, record in reply.content.metric_records.items()
        }
        parsed.append(SiteEnhanceReply.of(site, records))
        nodes_by_site[site] = reply.metadata.src_node_id
    if not parsed:
        raise StudyError(
            "phase enhance: no site evaluated the enhancers (see site-errors)"
        )
    return parsed, nodes_by_site


def _equivalence(
    run: StudyRun,
    replies: list[SiteEnhanceReply],
    pairs: list[tuple[str, str]],
    nodes_by_site: dict[str, int],
) -> list[dict[str, Any]]:
    """Pooled paired DeLong tests from a second exchange of component sums."""
    if not pairs:
        return []
    holders = {pair: holding_sites(replies, pair) for pair in pairs}
    names = sorted({name for pair in pairs for name in pair})
    pooled = pooled_score_histograms(replies, names)
    involved = sorted({r.site for sites in holders.values() for r in sites})
    nodes = [nodes_by_site[site] for site in involved]
    content = RecordDict(
        {"config": _config(run, {"pairs": [f"{a}|{b}" for a, b in pairs]})}
    )
    for name, histograms in pooled.items():
        counts = histograms.to_dict()
        content[f"pooled-{name}"] = MetricRecord(
            {"positives": counts["positives"], "negatives": counts["negatives"]}
        )
    answers = run.query("enhance_components", nodes, content)
    by_site = {run.site_of(a.metadata.src_node_id): a for a in answers}
    sums: dict[tuple[str, str], list[PairedComponentSums]] = {}
    pooled_pairs = {}
    for a, b in pairs:
        sites = [r.site for r in holders[(a, b)]]
        key = f"components-{a}-vs-{b}"
        got = [
            by_site[s].content.metric_records[key]
            for s in sites
            if s in by_site and key in by_site[s].content.metric_records
        ]
        if len(got) != len(sites) or not sites:
            logger.warning(
                "enhance: DeLong test of %s vs %s skipped: %d of %d sites sent "
                "their component sums",
                a,
                b,
                len(got),
                len(sites),
            )
            continue
        sums[(a, b)] = [PairedComponentSums.from_dict(dict(r)) for r in got]
        pooled_pairs[(a, b)] = (pooled[a], pooled[b])
    return equivalence_rows(
        pairs, pooled_pairs, sums, margin=run.study.enhance.noninferiority_margin
    )


def _log_tables(results: dict[str, Any]) -> None:
    for row in results["quality"]:
        logger.info(
            "enhance %s: n=%d PSNR %.2f SSIM %.3f MS-SSIM %.3f perceptual %.4f FD %.3g",
            row["image_set"],
            row["n"],
            row["psnr"],
            row["ssim"],
            row["ms-ssim"],
            row["perceptual"],
            row["fd"],
        )
    for row in results["agreement"]:
        logger.info(
            "enhance %s hottest focus: bias %.1f (%.1f to %.1f), r %.3f, n=%d",
            row["image_set"],
            row["bias"],
            row["lower"],
            row["upper"],
            row["pearson_r"],
            row["n"],
        )
    for row in results["equivalence"]:
        logger.info(
            "enhance %s: AUC %.3f vs standard %.3f, difference %.3f (lower bound "
            "%.3f, margin %.2f): %s",
            row["image_set"],
            row["auc"],
            row["auc_standard"],
            row["difference"],
            row["lower_bound"],
            row["margin"],
            "non-inferior" if row["non_inferior"] else "not shown non-inferior",
        )
