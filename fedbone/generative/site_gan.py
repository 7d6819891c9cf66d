"""A site trains its own conditional GAN (phase ``gan``, local mode).

Everything happens in the site's work folder, ``<work_dir>/gan/<run-name>/``:

1. the **feature encoder** for FD and UMAP: by default a small CNN trained here
   on the site's training scans (:func:`~fedbone.generative.fidelity.encoders.
   train_site_encoder`), or a TorchScript network (e.g. Inception) from a local
   file checked against its sha256;
2. the **curation classifier**: the study's classifier architecture trained
   here on the site's own scans for the study task; it later keeps a synthetic
   image only when it agrees with the image's conditioning label;
3. the **GAN**, with checkpoints and selection by Fréchet distance on the
   site's held-out real scans (val and test splits);
4. the selected generator's **fidelity per class** of the study task, next to
   the real-vs-real reference (training vs held-out scans, same encoder), and
   a site-local page, ``fidelity.html``, with real scans beside synthetic
   images (:mod:`fedbone.generative.fidelity.reference`).

``selected.json`` records the chosen checkpoint, the encoder and the
classifier with their sha256s; phase ``synthesize`` loads exactly those. Only
scalar figures and hashes are returned for the server.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedbone.classifier.errors import TrainingError
from fedbone.classifier.local import TrainSpec, train_local
from fedbone.config.privacy import DpPhaseSettings
from fedbone.config.synthetic import GanSettings
from fedbone.data.cache import SiteCache
from fedbone.errors import Problem
from fedbone.generative.fidelity.encoders import (
    EncoderSpec,
    SiteEncoder,
    TorchScriptEncoder,
    load_feature_encoder,
    train_site_encoder,
)
from fedbone.generative.fidelity.reference import (
    SOURCES,
    FidelityReference,
    LabelledImages,
    fidelity_reference,
)
from fedbone.generative.fidelity.site_page import write_fidelity_page
from fedbone.generative.run import GanRunSpec, train_site_gan
from fedbone.generative.trainer import GanTrainer, GanTrainSpec, class_labels
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.gan import GanSpec
from fedbone.models.weights import file_sha256
from fedbone.privacy.dp_gan import DpGanSpec
from fedbone.privacy.ledger import PrivacyLedger
from fedbone.privacy.site_spending import plan_gan_release
from fedbone.safe_names import run_folder

__all__ = [
    "SELECTION_FILE",
    "SITE_MODELS_FILE",
    "SiteGanOutcome",
    "SiteModels",
    "check_enough_for_gan",
    "gan_state_dir",
    "gan_trainer_for",
    "labelled_class_rows",
    "load_encoder",
    "load_feature_encoder_of",
    "prepare_site_models",
    "recorded_site_models",
    "selected_generator_fidelity",
    "train_site_generator",
    "write_selection",
]

logger = logging.getLogger(__name__)

SELECTION_FILE = "selected.json"
SITE_MODELS_FILE = "site-models.json"


@dataclass(frozen=True)
class SiteGanOutcome:
    """What the server learns of a site's GAN run: figures and hashes."""

    metrics: dict[str, float]
    provenance: dict[str, str]


def gan_state_dir(work_dir: Path, run_name: str) -> Path:
    """Return the folder of one run's GAN state at a site."""
    return run_folder(work_dir, "gan", run_name)


