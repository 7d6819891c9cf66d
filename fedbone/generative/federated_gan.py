"""A site's part in a federated GAN (phase ``gan``, ``mode: federated``).

Each round the server sends the global generator, discriminator and EMA
generator (:mod:`fedbone.generative.arrays`); the site loads them into its
own trainer -- whose Adam moments, adaptive-augmentation probability and step
counters stay in ``<work_dir>/gan/<run>/federated-trainer.pt`` between rounds
-- trains ``steps // rounds`` local steps on its own scans and returns the
three networks' weights. In evaluation the site scores the global EMA
generator by FD, KID and precision/recall against its own held-out scans, the
measure the server uses to choose the round whose generator is kept.

The first round also trains the site's feature encoder and curation
classifier (:func:`~fedbone.generative.site_gan.prepare_site_models`), so the
selected generator can be curated and audited here in phase ``synthesize``
exactly like a locally trained one: :func:`install_federated_generator` writes
it as this site's selected checkpoint after checking its digest.

What leaves the site: the networks' weights and scalar figures. The
discriminator's weights are a function of the site's scans; differential
privacy on its updates (DP-SGD) bounds what they reveal.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedbone.classifier.errors import TrainingError
from fedbone.classifier.local import TrainSpec
from fedbone.config.privacy import DpPhaseSettings
from fedbone.config.synthetic import GanSettings
from fedbone.data.cache import SiteCache
from fedbone.errors import Problem
from fedbone.generative.arrays import arrays_digest, load_trainer_arrays, trainer_arrays
from fedbone.generative.run import generator_fidelity
from fedbone.generative.site_gan import (
    SiteModels,
    check_enough_for_gan,
    gan_state_dir,
    gan_trainer_for,
    labelled_class_rows,
    load_feature_encoder_of,
    prepare_site_models,
    recorded_site_models,
    write_selection,
)
from fedbone.generative.trainer import GanTrainer
from fedbone.models import ClassifierSpec
from fedbone.privacy.dp_gan import DpGanSpec
from fedbone.privacy.ledger import PrivacyLedger
from fedbone.privacy.site_spending import plan_gan_release

__all__ = [
    "FEDERATED_TRAINER_FILE",
    "FederatedGanRound",
    "evaluate_federated_gan",
    "federated_gan_round",
    "install_federated_generator",
    "site_seed",
]

logger = logging.getLogger(__name__)

FEDERATED_TRAINER_FILE = "federated-trainer.pt"
_GENERATOR_FILE = "federated-generator.pt"


@dataclass(frozen=True)
class FederatedGanRound:
    """A site's reply to one federated GAN round: weights and figures."""

    arrays: dict[str, np.ndarray]
    metrics: dict[str, float]


def site_seed(seed: int, site_id: str) -> int:
    """Return a per-site seed, so sites draw different batches and noise."""
    offset = int(hashlib.sha256(site_id.encode()).hexdigest()[:8], 16)
    return (seed + offset) % 2**31


def _canvas(cache: SiteCache) -> tuple[int, int]:
    height, width = cache.images.shape[1:]
    return int(height), int(width)


def _site_trainer(
    cache: SiteCache,
    settings: GanSettings,
    state: Path,
    *,
    seed: int,
    device: str,
    dp: DpGanSpec | None,
) -> GanTrainer:
    """Return the site's trainer: resumed from its own state, or fresh on round 1."""
    saved = state / FEDERATED_TRAINER_FILE
    if saved.is_file():
        return GanTrainer.load(saved, device=device)
    height, width = _canvas(cache)
    return gan_trainer_for(settings, height, width, seed=seed, device=device, dp=dp)


