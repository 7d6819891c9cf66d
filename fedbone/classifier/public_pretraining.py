"""Pretraining at the centre on phantom scans: a starting model that costs no budget.

DP-SGD's noise is the same whatever the model knows, so a model that starts
from useful features needs fewer noisy steps to reach a given AUC. Data that
no site's budget protects can buy those features: public scans, the audited
synthetic pool of a DP-trained GAN, or phantoms. This module uses the last:
the centre generates a phantom cohort of its own (a seed no site uses),
prepares it with the sites' preprocessing, and trains the study's classifier
on it without DP; the federated (DP) training then starts from that model.

No site's data is touched, so nothing is charged to any ledger. Phantom
patients resemble the phantom sites' far more than public scans resemble a
hospital's, so on phantom sites this lever looks better than it will on real
ones.

The pretrained model is kept under ``<runs_dir>/pretrained/`` by a key of
everything that shapes it, so studies with the same settings reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fedbone.classifier.local import TrainSpec, train_local
from fedbone.config.site import load_site_config
from fedbone.data.cache import SiteCache
from fedbone.data.prepare import prepare_site_cache
from fedbone.data.spec import PreprocessSpec
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.parameters import state_to_arrays

__all__ = ["PhantomPretraining", "pretrain_on_phantoms"]

logger = logging.getLogger(__name__)

#: Added to the study seed: the public cohort never shares a site's patients.
PUBLIC_SEED_OFFSET = 7919


@dataclass(frozen=True)
class PhantomPretraining:
    """How the centre pretrains on its own phantom cohort.

    Parameters
    ----------
    epochs
        Passes over the phantom cohort's training split.
    scale
        Size of the cohort (fraction of the paper's large centre, site A).
    site_profile
        The phantom site profile the cohort is drawn from.
    """

    epochs: int = 20
    scale: float = 0.1
    site_profile: str = "A"


def _key(
    classifier: ClassifierSpec,
    preprocessing: PreprocessSpec,
    task: str,
    pretraining: PhantomPretraining,
    training: TrainSpec,
    seed: int,
) -> str:
    described = {
        "classifier": {k: str(v) for k, v in asdict(classifier).items()},
        "preprocessing": preprocessing.fingerprint(),
        "task": task,
        "pretraining": asdict(pretraining),
        "training": {k: str(v) for k, v in asdict(training).items()},
        "seed": seed,
    }
    payload = json.dumps(described, sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def pretrain_on_phantoms(
    classifier: ClassifierSpec,
    preprocessing: PreprocessSpec,
    task: str,
    pretraining: PhantomPretraining,
    training: TrainSpec,
    *,
    seed: int,
    work_dir: Path,
    workers: int = 1,
) -> dict[str, np.ndarray]:
    """Return the classifier trained (without DP) on a phantom cohort of the centre's.

    Parameters
    ----------
    classifier
        The study's classifier.
    preprocessing
        The sites' preprocessing (the census's canvas), applied to the cohort.
    task
        The label trained.
    pretraining
        Cohort size and epochs.
    training
        Batch size, learning rate, sampling and augmentation of the pretraining
        (``epochs`` is taken from ``pretraining``).
    seed
        The study seed; the cohort's is offset from it.
    work_dir
        Folder of the cohort and of the kept models (e.g.
        ``<runs_dir>/pretrained``).
    workers
        Processes generating and preparing the cohort.
    """
    from fedbone.simulation.phantom_sites import ensure_phantom_federation

    spec = replace(training, epochs=pretraining.epochs, seed=seed)
    key = _key(classifier, preprocessing, task, pretraining, spec, seed)
    kept = work_dir / f"{key}.npz"
    if kept.is_file():
        logger.info("phantom pretraining: reusing %s", kept)
        with np.load(kept, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    [config_path] = ensure_phantom_federation(
        work_dir / f"cohort-{preprocessing.fingerprint()[:12]}",
        sites=[pretraining.site_profile],
        spec=preprocessing,
        scale=pretraining.scale,
        min_scans=60,
        seed=seed + PUBLIC_SEED_OFFSET,
        workers=workers,
    )
    config = load_site_config(config_path)
    prepare_site_cache(
        config.data.manifest,
        config.data.cache_dir,
        config.preprocessing,
        default_view=config.data.default_view,
        workers=workers,
    )
    cache = SiteCache.open(config.data.cache_dir)
    torch.manual_seed(seed)
    model = build_classifier(classifier)
    result = train_local(model, cache, task, spec)
    logger.info(
        "phantom pretraining: %d scans, %d epochs, val AUC %s",
        result.n_examples,
        result.epochs_run,
        "n/a" if result.val_auc is None else f"{result.val_auc:.3f}",
    )
    arrays = state_to_arrays(model)
    work_dir.mkdir(parents=True, exist_ok=True)
    partial = kept.with_suffix(".partial.npz")
    np.savez(partial, allow_pickle=False, **arrays)
    partial.replace(kept)
    return arrays