def labelled_class_rows(
    cache: SiteCache, splits: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``splits`` with both labels known, and their class ids."""
    positions = np.sort(np.concatenate([cache.indices(split) for split in splits]))
    bm, ca = cache.labels("bm")[positions], cache.labels("ca")[positions]
    known = (bm >= 0) & (ca >= 0)
    return positions[known], class_labels(bm[known], ca[known])


@dataclass(frozen=True)
class SiteModels:
    """The site's feature encoder and curation classifier for one run."""

    encoder: str
    encoder_sha256: str
    classifier_sha256: str
    curation_val_auc: float
    encoder_seconds: float


def _images(cache: SiteCache, positions: np.ndarray) -> np.ndarray:
    return np.asarray(cache.images[positions], dtype=np.float32)


def load_encoder(
    settings: GanSettings, state: Path, device: str
) -> SiteEncoder | TorchScriptEncoder:
    """Load the run's feature encoder (as recorded in ``selected.json``).

    Parameters
    ----------
    settings
        The study's GAN settings; ``encoder`` says whether it is the site's
        own (``site``) or a TorchScript file.
    state
        The run's GAN folder, ``<work_dir>/gan/<run_name>/``.
    device
        ``auto``, ``cpu`` or ``cuda``.
    """
    selected = json.loads((state / SELECTION_FILE).read_text())
    return _load_encoder(settings, selected["encoder-sha256"], state, device)


def load_feature_encoder_of(
    settings: GanSettings, models: SiteModels, state: Path, device: str
) -> SiteEncoder | TorchScriptEncoder:
    """Load the feature encoder :func:`prepare_site_models` recorded.

    Parameters
    ----------
    settings
        The study's GAN settings; ``encoder`` says whether it is the site's
        own (``site``) or a TorchScript file.
    models
        The recorded models; gives the encoder's expected sha256.
    state
        The run's GAN folder, ``<work_dir>/gan/<run_name>/``.
    device
        ``auto``, ``cpu`` or ``cuda``.
    """
    return _load_encoder(settings, models.encoder_sha256, state, device)


def _load_encoder(
    settings: GanSettings, encoder_sha256: str, state: Path, device: str
) -> SiteEncoder | TorchScriptEncoder:
    if settings.encoder == "site":
        return SiteEncoder.load(
            state / "encoder.pt", sha256=encoder_sha256, device=device
        )
    return load_feature_encoder(
        "torchscript",
        settings.encoder_path,
        settings.encoder_sha256,
        device=device,
    )


def _encoder(
    settings: GanSettings,
    images: np.ndarray,
    labels: np.ndarray,
    state: Path,
    *,
    seed: int,
    device: str,
) -> tuple[SiteEncoder | TorchScriptEncoder, str]:
    if settings.encoder == "torchscript":
        encoder = load_feature_encoder(
            "torchscript", settings.encoder_path, settings.encoder_sha256, device=device
        )
        return encoder, str(settings.encoder_sha256)
    trained = train_site_encoder(
        images,
        labels,
        EncoderSpec(epochs=settings.encoder_epochs, seed=seed, device=device),
    )
    return trained, trained.save(state / "encoder.pt")


def _curation_classifier(
    cache: SiteCache,
    task: str,
    spec: ClassifierSpec,
    train: TrainSpec,
    epochs: int,
    state: Path,
) -> tuple[str, float]:
    model = build_classifier(spec)
    result = train_local(model, cache, task, replace(train, epochs=epochs))
    path = state / "curation-classifier.pt"
    torch.save(model.state_dict(), path)
    auc = float("nan") if result.val_auc is None else result.val_auc
    return file_sha256(path), auc


def check_enough_for_gan(n_train: int, n_held_out: int, settings: GanSettings) -> None:
    """Raise, listing every problem, when a site has too few scans for a GAN.

    Parameters
    ----------
    n_train
        Training scans with both labels known; at least one GAN batch needed.
    n_held_out
        Val and test scans with both labels known; at least 4 needed for
        model selection by FD.
    settings
        The study's GAN settings (``batch_size``).

    Raises
    ------
    TrainingError
        ``too-few-scans`` and/or ``too-few-held-out``.
    """
    problems = []
    if n_train < settings.batch_size:
        problems.append(
            Problem(
                "too-few-scans",
                f"{n_train} training scans with both labels known, fewer than a "
                f"GAN batch ({settings.batch_size}); this site cannot train a GAN",
                "train",
            )
        )
    if n_held_out < 4:
        problems.append(
            Problem(
                "too-few-held-out",
                f"{n_held_out} held-out (val/test) scans with both labels known; "
                "model selection by FD needs at least 4",
                "val/test",
            )
        )
    TrainingError.raise_if_any("site GAN", problems)


def recorded_site_models(state: Path) -> SiteModels | None:
    """Return the encoder and curation classifier recorded for a run, if any."""
    path = state / SITE_MODELS_FILE
    if not path.is_file():
        return None
    return SiteModels(**json.loads(path.read_text()))


def prepare_site_models(
    cache: SiteCache,
    task: str,
    settings: GanSettings,
    classifier: ClassifierSpec,
    train: TrainSpec,
    state: Path,
    *,
    seed: int,
    device: str,
) -> SiteModels:
    """Train the run's feature encoder and curation classifier, once per run.

    A federated GAN calls this every round: the models trained in the first
    round are recorded in ``site-models.json`` and reused afterwards.

    Parameters
    ----------
    cache
        The site's prepared cache; its training scans with both labels known
        train the encoder.
    task
        The study task (``bm`` or ``ca``), for the curation classifier.
    settings
        The study's GAN settings (encoder choice and epochs, curation
        epochs).
    classifier
        Architecture of the curation classifier.
    train
        Local-training settings of the curation classifier; its epochs are
        replaced by ``settings.curation_epochs``.
    state
        The run's GAN folder, ``<work_dir>/gan/<run_name>/``.
    seed
        Seeds the site encoder's training.
    device
        ``auto``, ``cpu`` or ``cuda``.
    """
    recorded = recorded_site_models(state)
    if recorded is not None:
        return recorded
    rows, labels = labelled_class_rows(cache, ("train",))
    started = time.perf_counter()
    encoder, encoder_sha = _encoder(
        settings, _images(cache, rows), labels, state, seed=seed, device=device
    )
    encoder_seconds = time.perf_counter() - started
    classifier_sha, curation_auc = _curation_classifier(
        cache, task, classifier, train, settings.curation_epochs, state
    )
    models = SiteModels(
        encoder=encoder.name[:128],
        encoder_sha256=encoder_sha,
        classifier_sha256=classifier_sha,
        curation_val_auc=curation_auc,
        encoder_seconds=encoder_seconds,
    )
    (state / SITE_MODELS_FILE).write_text(json.dumps(asdict(models), indent=2) + "\n")
    return models


def gan_trainer_for(
    settings: GanSettings,
    height: int,
    width: int,
    *,
    seed: int,
    device: str,
    dp: DpGanSpec | None = None,
) -> GanTrainer:
    """Return a fresh trainer with the study's GAN settings on a canvas.

    With ``dp`` the discriminator is the DP-compatible variant trained with
    DP-SGD (:mod:`fedbone.privacy.dp_gan`).

    Parameters
    ----------
    settings
        The study's GAN settings (network sizes, batch size, learning rate,
        R1 weight, adaptive-augmentation target, auxiliary class and
        mode-seeking losses, steps).
    height, width
        Canvas size in pixels.
    seed
        Seeds initialisation, batches and noise.
    device
        ``auto``, ``cpu`` or ``cuda``.
    dp
        DP-SGD settings of the discriminator; ``None`` trains without DP.
    """
    return GanTrainer(
        GanSpec(
            height=height,
            width=width,
            latent_dim=settings.latent_dim,
            style_dim=settings.latent_dim,
            base_channels=settings.base_channels,
            max_channels=settings.max_channels,
            class_head=settings.class_loss_weight > 0,
        ),
        GanTrainSpec(
            batch_size=settings.batch_size,
            lr_g=settings.lr,
            lr_d=settings.lr,
            r1_gamma=settings.r1_gamma,
            ada_target=settings.ada_target,
            class_loss_weight=settings.class_loss_weight,
            diversity_weight=settings.diversity_weight,
            class_balanced=True,
            seed=seed,
            device=device,
            steps=settings.steps,
        ),
        dp_compatible_d=dp is not None,
        dp=dp,
    )


def write_selection(
    state: Path, checkpoint: Path, checkpoint_sha256: str, models: SiteModels, step: int
) -> None:
    """Record what phase ``synthesize`` must load, each with its sha256.

    Parameters
    ----------
    state
        The run's GAN folder; ``selected.json`` is written there.
    checkpoint
        The selected generator checkpoint (stored as an absolute path).
    checkpoint_sha256
        Its sha256.
    models
        The run's encoder and curation classifier, with their sha256s.
    step
        Training step of the checkpoint (the round, for a federated GAN),
        stored as ``best-step``.
    """
    selection: dict[str, Any] = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint-sha256": checkpoint_sha256,
        "encoder": models.encoder,
        "encoder-sha256": models.encoder_sha256,
        "classifier-sha256": models.classifier_sha256,
        "best-step": step,
    }
    (state / SELECTION_FILE).write_text(json.dumps(selection, indent=2) + "\n")


