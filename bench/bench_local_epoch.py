"""Local-training benchmark: one ``train_local`` epoch against a bare PyTorch loop.

Run with ``.venv/bin/python bench/bench_local_epoch.py``. Writes
``bench/results/local_epoch.json`` with machine info.

Both sides do the same work on the same data: a phantom site A (CPU profile,
256 x 64 anterior canvases) prepared into a cache; the small CNN built with
the same seed; batch size 16; AdamW and BCE; one epoch of the same
oversampled draw of training scans read from the cache's memory map; no
augmentation on either side; then one pass over the validation split (which
``train_local`` always makes for its result). The bare loop is what one would
write by hand without fedbone: no validation of settings, no FedProx term, no
autocast. The runs alternate and the median of ``--repeats`` is reported.

Target (issue #3): ``train_local`` / bare loop <= 1.10.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_data import machine_info  # type: ignore[import-not-found]
from torch.nn import functional

from fedbone.classifier.augment import AugmentSpec
from fedbone.classifier.local import TrainSpec, train_local
from fedbone.classifier.sampling import Sampling, epoch_indices
from fedbone.config.profiles import profile_spec
from fedbone.data.cache import SiteCache
from fedbone.data.phantom import generate_site_cohort
from fedbone.data.prepare import prepare_site_cache
from fedbone.models import Architecture, ClassifierSpec, build_classifier

RESULTS = Path(__file__).resolve().parent / "results"
BATCH_SIZE = 16
SEED = 0


def prepared_site(work: Path, scale: float) -> SiteCache:
    """Generate and prepare phantom site A at the CPU profile."""
    cohort = work / "site-A"
    generate_site_cohort("A", cohort, scale=scale, seed=1, workers=2, previews=0)
    cache_dir = cohort / "cache"
    prepare_site_cache(
        cohort / "manifest.csv", cache_dir, profile_spec("cpu"), workers=2
    )
    return SiteCache.open(cache_dir)


def fresh_model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return build_classifier(ClassifierSpec(architecture=Architecture.SMALL_CNN))


def time_train_local(cache: SiteCache) -> float:
    """Seconds for one ``train_local`` epoch (with its validation pass)."""
    model = fresh_model()
    spec = TrainSpec(
        epochs=1,
        batch_size=BATCH_SIZE,
        sampling=Sampling.OVERSAMPLE,
        augment=AugmentSpec(enabled=False),
        seed=SEED,
        device="cpu",
    )
    started = time.perf_counter()
    train_local(model, cache, "bm", spec)
    return time.perf_counter() - started


def time_bare_loop(cache: SiteCache) -> float:
    """Seconds for the same epoch and validation pass written by hand."""
    model = fresh_model()
    labels = cache.labels("bm")
    train = cache.indices("train")
    train = train[labels[train] >= 0]
    val = cache.indices("val")
    val = val[labels[val] >= 0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    started = time.perf_counter()
    order = train[
        epoch_indices(Sampling.OVERSAMPLE, labels[train], np.random.default_rng(SEED))
    ]
    model.train()
    for start in range(0, len(order), BATCH_SIZE):
        chunk = order[start : start + BATCH_SIZE]
        images = torch.from_numpy(np.asarray(cache.images[chunk])).float()
        targets = torch.from_numpy(labels[chunk]).float()
        loss = functional.binary_cross_entropy_with_logits(
            model(images.unsqueeze(1)), targets
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(val), 4 * BATCH_SIZE):
            chunk = val[start : start + 4 * BATCH_SIZE]
            model(
                torch.from_numpy(np.asarray(cache.images[chunk])).float().unsqueeze(1)
            )
    return time.perf_counter() - started


def main() -> None:
    """Measure both loops, alternating, and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.05, help="site A size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="fedbone-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        cache = prepared_site(work, args.scale)
        time_bare_loop(cache)  # warm-up: page cache, allocator, kernels
        local, bare = [], []
        for _ in range(args.repeats):
            local.append(time_train_local(cache))
            bare.append(time_bare_loop(cache))
        labels = cache.labels("bm")[cache.indices("train")]
        n_train = int((labels >= 0).sum())
        n_drawn = 2 * int(max((labels == 0).sum(), (labels == 1).sum()))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    local_s, bare_s = statistics.median(local), statistics.median(bare)
    result = {
        "machine": machine_info(),
        "settings": {
            "site": f"phantom A, scale {args.scale}, cpu profile 256x64 anterior",
            "model": "small-cnn (batch norm)",
            "batch_size": BATCH_SIZE,
            "threads": args.threads,
            "repeats": args.repeats,
            "augmentation": "off on both sides",
            "training_scans": n_train,
            "images_per_epoch": n_drawn,
            "work": "one oversampled epoch + one validation pass, both sides",
        },
        "figures": {
            "train_local_epoch_s": round(local_s, 3),
            "bare_loop_epoch_s": round(bare_s, 3),
            "ratio": round(local_s / bare_s, 3),
            "train_local_images_per_s": round(n_drawn / local_s, 1),
            "all_train_local_s": [round(v, 3) for v in local],
            "all_bare_loop_s": [round(v, 3) for v in bare],
        },
        "targets": {"ratio": "<= 1.10"},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "local_epoch.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["figures"], indent=2))


if __name__ == "__main__":
    main()
