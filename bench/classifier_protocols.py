"""The seeds' classifier protocols compared on phantom sites, in one table.

Each arm is a whole federated study through Flower's simulation runtime on the
CPU profile (sites A and B train, C-F validate only; the demo's training
settings), differing only in what the issue compares:

- ``single``: one view (anterior), the small CNN -- the reference -- and, in the
  same study, Haberl et al.'s k-fold cross-validated ensemble (``cv-ensemble``);
- ``sbs-small`` / ``sbs-vgg``: both views side by side (``views: both``), the
  small CNN or the VGG16-class backbone at CPU width (``vgg-small``);
- ``fusion-shared`` / ``fusion-separate``: both views stacked as channels into
  the dual-input network with squeeze-and-excitation, spatial pyramid pooling
  and attention over the views, one backbone shared or one per view.

The pooled external AUC and its CI are the study's own (from the sites'
histograms). The paired DeLong test against the single-view federated model
needs both models' scores of the same scans: here, in simulation only, the
benchmark scores the external sites' caches itself (matched by scan id; the
one-view and two-view federations are made from the same phantom seed, so
they hold the same patients). Arms are run one after the other; each appends
to ``bench/results/classifier_protocols.jsonl`` and the table
``classifier_protocols.md`` is rewritten from all lines::

    .venv/bin/python bench/classifier_protocols.py            # every arm
    .venv/bin/python bench/classifier_protocols.py --arm sbs-vgg
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import machine_info

from fedbone.classifier.local import labelled_rows
from fedbone.config.site import load_site_config
from fedbone.config.study import load_study_config
from fedbone.data.cache import SiteCache
from fedbone.models import ClassifierSpec
from fedbone.validation.delong import delong_ci, delong_paired_test
from fedbone.validation.site import score_models_with_members
from server.simulation import simulate_study

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "runs" / "bench-protocols"
EXTERNAL = ("C", "D", "E", "F")
REFERENCE = ("single", "federated")

#: arm -> (architecture, in_channels, views, cross-validation folds)
ARMS: dict[str, tuple[str, int, str, int]] = {
    "single": ("small-cnn", 1, "anterior", 5),
    "sbs-small": ("small-cnn", 1, "both", 0),
    "sbs-vgg": ("vgg-small", 1, "both", 0),
    "fusion-shared": ("fusion-shared", 2, "both", 0),
    "fusion-separate": ("fusion-separate", 2, "both", 0),
}
LABELS = {
    ("single", "federated"): "single view, small CNN",
    ("single", "cv-ensemble"): "single view, 5-fold CV ensemble (small CNN)",
    ("sbs-small", "federated"): "side by side, small CNN",
    ("sbs-vgg", "federated"): "side by side, VGG16-class (vgg-small)",
    ("fusion-shared", "federated"): "dual input, shared backbone, SE+SPP+attention",
    ("fusion-separate", "federated"): "dual input, one backbone per view, SE+SPP+att.",
}


def _study(arm: str) -> dict[str, Any]:
    architecture, channels, views, folds = ARMS[arm]
    demo = yaml.safe_load((ROOT / "configs" / "simulation.yaml").read_text())
    return {
        "study": {
            "name": f"protocols-{arm}",
            "task": "bm",
            "seed": 0,
            "phases": ["census", "train", "validate", "report"],
            "baselines": [],
        },
        "model": {
            "architecture": architecture,
            "norm": "batch",
            "in_channels": channels,
        },
        "training": demo["training"],
        "cross_validation": {"folds": folds, "early_stopping_rounds": 3},
        "validation": demo["validation"],
        "simulation": {
            **demo["simulation"],
            "sites_dir": str(WORK / f"sites-{views}"),
            "views": views,
        },
        "output": {"runs_dir": str(WORK / "runs")},
    }


def _external_scores(
    run_dir: Path, study: dict[str, Any], names: list[str]
) -> tuple[dict[str, int], dict[str, dict[str, float]]]:
    """Each model's probability per external scan id (simulation only).

    Scored as the sites score them (:func:`score_models_with_members`: an
    ensemble by its members' mean probability).
    """
    spec = ClassifierSpec(
        architecture=study["model"]["architecture"],
        norm=study["model"]["norm"],
        in_channels=study["model"]["in_channels"],
    )
    models = {}
    for name in names:
        with np.load(run_dir / "models" / f"{name}.npz") as stored:
            models[name] = {key: stored[key] for key in stored.files}
    sites_dir = Path(study["simulation"]["sites_dir"])
    labels: dict[str, int] = {}
    scores: dict[str, dict[str, float]] = {name: {} for name in names}
    for site in EXTERNAL:
        config = load_site_config(sites_dir / f"site-{site}" / "site.yaml")
        cache = SiteCache.open(config.data.cache_dir)
        rows, _ = labelled_rows(cache, "bm", "test")
        scored = score_models_with_members(cache, "bm", spec, models, "test")
        keys = [f"{site}/{cache.index[row].scan_id}" for row in rows]
        labels.update(zip(keys, scored.labels.tolist(), strict=True))
        for name in names:
            scores[name].update(zip(keys, scored.scores[name].tolist(), strict=True))
    return labels, scores


def run_arm(arm: str) -> list[dict[str, Any]]:
    """Run one arm's study; return its rows (one per model) with scores kept."""
    WORK.mkdir(parents=True, exist_ok=True)
    study = _study(arm)
    path = WORK / f"{arm}.yaml"
    path.write_text(yaml.safe_dump(study))
    started = time.perf_counter()
    outcome = simulate_study(load_study_config(path))
    seconds = time.perf_counter() - started
    results = json.loads((outcome.run_dir / "results.json").read_text())
    names = sorted(results["pooled_external"])
    labels, scores = _external_scores(outcome.run_dir, study, names)
    rows = []
    for name in names:
        pooled = results["pooled_external"][name]
        rows.append(
            {
                "arm": arm,
                "model": name,
                "label": LABELS.get((arm, name), f"{arm} {name}"),
                "auc": pooled["auc"],
                "auc_low": pooled["auc_low"],
                "auc_high": pooled["auc_high"],
                "n_positive": pooled["n_positive"],
                "n_negative": pooled["n_negative"],
                "seconds": seconds,
                "run_dir": str(outcome.run_dir.relative_to(ROOT)),
                "fold_models": results.get("fold_models", [])
                if name != "federated"
                else [],
                "labels": labels,
                "scores": scores[name],
            }
        )
    return rows


def _paired(rows: list[dict[str, Any]]) -> None:
    """Add the DeLong test against the single-view federated model to each row."""
    reference = next((r for r in rows if (r["arm"], r["model"]) == REFERENCE), None)
    for row in rows:
        row.pop("test", None)
        if reference is None or row is reference:
            continue
        keys = sorted(set(reference["scores"]) & set(row["scores"]))
        y = np.array([reference["labels"][k] for k in keys])
        a = np.array([row["scores"][k] for k in keys])
        b = np.array([reference["scores"][k] for k in keys])
        test = delong_paired_test(y, a, b)
        row["test"] = {
            "n_scans": len(keys),
            "difference": test.difference,
            "low": test.ci_low,
            "high": test.ci_high,
            "p_value": test.p_value,
        }
        own = delong_ci(y, a)
        row["local_auc"] = own.value  # the benchmark's own scoring, as a check


def _write(rows: list[dict[str, Any]]) -> None:
    _paired(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    order = {arm: i for i, arm in enumerate(ARMS)}
    rows.sort(key=lambda r: (order[r["arm"]], r["model"] != "federated"))
    machine = machine_info()
    lines = [
        "# Classifier protocols on phantom sites (issue #19)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `bench/classifier_protocols.py` "
        f"on {machine['cpu']} ({machine['logical_cores']} cores). CPU profile "
        "(256x64 canvas per view, 8 mm), phantom sites at scale 0.1, A and B train "
        "(10 FedAvg rounds x 3 local epochs, batch 16, balanced sampling, "
        "augmentation), pooled over the validation-only sites C-F. AUC 95% CI: "
        "DeLong, from the sites' histograms. Difference: paired DeLong against the "
        "single-view federated model on the same external scans.",
        "",
        "| model | external AUC (95% CI) | + / - | vs single view (95% CI) | p "
        "| study s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        test = row.get("test")
        versus = (
            f"{test['difference']:+.3f} ({test['low']:+.3f} to {test['high']:+.3f})"
            if test
            else "reference"
        )
        p = f"{test['p_value']:.3g}" if test else ""
        lines.append(
            f"| {row['label']} | {row['auc']:.3f} ({row['auc_low']:.3f}-"
            f"{row['auc_high']:.3f}) | {row['n_positive']} / {row['n_negative']} "
            f"| {versus} | {p} | {row['seconds']:.0f} |"
        )
    folds = [f for r in rows for f in r["fold_models"]]
    if folds:
        kept = ", ".join(
            f"{f['model']} round {f['kept-round']} of {f['rounds-run']}" for f in folds
        )
        lines += ["", f"Fold models (kept round by the held-out folds' loss): {kept}."]
    lines += [
        "",
        "Each arm's study time includes its federation's phantom sites when they "
        "were made in that run (the first one-view and the first two-view arm).",
    ]
    (RESULTS / "classifier_protocols.md").write_text("\n".join(lines) + "\n")
    public = [
        {k: v for k, v in r.items() if k not in ("labels", "scores")} for r in rows
    ]
    (RESULTS / "classifier_protocols.json").write_text(
        json.dumps({"machine": machine, "rows": public}, indent=2) + "\n"
    )
    sys.stdout.write("\n".join(lines) + "\n")


def main() -> None:
    """Run the chosen arms and rewrite the table from every arm run so far."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", action="append", choices=list(ARMS))
    args = parser.parse_args()
    store = WORK / "rows.jsonl"
    WORK.mkdir(parents=True, exist_ok=True)
    for arm in args.arm or list(ARMS):
        rows = run_arm(arm)
        with store.open("a") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for line in store.read_text().splitlines():
            row = json.loads(line)
            latest[(row["arm"], row["model"])] = row
        _write(list(latest.values()))


if __name__ == "__main__":
    main()