def selected_generator_fidelity(
    trainer: GanTrainer,
    encoder: SiteEncoder | TorchScriptEncoder,
    training: LabelledImages,
    held_out: LabelledImages,
    *,
    task: str,
    seed: int,
    state: Path,
) -> FidelityReference:
    """Score the selected generator per class, next to real vs real; write the page.

    The generator draws one image per held-out scan, with its class, so the
    synthetic and held-out sets have the same class mix.
    ``<state>/fidelity.html`` shows real training scans beside synthetic
    images: it stays at the site.

    Parameters
    ----------
    trainer
        The trainer holding the selected checkpoint; its EMA generator is
        scored.
    encoder
        The site's feature encoder.
    training, held_out
        The site's training and held-out scans with their class ids.
    task
        The study task (``bm`` or ``ca``): which label makes a class positive.
    seed
        Seeds the synthetic images, the subsamples and the KID subsets.
    state
        The run's GAN folder, where the page goes.
    """
    synthetic = LabelledImages(
        trainer.generate(held_out.class_ids, seed=seed), held_out.class_ids
    )
    reference = fidelity_reference(
        training, held_out, synthetic, embed=encoder.embed, task=task, seed=seed
    )
    page = write_fidelity_page(state, reference, training, synthetic, seed=seed)
    logger.info("fidelity page (site-local, shows real scans; not sent): %s", page)
    return reference