def federated_gan_round(
    cache: SiteCache,
    task: str,
    settings: GanSettings,
    classifier: ClassifierSpec,
    train: TrainSpec,
    global_arrays: Mapping[str, np.ndarray],
    *,
    work_dir: Path,
    run_name: str,
    seed: int,
    device: str,
    dp: DpPhaseSettings | None = None,
    ledger: PrivacyLedger | None = None,
) -> FederatedGanRound:
    """Train the received global GAN for one round of local steps.

    With ``dp`` and the site's ``ledger``, the round's discriminator steps
    are DP-SGD, checked against the budget first and recorded after.

    Parameters
    ----------
    cache
        The site's prepared cache.
    task, classifier, train
        The study task and classifier settings (for the curation classifier
        the first round trains).
    settings
        The study's GAN settings; ``steps // rounds`` local steps per round.
    global_arrays
        The global networks (:func:`~fedbone.generative.arrays.trainer_arrays`).
    work_dir, run_name
        Where the site's state goes: ``<work_dir>/gan/<run_name>/``.
    seed
        The site's seed (see :func:`site_seed`).
    device
        ``auto``, ``cpu`` or ``cuda``.

    Returns
    -------
    FederatedGanRound
        The updated networks and ``num-examples`` (training scans, FedAvg's
        weight), losses, ``ada-p``, ``steps`` and ``images-seen``.

    Raises
    ------
    TrainingError
        When the site has too few scans, or the arrays do not fit its GAN.
    """
    state = gan_state_dir(work_dir, run_name)
    state.mkdir(parents=True, exist_ok=True)
    rows, labels = labelled_class_rows(cache, ("train",))
    held_rows, _ = labelled_class_rows(cache, ("val", "test"))
    check_enough_for_gan(len(rows), len(held_rows), settings)
    prepare_site_models(
        cache, task, settings, classifier, train, state, seed=seed, device=device
    )
    steps = max(1, settings.steps // settings.rounds)
    release, private = None, None
    if dp is not None and ledger is not None:
        release, private = plan_gan_release(
            ledger,
            dp,
            batch_size=settings.batch_size,
            n_training=len(rows),
            steps=steps,
            planned_steps=steps * settings.rounds,
        )
    trainer = _site_trainer(
        cache, settings, state, seed=seed, device=device, dp=private
    )
    load_trainer_arrays(trainer, global_arrays)
    images = np.asarray(cache.images[rows], dtype=np.float32)
    result = trainer.train(images, labels, steps)
    trainer.save(state / FEDERATED_TRAINER_FILE)
    metrics = {
        "num-examples": float(len(rows)),
        "n-real": float(len(rows)),
        "d-loss": result.d_loss,
        "g-loss": result.g_loss,
        "ada-p": result.ada_p,
        "steps": float(result.steps),
        "images-seen": float(result.images_seen),
        "seconds": result.seconds,
    }
    if release is not None:
        release.commit(run=run_name, phase="gan", kind="gan-round")
        metrics["dp-epsilon"] = release.epsilon
        # The discriminator's losses are statistics of the real scans outside
        # the accountant; under DP they stay at the site.
        del metrics["d-loss"], metrics["g-loss"]
    return FederatedGanRound(trainer_arrays(trainer), metrics)


def _models_of(state: Path) -> SiteModels:
    models = recorded_site_models(state)
    if models is None:
        raise TrainingError(
            str(state),
            [
                Problem(
                    "not-in-federated-gan",
                    "this site has no encoder or curation classifier for this "
                    "run: it took no part in the federated GAN's training rounds",
                )
            ],
        )
    return models


def evaluate_federated_gan(
    cache: SiteCache,
    settings: GanSettings,
    global_arrays: Mapping[str, np.ndarray],
    *,
    work_dir: Path,
    run_name: str,
    seed: int,
    device: str,
) -> dict[str, float]:
    """Score the global EMA generator on this site's held-out scans.

    Returns ``num-examples`` (held-out scans), ``fd``, ``kid``, ``precision``
    and ``recall`` in the site's feature space. ``seed`` must be the same at
    every round so rounds are compared on the same latent draws.

    Parameters
    ----------
    cache
        The site's prepared cache; its val and test scans with both labels
        known are the held-out scans.
    settings
        The study's GAN settings (network sizes, encoder, images per class).
    global_arrays
        The global networks (:func:`~fedbone.generative.arrays.trainer_arrays`).
    work_dir, run_name
        Where the site's state is: ``<work_dir>/gan/<run_name>/``.
    seed
        Seed of the latent draws; the same every round.
    device
        ``auto``, ``cpu`` or ``cuda``.

    Raises
    ------
    TrainingError
        ``not-in-federated-gan`` at a site that took no part in the training
        rounds.
    """
    state = gan_state_dir(work_dir, run_name)
    models = _models_of(state)
    encoder = load_feature_encoder_of(settings, models, state, device)
    height, width = _canvas(cache)
    trainer = gan_trainer_for(settings, height, width, seed=seed, device=device)
    load_trainer_arrays(trainer, global_arrays)
    rows, labels = labelled_class_rows(cache, ("val", "test"))
    fidelity = generator_fidelity(
        trainer,
        np.asarray(cache.images[rows], dtype=np.float32),
        labels,
        embed=encoder.embed,
        images_per_class=settings.fd_images_per_class,
        seed=seed,
    )
    return {"num-examples": float(len(rows)), **fidelity}


def install_federated_generator(
    cache: SiteCache,
    settings: GanSettings,
    global_arrays: Mapping[str, np.ndarray],
    *,
    expected_sha256: str,
    round_number: int,
    work_dir: Path,
    run_name: str,
    device: str,
) -> str:
    """Make the selected global generator this site's selected checkpoint.

    The arrays' digest must equal ``expected_sha256`` (the one the server
    announced when it chose the round). Afterwards phase ``synthesize`` runs
    here exactly as after local training. Returns the checkpoint file's sha256.

    Parameters
    ----------
    cache
        The site's prepared cache; gives the canvas size.
    settings
        The study's GAN settings (network sizes).
    global_arrays
        The selected round's global networks.
    expected_sha256
        Digest of ``global_arrays`` the server announced.
    round_number
        The selected round, recorded as ``best-step`` in ``selected.json``.
    work_dir, run_name
        Where the site's state is: ``<work_dir>/gan/<run_name>/``.
    device
        ``auto``, ``cpu`` or ``cuda``.

    Raises
    ------
    TrainingError
        ``generator-digest-mismatch`` for arrays that are not the announced
        generator; ``not-in-federated-gan`` at a site that did not train it.
    """
    actual = arrays_digest(global_arrays)
    if actual != expected_sha256:
        raise TrainingError(
            "federated generator",
            [
                Problem(
                    "generator-digest-mismatch",
                    f"the received generator hashes to {actual[:12]}, not the "
                    f"announced {expected_sha256[:12]}; ask the server to resend",
                )
            ],
        )
    state = gan_state_dir(work_dir, run_name)
    models = _models_of(state)
    height, width = _canvas(cache)
    trainer = gan_trainer_for(settings, height, width, seed=0, device=device)
    load_trainer_arrays(trainer, global_arrays)
    checkpoint = state / _GENERATOR_FILE
    checkpoint_sha = trainer.save(checkpoint)
    write_selection(state, checkpoint, checkpoint_sha, models, round_number)
    logger.info(
        "installed the federated generator of round %d (%s)",
        round_number,
        expected_sha256[:12],
    )
    return checkpoint_sha
