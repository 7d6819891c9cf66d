"""Do the federated Cox estimators recover the phantom's planted hazard ratios?

Twenty cohort seeds (0..19) x two groupings x two endpoints. Each run plans the
phantom sites with follow-up (no images), keeps the first scan per patient and
runs the ``outcomes`` phase computation (:mod:`fedbone.outcomes.planted`):
site-stratified federated Cox (crude and adjusted for age and sex), the
site-stratified log-rank test from grid counts, and per-site Cox fits pooled by
meta-analysis. Groupings: the true label ("oracle") and a simulated imperfect
classifier (sensitivity 0.85, specificity 0.90). Endpoints: death grouped by the
bm label at sites A and D; heart-failure hospitalisation grouped by the ca label
at sites B, C and D::

    .venv/bin/python bench/outcome_hazard_ratios.py

Writes ``bench/results/outcome_hazard_ratios.jsonl`` (one line per
seed/grouping/endpoint) and ``outcome_hazard_ratios.md`` (summary table).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import machine_info

from fedbone.data.phantom.outcomes import DEATH, HEART_FAILURE, EndpointModel
from fedbone.outcomes.planted import (
    HazardRatioEstimate,
    PlantedRecovery,
    plan_outcome_cohorts,
    recover_hazard_ratios,
)
from fedbone.outcomes.survival_grid import TimeGrid

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

SEEDS = range(20)
SCALE = 0.5
MIN_SCANS = 200
SITES: dict[str, tuple[str, ...]] = {
    DEATH.name: ("A", "D"),
    HEART_FAILURE.name: ("B", "C", "D"),
}
# Sites B and C hold ~75 CA-positive patients each: a weekly grid would put
# nearly one patient per occupied point, which their disclosure rule refuses.
GRIDS: dict[str, TimeGrid] = {
    DEATH.name: TimeGrid(resolution_days=7.0),
    HEART_FAILURE.name: TimeGrid(resolution_days=91.0),
}
GROUPINGS: dict[str, tuple[float, float]] = {
    "oracle": (1.0, 1.0),
    "classifier sens 0.85 / spec 0.90": (0.85, 0.90),
}


def _run_one(
    seed: int, grouping: str, endpoint: EndpointModel
) -> tuple[dict[str, object], PlantedRecovery]:
    sensitivity, specificity = GROUPINGS[grouping]
    started = time.perf_counter()
    cohorts = plan_outcome_cohorts(
        endpoint.label,
        SITES[endpoint.name],
        seed=seed,
        scale=SCALE,
        min_scans=MIN_SCANS,
        sensitivity=sensitivity,
        specificity=specificity,
    )
    recovery = recover_hazard_ratios(cohorts, endpoint, grid=GRIDS[endpoint.name])
    settings: dict[str, object] = {
        "seed": seed,
        "grouping": grouping,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "sites": list(SITES[endpoint.name]),
        "patients_per_site": {c.site: c.n_patients for c in cohorts},
        "grid_days": GRIDS[endpoint.name].resolution_days,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return settings, recovery


def _summary_row(grouping: str, runs: list[PlantedRecovery]) -> str:
    def covered(estimates: list[HazardRatioEstimate]) -> str:
        return f"{sum(e.covers_planted for e in estimates)}/{len(estimates)}"

    adjusted = [r.adjusted for r in runs]
    crude = [r.crude for r in runs]
    meta = [r.meta_adjusted for r in runs]
    gaps = [
        abs(math.log(a.hazard_ratio) - math.log(m.hazard_ratio))
        for a, m in zip(adjusted, meta, strict=True)
    ]
    inside = sum(
        m.low <= a.hazard_ratio <= m.high for a, m in zip(adjusted, meta, strict=True)
    )
    return (
        f"| {runs[0].endpoint} | {runs[0].planted_hazard_ratio} | {grouping} "
        f"| {covered(adjusted)} | {covered(crude)} "
        f"| {statistics.median(e.hazard_ratio for e in adjusted):.2f} "
        f"| {statistics.median(e.hazard_ratio for e in crude):.2f} "
        f"| {statistics.mean(e.high / e.low for e in adjusted):.2f} "
        f"| {statistics.median(gaps):.3f} | {inside}/{len(runs)} "
        f"| {statistics.mean(r.n_events for r in runs):.0f} |"
    )


_EXPLANATION = """
Columns: *adjusted* / *crude* coverage = seeds whose 95% CI of the site-stratified
federated Cox model (group + age + male / group only) contains the planted hazard
ratio; median HRs over seeds; CI width = mean ratio upper/lower bound of the
adjusted CI; strat vs meta = median |log HR| difference between the stratified
adjusted estimate and the inverse-variance meta-analysis of per-site adjusted
fits, and the number of seeds where the stratified estimate lies inside the meta
CI (sites whose own fit separates are left out of the meta-analysis).