def _sent_sources(*, private_training: DpGanSpec | None) -> tuple[str, ...]:
    if private_training is None:
        return SOURCES
    # Real vs real is a statistic of the training scans outside the DP
    # accountant: under DP it stays on the site's page.
    logger.info("DP GAN: the real-vs-real fidelity figures stay at the site")
    return ("synthetic",)


def train_site_generator(
    cache: SiteCache,
    task: str,
    settings: GanSettings,
    classifier: ClassifierSpec,
    train: TrainSpec,
    *,
    work_dir: Path,
    run_name: str,
    seed: int,
    device: str,
    dp: DpPhaseSettings | None = None,
    ledger: PrivacyLedger | None = None,
) -> SiteGanOutcome:
    """Train encoder, curation classifier and GAN at the site; select by FD.

    With ``dp`` (and the site's ``ledger``) the discriminator trains with
    DP-SGD; its spend is checked against the budget before training and
    recorded after. The DP guarantee covers the generator; curation and the
    audit are data-dependent filters applied to its output afterwards.

    Parameters
    ----------
    cache
        The site's prepared cache.
    task
        The study task, for the curation classifier.
    settings
        The study's GAN settings.
    classifier, train
        The study's classifier and local-training settings.
    work_dir, run_name
        Where the state goes: ``<work_dir>/gan/<run_name>/``.
    seed
        Seeds encoder, classifier and GAN.
    device
        ``auto``, ``cpu`` or ``cuda``.

    Returns
    -------
    SiteGanOutcome
        Scalar figures and hashes (nothing about any single scan): the
        selection figures, and the selected generator's FD, KID and
        precision/recall per class next to real vs real (``fd-synthetic-pos``,
        ``fd-real-pos``...; under DP the ``real`` ones stay at the site).
    """
    state = gan_state_dir(work_dir, run_name)
    state.mkdir(parents=True, exist_ok=True)
    train_rows, train_labels = labelled_class_rows(cache, ("train",))
    held_rows, held_labels = labelled_class_rows(cache, ("val", "test"))
    check_enough_for_gan(len(train_rows), len(held_rows), settings)
    models = prepare_site_models(
        cache, task, settings, classifier, train, state, seed=seed, device=device
    )
    encoder = load_feature_encoder_of(settings, models, state, device)
    images = _images(cache, train_rows)
    height, width = images.shape[1:]
    release, private = None, None
    if dp is not None and ledger is not None:
        release, private = plan_gan_release(
            ledger,
            dp,
            batch_size=settings.batch_size,
            n_training=len(train_rows),
            steps=settings.steps,
            planned_steps=settings.steps,
        )
    trainer = gan_trainer_for(
        settings, height, width, seed=seed, device=device, dp=private
    )
    held_out = _images(cache, held_rows)
    run = train_site_gan(
        trainer,
        images,
        train_labels,
        held_out=held_out,
        held_out_labels=held_labels,
        embed=encoder.embed,
        spec=GanRunSpec(
            steps=settings.steps,
            checkpoint_every=min(settings.checkpoint_every, settings.steps),
            fd_images_per_class=settings.fd_images_per_class,
            seed=seed,
        ),
        checkpoint_dir=state / "checkpoints",
    )
    write_selection(state, Path(run.best.path), run.best.sha256, models, run.best.step)
    reference = selected_generator_fidelity(
        trainer,
        encoder,
        LabelledImages(images, train_labels),
        LabelledImages(held_out, held_labels),
        task=task,
        seed=seed,
        state=state,
    )
    metrics = dict(run.to_metrics())
    if release is not None:
        release.commit(run=run_name, phase="gan", kind="gan-round")
        metrics["dp-epsilon"] = release.epsilon
    metrics.update(reference.to_metrics(_sent_sources(private_training=private)))
    metrics.update(
        {
            "n-real": float(len(train_rows)),
            "n-held-out": float(len(held_rows)),
            "curation-val-auc": models.curation_val_auc,
            "encoder-seconds": models.encoder_seconds,
        }
    )
    provenance = {
        "checkpoint-sha256": run.best.sha256,
        "encoder": models.encoder,
        "encoder-sha256": models.encoder_sha256,
        "classifier-sha256": models.classifier_sha256,
        "round": "0",
    }
    return SiteGanOutcome(metrics, provenance)
