"""The centrally pooled baseline (simulation only): one model, all train data."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from fedbone.classifier.augment import AugmentSpec
from fedbone.classifier.local import TrainSpec, train_local
from fedbone.classifier.sampling import Sampling
from fedbone.config.site import load_site_config
from fedbone.config.study import TrainingSettings
from fedbone.data.cache import SiteCache
from fedbone.data.pooled_cache import write_pooled_cache
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.parameters import load_arrays, state_to_arrays

__all__ = ["train_pooled_baseline", "train_spec_for"]

logger = logging.getLogger(__name__)


def train_spec_for(settings: TrainingSettings, *, epochs: int, seed: int) -> TrainSpec:
    """Local-training settings equivalent to the study's, for ``epochs``.

    Parameters
    ----------
    settings
        The study's training settings; batch size, AdamW settings, sampling,
        augmentation and early-stopping patience are copied from it.
    epochs
        Passes over the training split (replaces ``settings.local_epochs``).
    seed
        Seed of the run's sampling, augmentation and initialisation.
    """
    return TrainSpec(
        epochs=epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        sampling=Sampling(settings.sampling),
        augment=AugmentSpec(enabled=settings.augment),
        early_stopping_patience=settings.early_stopping_patience,
        seed=seed,
    )


def train_pooled_baseline(
    *,
    site_configs: Sequence[Path],
    site_ids: Collection[str],
    spec: ClassifierSpec,
    start: Mapping[str, np.ndarray],
    task: str,
    settings: TrainingSettings,
    seed: int,
    work_dir: Path,
) -> dict[str, np.ndarray]:
    """Train one model on the pooled train/val splits of ``site_ids``.

    It trains for ``rounds x local_epochs`` epochs, as many passes over each
    site's data as the federated model made.

    Parameters
    ----------
    site_configs
        Paths of the phantom sites' config files.
    site_ids
        Sites whose caches are pooled; configs of other sites are ignored.
    spec
        Classifier to build.
    start
        Initial weights (state-dict name -> array), normally the federated
        model's starting point.
    task
        ``bm`` or ``ca``.
    settings
        The study's training settings.
    seed
        Seed of the pooled run.
    work_dir
        Folder for the pooled cache (``pooled-cache``, replaced if present).

    Returns
    -------
    dict of str to numpy.ndarray
        The trained weights, state-dict name -> array.
    """
    configs = [load_site_config(p) for p in site_configs]
    caches = [
        SiteCache.open(c.data.cache_dir) for c in configs if c.site_id in site_ids
    ]
    pooled = write_pooled_cache(
        caches, work_dir / "pooled-cache", splits=("train", "val")
    )
    model = build_classifier(spec)
    load_arrays(model, start)
    epochs = settings.rounds * settings.local_epochs
    result = train_local(
        model, pooled, task, train_spec_for(settings, epochs=epochs, seed=seed)
    )
    logger.info(
        "pooled baseline: %d scans from %s, %d epochs, train loss %.4f",
        result.n_examples,
        ", ".join(sorted(site_ids)),
        result.epochs_run,
        result.train_loss,
    )
    return state_to_arrays(model)