Why the crude HR can differ from the planted one: the phantom plants a
*conditional* hazard ratio (given age and sex). Amyloidosis patients are older
(mean 78 vs 66 years) and mostly men, and both raise the heart-failure hazard, so
the crude HR for the ca group absorbs the age and sex effects and is confounded
upwards (far above 5.43). For death the bm group is only slightly older, so crude
and adjusted are close. Even without confounding the crude HR would not equal the
conditional one: the Cox HR is non-collapsible, so omitting prognostic covariates
biases it towards 1.

Why the imperfect classifier's HR is lower: with sensitivity 0.85 and specificity
0.90, true positives are mixed into the predicted-negative group and true
negatives into the predicted-positive group; the predicted groups' hazards move
towards each other and the HR of the predicted label is attenuated towards 1
(non-differential misclassification). The planted HR is an effect of the *true*
label, so low coverage in that setting is expected, not a failure of the
estimators; it is what the paper's HR of a predicted label would suffer too.
"""


def _markdown(
    results: list[tuple[dict[str, object], PlantedRecovery]],
    machine: dict[str, object],
) -> str:
    lines = [
        "# Planted hazard ratios recovered by the federated outcome estimators",
        "",
        f"Phantom cohorts (planned, not rendered), seeds {SEEDS.start}.."
        f"{SEEDS.stop - 1}, scale {SCALE} with min_scans {MIN_SCANS} (scans per "
        "site = max(200, half the paper's cohort): A 4585, D 1605, B and C 200), "
        "first scan per patient. Death grouped by the bm label at sites A and D "
        "(7-day grid); heart-failure hospitalisation grouped by the ca label at "
        "sites B, C and D (91-day grid: B and C are too small for a weekly grid "
        "under their disclosure rule). Efron ties, 95% Wald CIs.",
        "",
        "| endpoint | planted HR | grouping | adjusted CI covers | crude CI covers "
        "| median adjusted HR | median crude HR | mean CI width (hi/lo) "
        "| strat vs meta median abs log diff | strat in meta CI | mean events |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for endpoint in (DEATH.name, HEART_FAILURE.name):
        for grouping in GROUPINGS:
            runs = [
                recovery
                for settings, recovery in results
                if recovery.endpoint == endpoint and settings["grouping"] == grouping
            ]
            lines.append(_summary_row(grouping, runs))
    seconds = sum(float(str(settings["seconds"])) for settings, _ in results)
    lines += [
        "",
        f"Total {seconds:.1f} s for {len(results)} runs (planning + every estimator).",
        _EXPLANATION,
        "Machine:",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run every seed, grouping and endpoint; write both results files."""
    results = [
        _run_one(seed, grouping, endpoint)
        for seed in SEEDS
        for grouping in GROUPINGS
        for endpoint in (DEATH, HEART_FAILURE)
    ]
    machine = machine_info()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "outcome_hazard_ratios.jsonl").open("w") as handle:
        for settings, recovery in results:
            row = settings | asdict(recovery) | {"machine": machine}
            handle.write(json.dumps(row) + "\n")
    markdown = _markdown(results, machine)
    (RESULTS / "outcome_hazard_ratios.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
