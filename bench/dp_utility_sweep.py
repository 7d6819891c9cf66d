"""Why DP-SGD at epsilon 8 loses AUC on phantom data: one site, a few settings.

``bench/dp_utility.py`` runs the whole federated DP study (about 10 minutes);
this sweep isolates the classifier: site A of the DP profile's phantom sites
trains alone (``train_local`` or ``train_local_dp`` at target ε over the
run), and the model is scored on site D's scans (external, never trained on)
and on A's validation split. One setting per call, so settings can be run in
parallel on a machine with spare cores::

    .venv/bin/python bench/dp_utility_sweep.py --dp 8 --augment 0 --widths 8,16,32,64

Each call appends one line to ``bench/results/dp_utility_sweep.jsonl`` and
rewrites ``dp_utility_sweep.md`` from all lines. ``--widths`` narrows the
small CNN (a benchmark-only override of ``SMALL_CNN_WIDTHS``): DP-SGD's noise
grows with the number of weights. The sites must exist
(``fedbone simulate configs/dp.yaml`` or ``bench/dp_utility.py`` makes them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import machine_info

import fedbone.models.classifier as classifier_module
from fedbone.classifier.augment import AugmentSpec
from fedbone.classifier.dp_local import train_local_dp
from fedbone.classifier.local import (
    TrainSpec,
    evaluate_split,
    labelled_rows,
    train_local,
)
from fedbone.classifier.sampling import Sampling
from fedbone.data.cache import SiteCache
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.privacy.budget import default_delta
from fedbone.privacy.dp_sgd import DpSgdSpec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SITES = ROOT / "runs" / "phantom-sites-dp"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dp", type=float, default=8.0, help="target ε; 0: no DP")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--augment", type=int, default=1)
    parser.add_argument("--widths", default="16,32,64,128")
    parser.add_argument("--clip", type=float, default=1.0)
    return parser.parse_args()


def _run(args: argparse.Namespace) -> dict[str, object]:
    classifier_module.SMALL_CNN_WIDTHS = tuple(int(w) for w in args.widths.split(","))
    torch.set_num_threads(1)
    train_site = SiteCache.open(SITES / "site-A" / "cache")
    external = SiteCache.open(SITES / "site-D" / "cache")
    spec = TrainSpec(
        epochs=args.epochs,
        batch_size=args.batch,
        lr=args.lr,
        weight_decay=1e-4,
        device="cpu",
        augment=AugmentSpec(enabled=bool(args.augment)),
        sampling=Sampling.BALANCED,
    )
    torch.manual_seed(0)
    model = build_classifier(
        ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.GROUP)
    )
    started = time.perf_counter()
    epsilon = noise = None
    if args.dp > 0:
        n = len(labelled_rows(train_site, "bm", "train")[0])
        dp = DpSgdSpec(
            target_epsilon=args.dp, delta=default_delta(n), max_grad_norm=args.clip
        )
        steps = args.epochs * -(-n // args.batch)
        private = train_local_dp(
            model, train_site, "bm", spec, dp, state=None, planned_steps=steps
        )
        epsilon, noise = private.epsilon, private.noise_multiplier
        val_auc = private.val_auc
    else:
        val_auc = train_local(model, train_site, "bm", spec).val_auc
    return {
        **{k: v for k, v in vars(args).items()},
        "val_auc_A": val_auc,
        "external_auc_D": evaluate_split(
            model, external, "bm", "test", batch_size=256, device="cpu"
        )[2],
        "epsilon": epsilon,
        "noise_multiplier": noise,
        "seconds": round(time.perf_counter() - started),
    }


def _markdown(rows: list[dict[str, object]]) -> str:
    lines = [
        "# DP utility sweep: site A alone, scored on external site D (phantom)",
        "",
        "| DP target ε | widths | batch | lr | augment | epochs | noise σ "
        "| A val AUC | D AUC | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        noise = r["noise_multiplier"]
        lines.append(
            f"| {r['dp'] or 'non-DP'} | {r['widths']} | {r['batch']} | {r['lr']} "
            f"| {r['augment']} | {r['epochs']} "
            f"| {'-' if noise is None else format(noise, '.2f')} "
            f"| {r['val_auc_A']:.3f} | {r['external_auc_D']:.3f} | {r['seconds']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run one setting, append it, rewrite the table."""
    row = _run(_arguments()) | {"machine": machine_info()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / "dp_utility_sweep.jsonl"
    with log.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line]
    (RESULTS / "dp_utility_sweep.md").write_text(_markdown(rows))
    print(json.dumps({k: v for k, v in row.items() if k != "machine"}))


if __name__ == "__main__":
    main()
