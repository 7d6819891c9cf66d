"""DP that keeps its utility: pooled external AUC against epsilon, with the levers.

Issue #5 measured the DP profile (``configs/dp.yaml``: small CNN, group norm,
10 rounds x 2 epochs, batch 128, DP-SGD at target ε = 8) at pooled external
AUC 0.449 against 0.781 without DP. This benchmark applies two of the known
levers and records the curve:

- **fewer weights** (``small-cnn-narrow``, half the widths, about a quarter of
  the weights): DP-SGD adds the same noise per step to every weight;
- **pretraining that costs no budget** (``model.pretrain_phantom_epochs``):
  the centre trains the model first on a phantom cohort of its own
  (:mod:`fedbone.classifier.public_pretraining`), then the sites fine-tune
  with DP-SGD.

Each setting is one whole study through Flower's simulation runtime with the
phantom hospitals' budgets set to the target ε (their ledgers reset first:
phantom sites). Each call appends lines to ``bench/results/dp_utility_curve.jsonl``
and rewrites ``dp_utility_curve.md`` from all lines::

    .venv/bin/python bench/dp_utility_curve.py                  # the whole curve
    .venv/bin/python bench/dp_utility_curve.py --epsilon 8 --no-pretrain
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import machine_info
from dp_utility import _fresh_ledgers

from fedbone.config.privacy import DpSettings
from fedbone.config.study import StudyConfig, load_study_config
from server.simulation import simulate_study

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
STORE = RESULTS / "dp_utility_curve.jsonl"
EPSILONS = (1.0, 2.0, 4.0, 8.0, 16.0)
PRETRAIN_EPOCHS = 20


def _study(
    epsilon: float | None,
    *,
    narrow: bool,
    pretrain: bool,
    layers: str = "all",
    lr: float | None = None,
) -> StudyConfig:
    study = load_study_config(ROOT / "configs" / "dp.yaml")
    if lr is not None:
        study = replace(study, training=replace(study.training, lr=lr))
    assert study.simulation is not None and study.dp.classifier is not None
    model = replace(
        study.model,
        architecture="small-cnn-narrow" if narrow else study.model.architecture,
        pretrain_phantom_epochs=PRETRAIN_EPOCHS if pretrain else 0,
    )
    tag = f"{'narrow' if narrow else 'wide'}-{'pre' if pretrain else 'scratch'}"
    if epsilon is None:
        return replace(
            study,
            name=f"dp-curve-nondp-{tag}",
            model=model,
            dp=DpSettings(),
            simulation=replace(study.simulation, site_epsilon=None),
        )
    return replace(
        study,
        name=f"dp-curve-eps{epsilon:g}-{tag}",
        model=model,
        dp=replace(
            study.dp,
            classifier=replace(
                study.dp.classifier, target_epsilon=epsilon, train_layers=layers
            ),
        ),
        simulation=replace(study.simulation, site_epsilon=epsilon),
    )


def run_setting(
    epsilon: float | None,
    *,
    narrow: bool,
    pretrain: bool,
    layers: str = "all",
    lr: float | None = None,
) -> dict[str, Any]:
    """Run one study; return its line."""
    study = _study(epsilon, narrow=narrow, pretrain=pretrain, layers=layers, lr=lr)
    assert study.simulation is not None
    if epsilon is not None:
        _fresh_ledgers(study.simulation.sites_dir)
    started = time.perf_counter()
    outcome = simulate_study(study)
    seconds = time.perf_counter() - started
    results = json.loads((outcome.run_dir / "results.json").read_text())
    external = results["pooled_external"]["federated"]
    return {
        "epsilon": epsilon,
        "architecture": study.model.architecture,
        "pretrain_phantom_epochs": study.model.pretrain_phantom_epochs,
        "train_layers": "all" if epsilon is None else layers,
        "lr": study.training.lr,
        "external_auc": external["auc"],
        "external_auc_ci": [external["auc_low"], external["auc_high"]],
        "site_epsilon": {
            site: spent.get("epsilon") for site, spent in results["privacy"].items()
        },
        "budget_refusals": len(results.get("budget_refusals", [])),
        "seconds": seconds,
        "run_dir": str(outcome.run_dir.relative_to(ROOT)),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
    }


def pretrained_only() -> dict[str, Any]:
    """Score the centre's phantom-pretrained model as it is (no site data, ε 0).

    Simulation only: the benchmark reads the external sites' caches itself.
    """
    import numpy as np

    from fedbone.classifier.local import labelled_rows, predict
    from fedbone.classifier.pooled import train_spec_for
    from fedbone.classifier.public_pretraining import (
        PhantomPretraining,
        pretrain_on_phantoms,
    )
    from fedbone.config.profiles import profile_spec
    from fedbone.config.site import load_site_config
    from fedbone.data.cache import SiteCache
    from fedbone.models import ClassifierSpec, build_classifier
    from fedbone.models.parameters import load_arrays
    from fedbone.validation.delong import delong_ci

    study = _study(None, narrow=True, pretrain=True)
    assert study.simulation is not None
    spec = ClassifierSpec(architecture=study.model.architecture, norm=study.model.norm)
    started = time.perf_counter()
    arrays = pretrain_on_phantoms(
        spec,
        profile_spec(study.simulation.profile),
        study.task,
        PhantomPretraining(epochs=PRETRAIN_EPOCHS),
        train_spec_for(study.training, epochs=PRETRAIN_EPOCHS, seed=study.seed),
        seed=study.seed,
        work_dir=study.runs_dir / "pretrained",
    )
    model = build_classifier(spec)
    load_arrays(model, arrays)
    labels, scores = [], []
    for site in ("C", "D", "E", "F"):
        config = load_site_config(
            study.simulation.sites_dir / f"site-{site}" / "site.yaml"
        )
        cache = SiteCache.open(config.data.cache_dir)
        rows, y = labelled_rows(cache, study.task, "test")
        labels.append(y)
        scores.append(predict(model, cache, rows, device="cpu"))
    auc = delong_ci(np.concatenate(labels), np.concatenate(scores))
    return {
        "epsilon": 0.0,
        "architecture": study.model.architecture,
        "pretrain_phantom_epochs": PRETRAIN_EPOCHS,
        "train_layers": "none",
        "lr": study.training.lr,
        "external_auc": auc.value,
        "external_auc_ci": [auc.low, auc.high],
        "site_epsilon": {},
        "budget_refusals": 0,
        "seconds": time.perf_counter() - started,
        "run_dir": "",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
    }


def _write_table() -> None:
    rows = [json.loads(line) for line in STORE.read_text().splitlines()]
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = (
            row["epsilon"],
            row["architecture"],
            row["pretrain_phantom_epochs"],
            row.get("train_layers", "all"),
            row.get("lr", 0.003),
        )
        latest[key] = row
    ordered = sorted(
        latest.values(),
        key=lambda r: (
            r["architecture"],
            r["pretrain_phantom_epochs"],
            r.get("train_layers", "all"),
            -r.get("lr", 0.003),
            float("inf") if r["epsilon"] is None else r["epsilon"],
        ),
    )
    machine = ordered[-1]["machine"]
    lines = [
        "# DP utility curve on the DP profile (pooled external AUC, sites C-F)",
        "",
        f"`bench/dp_utility_curve.py` on {machine['cpu']} "
        f"({machine['logical_cores']} cores); `configs/dp.yaml` (A and B train with "
        "DP-SGD, 10 rounds x 2 epochs, batch 128, group norm, ghost clipping at 1.0; "
        "each site's budget = the target ε, δ = 1/(10 n)). Pretraining: the "
        f"centre's own phantom cohort (site-A profile, scale 0.1), {PRETRAIN_EPOCHS} "
        "epochs without DP; no site's budget is spent on it.",
        "",
        "| model | start | DP trains | lr | target ε | external AUC (95% CI) "
        "| sites' ε | s | date |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in ordered:
        eps = "no DP" if row["epsilon"] is None else f"{row['epsilon']:g}"
        if row.get("train_layers") == "none":
            eps = "0 (the start alone: no site data)"
        spent = ", ".join(
            f"{site} {value:.2f}"
            for site, value in sorted(row["site_epsilon"].items())
            if value is not None
        )
        start = (
            f"phantom-pretrained ({row['pretrain_phantom_epochs']} ep)"
            if row["pretrain_phantom_epochs"]
            else "random"
        )
        low, high = row["external_auc_ci"]
        lines.append(
            f"| {row['architecture']} | {start} | {row.get('train_layers', 'all')} "
            f"| {row.get('lr', 0.003):g} "
            f"| {eps} | {row['external_auc']:.3f} "
            f"({low:.3f}-{high:.3f}) | {spent or '-'} | {row['seconds']:.0f} "
            f"| {row['date']} |"
        )
    (RESULTS / "dp_utility_curve.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


def main() -> None:
    """Run the chosen settings (default: the whole curve and the non-DP run)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, action="append")
    parser.add_argument("--no-dp", action="store_true", help="the non-DP study only")
    parser.add_argument("--wide", action="store_true", help="the profile's small-cnn")
    parser.add_argument("--no-pretrain", action="store_true")
    parser.add_argument(
        "--layers", choices=("all", "head"), default="all", help="what DP-SGD trains"
    )
    parser.add_argument("--lr", type=float, help="the sites' learning rate")
    parser.add_argument(
        "--pretrained-only",
        action="store_true",
        help="score the phantom-pretrained start as it is (no site data)",
    )
    args = parser.parse_args()
    settings: list[float | None]
    if args.no_dp:
        settings = [None]
    elif args.epsilon:
        settings = list(args.epsilon)
    else:
        settings = [None, *EPSILONS]
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.pretrained_only:
        with STORE.open("a") as out:
            out.write(json.dumps(pretrained_only()) + "\n")
        _write_table()
        return
    for epsilon in settings:
        line = run_setting(
            epsilon,
            narrow=not args.wide,
            pretrain=not args.no_pretrain,
            layers=args.layers,
            lr=args.lr,
        )
        with STORE.open("a") as out:
            out.write(json.dumps(line) + "\n")
        _write_table()


if __name__ == "__main__":
    main()
