"""The three measurements of the GPU check, at the paper's sizes or toy ones.

Each measurement takes a :class:`CheckSizes`, the seconds it may use and a
dictionary it fills with its figures (numbers and short strings) as it goes,
so that a measurement stopped at its cap still leaves what it had measured.
``bench/gpu_benchmarks.py`` runs them, each in its own process with a time
cap, and writes the results.

- ``classifier``: DenseNet121 training images/s at 1024 x 256, one channel,
  through the project's loop (:class:`fedbone.classifier.steps.EpochRunner`
  driving :class:`~fedbone.classifier.steps.Stepper`: float16 autocast, gradient
  scaling, one loss read back per step) against a bare PyTorch loop on the same
  model, batch and data (float16 autocast + ``GradScaler``; then bfloat16
  autocast without a scaler). Warm-up steps are not timed.
- ``gan``: the conditional GAN at 1024 x 256 built from ``configs/paper.yaml``
  by :func:`fedbone.generative.site_gan.gan_trainer_for`: training kimg/s over
  a multiple of the R1 interval (so lazy R1 counts in proportion), generation
  images/s of the EMA generator.
- ``audit``: :func:`fedbone.generative.audit.similarity.audit_synthetic` with
  the site defaults (feature space, shifts, MS-SSIM as phase ``synthesize``
  uses it) on a slice of synthetic images against 10,000 training images,
  extrapolated linearly in the synthetic count to the paper's pool.

Throughput does not depend on image content, so images are uniform noise.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from fedbone.classifier.augment import AugmentSpec
from fedbone.classifier.local import TrainSpec
from fedbone.classifier.steps import EpochRunner, Stepper
from fedbone.config.site import AuditThresholds
from fedbone.config.study import StudyConfig
from fedbone.config.synthetic import GanSettings
from fedbone.generative.audit import similarity
from fedbone.generative.fidelity.ssim import ms_ssim
from fedbone.generative.site_gan import gan_trainer_for
from fedbone.models import Architecture, ClassifierSpec, build_classifier

Figures = dict[str, Any]

#: Training scans the audit is sized for (issue #16: 10,000 x 10,000).
AUDIT_TRAINING = 10_000


@dataclass(frozen=True)
class CheckSizes:
    """How big each measurement is and where it runs.

    Parameters
    ----------
    device
        ``cuda`` for the check, ``cpu`` for the smoke run.
    height, width
        Canvas of every measurement.
    classifier
        The study's classifier.
    classifier_batch, classifier_warmup, classifier_steps
        Batch and untimed/timed steps of each classifier loop.
    lr, weight_decay
        AdamW settings of both classifier loops.
    gan
        The study's GAN settings (network sizes, batch).
    gan_warmup, gan_steps
        Untimed and timed GAN steps; multiples of the R1 interval.
    gan_generate
        Images generated for the generation figure.
    audit_training, audit_held_out, audit_slice
        Training scans, held-out scans and synthetic images of the timed audit.
    audit_target
        Synthetic images the audit time is extrapolated to.
    """

    device: str
    height: int
    width: int
    classifier: ClassifierSpec
    classifier_batch: int
    classifier_warmup: int
    classifier_steps: int
    lr: float
    weight_decay: float
    gan: GanSettings
    gan_warmup: int
    gan_steps: int
    gan_generate: int
    audit_training: int
    audit_held_out: int
    audit_slice: int
    audit_target: int

    def describe(self) -> dict[str, Any]:
        """Return the sizes as plain values for the results file."""
        values = dataclasses.asdict(self)
        values["classifier"] = str(self.classifier.architecture)
        values["gan"] = {
            key: values["gan"][key]
            for key in ("batch_size", "base_channels", "max_channels", "latent_dim")
        }
        return values


def paper_sizes(study: StudyConfig) -> CheckSizes:
    """Sizes of the GPU check: the study's models at 1024 x 256 on ``cuda``."""
    synthesis = study.synthesis
    return CheckSizes(
        device="cuda",
        height=1024,
        width=256,
        classifier=_classifier_spec(study),
        classifier_batch=study.training.batch_size,
        classifier_warmup=20,
        classifier_steps=50,
        lr=study.training.lr,
        weight_decay=study.training.weight_decay,
        gan=study.gan,
        gan_warmup=16,
        gan_steps=48,
        gan_generate=512,
        audit_training=AUDIT_TRAINING,
        audit_held_out=500,
        audit_slice=250,
        audit_target=synthesis.n_per_class * len(synthesis.classes),
    )


def smoke_sizes(study: StudyConfig) -> CheckSizes:
    """Toy sizes on the CPU (a small CNN): every code path in seconds, no figure."""
    return dataclasses.replace(
        paper_sizes(study),
        device="cpu",
        height=32,
        width=32,
        classifier=ClassifierSpec(architecture=Architecture.SMALL_CNN),
        classifier_batch=2,
        classifier_warmup=1,
        classifier_steps=2,
        gan=dataclasses.replace(
            study.gan, batch_size=2, base_channels=2, max_channels=4, latent_dim=8
        ),
        gan_warmup=1,
        gan_steps=2,
        gan_generate=4,
        audit_training=12,
        audit_held_out=6,
        audit_slice=4,
        audit_target=40,
    )


def _classifier_spec(study: StudyConfig) -> ClassifierSpec:
    model = study.model
    return ClassifierSpec(
        architecture=model.architecture,
        in_channels=model.in_channels,
        norm=model.norm,
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()  # the previous loop's model and optimiser
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def uniform_images(
    n: int, height: int, width: int, device: torch.device, seed: int
) -> np.ndarray:
    """Return ``(n, height, width)`` float32 noise in [0, 1], drawn on ``device``."""
    out = np.empty((n, height, width), dtype=np.float32)
    generator = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, n, 512):
        count = min(512, n - start)
        draw = torch.rand(count, height, width, generator=generator, device=device)
        out[start : start + count] = draw.cpu().numpy()
    return out


class InMemoryImages:
    """Canvases held in memory, read the way local training reads a site cache.

    Float16 rows like the cache's memory map; every row is in ``train`` and
    labelled 0 or 1 for both tasks.
    """

    def __init__(self, images: np.ndarray, seed: int) -> None:
        self._images = images.astype(np.float16)
        self._labels = np.random.default_rng(seed).integers(0, 2, len(images))

    @property
    def images(self) -> np.ndarray:
        """Rows ``(N, H, W)`` float16."""
        return self._images

    @property
    def cache_dir(self) -> Path:
        """No folder: the rows live in memory."""
        return Path("<memory>")

    def indices(self, split: str) -> np.ndarray:
        """Every row, whatever the split."""
        return np.arange(len(self._images))

    def labels(self, task: str) -> np.ndarray:
        """One 0/1 label per row, the same for both tasks."""
        return self._labels

    def __len__(self) -> int:
        return len(self._images)


def _timed_steps(
    step: Callable[[np.ndarray], None],
    order: np.ndarray,
    batch: int,
    warmup: int,
    device: torch.device,
) -> float:
    """Run ``warmup`` untimed steps, then time the rest of ``order``; return s."""
    step(order[: warmup * batch])
    synchronize(device)
    started = time.perf_counter()
    step(order[warmup * batch :])
    synchronize(device)
    return time.perf_counter() - started


def _project_loop(
    sizes: CheckSizes, data: InMemoryImages, device: torch.device, order: np.ndarray
) -> float:
    """Seconds of the timed steps through the project's epoch runner and stepper."""
    torch.manual_seed(0)
    model = build_classifier(sizes.classifier).to(device)
    spec = TrainSpec(
        batch_size=sizes.classifier_batch,
        lr=sizes.lr,
        weight_decay=sizes.weight_decay,
        augment=AugmentSpec(enabled=False),
        device=sizes.device,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=sizes.lr, weight_decay=sizes.weight_decay
    )
    amp = spec.amp and device.type == "cuda"
    runner = EpochRunner(
        model, data, "bm", Stepper(model, optimizer, spec, [], device, amp), spec
    )
    return _timed_steps(
        runner, order, sizes.classifier_batch, sizes.classifier_warmup, device
    )


def _bare_loop(
    sizes: CheckSizes,
    data: InMemoryImages,
    device: torch.device,
    order: np.ndarray,
    dtype: torch.dtype,
) -> float:
    """Seconds of the same timed steps written by hand (autocast in ``dtype``)."""
    torch.manual_seed(0)
    model = build_classifier(sizes.classifier).to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=sizes.lr, weight_decay=sizes.weight_decay
    )
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp and dtype == torch.float16)
    images, labels = data.images, data.labels("bm")

    def steps(positions: np.ndarray) -> None:
        for start in range(0, len(positions), sizes.classifier_batch):
            chunk = positions[start : start + sizes.classifier_batch]
            x = torch.from_numpy(images[chunk]).float().unsqueeze(1)
            y = torch.from_numpy(labels[chunk]).float()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                logits = model(x)
            loss = functional.binary_cross_entropy_with_logits(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return _timed_steps(
        steps, order, sizes.classifier_batch, sizes.classifier_warmup, device
    )


def measure_classifier(sizes: CheckSizes, budget_s: float, figures: Figures) -> None:
    """Training images/s of the project's loop and of a bare loop, same work.

    Parameters
    ----------
    sizes
        Canvas, model, batch and step counts.
    budget_s
        Seconds this measurement may use (the step counts are fixed; the
        caller's cap stops an overrun).
    figures
        Filled with each loop's images/s and peak GPU memory as it finishes,
        then the ratio.
    """
    device = torch.device(sizes.device)
    batch = sizes.classifier_batch
    data = InMemoryImages(
        uniform_images(4 * batch, sizes.height, sizes.width, device, seed=0), seed=0
    )
    steps = sizes.classifier_warmup + sizes.classifier_steps
    order = np.random.default_rng(0).integers(0, len(data), steps * batch)
    timed_images = sizes.classifier_steps * batch
    figures["timed_images"] = timed_images
    loops: dict[str, Callable[[], float]] = {
        "project_fp16": lambda: _project_loop(sizes, data, device, order),
        "bare_fp16": lambda: _bare_loop(sizes, data, device, order, torch.float16),
        "bare_bf16": lambda: _bare_loop(sizes, data, device, order, torch.bfloat16),
    }
    for name, loop in loops.items():
        reset_peak(device)
        seconds = loop()
        figures[f"{name}_images_per_s"] = round(timed_images / seconds, 2)
        figures[f"{name}peak_gib"] = peak_gib(device)
    figures["project_over_bare_fp16"] = round(
        figures["project_fp16_images_per_s"] / figures["bare_fp16_images_per_s"], 3
    )


def measure_gan(sizes: CheckSizes, budget_s: float, figures: Figures) -> None:
    """Training kimg/s and generation images/s of the study's conditional GAN.

    Parameters
    ----------
    sizes
        Canvas, GAN settings and step counts.
    budget_s
        Seconds this measurement may use: fewer timed steps (still a multiple
        of the R1 interval) are run when the warm-up says the full count would
        not fit in half of what is left.
    figures
        Filled with the warm-up's step time, then the training and generation
        figures.
    """
    started = time.perf_counter()
    device = torch.device(sizes.device)
    trainer = gan_trainer_for(
        sizes.gan, sizes.height, sizes.width, seed=0, device=sizes.device
    )
    figures["generator_parameters"] = _parameters(trainer.generator)
    figures["discriminator_parameters"] = _parameters(trainer.discriminator)
    batch = sizes.gan.batch_size
    images = uniform_images(8 * batch, sizes.height, sizes.width, device, seed=1)
    labels = np.arange(len(images)) % trainer.spec.n_classes
    reset_peak(device)
    warm_started = time.perf_counter()
    trainer.train(images, labels, steps=sizes.gan_warmup)
    synchronize(device)
    step_s = (time.perf_counter() - warm_started) / sizes.gan_warmup
    figures["warmup_step_s"] = round(step_s, 4)
    interval = trainer.train_spec.r1_interval
    left = budget_s - (time.perf_counter() - started)
    affordable = int(0.5 * left / step_s) // interval * interval
    steps = max(min(sizes.gan_steps, affordable), min(sizes.gan_steps, interval))
    timed_started = time.perf_counter()
    trainer.train(images, labels, steps=steps)
    synchronize(device)
    train_s = time.perf_counter() - timed_started
    figures["train_kimg_per_s"] = round(steps * batch / 1000 / train_s, 4)
    figures["train_images_per_s"] = round(steps * batch / train_s, 2)
    figures["train_step_s"] = round(train_s / steps, 4)
    figures["timed_steps"] = steps
    figures["r1_interval"] = interval
    figures["train_peak_gib"] = peak_gib(device)
    wanted = np.arange(sizes.gan_generate) % trainer.spec.n_classes
    trainer.generate(wanted[:batch], seed=0)
    synchronize(device)
    generate_started = time.perf_counter()
    trainer.generate(wanted, seed=1)
    synchronize(device)
    generate_s = time.perf_counter() - generate_started
    figures["generate_images_per_s"] = round(sizes.gan_generate / generate_s, 2)


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


#: The audit's steps whose cost grows with the synthetic count, by the name
#: :mod:`fedbone.generative.audit.similarity` calls them under.
_PER_SYNTHETIC_STEPS = ("nearest_k", "candidate_errors", "max_candidate_ms_ssim")


@contextmanager
def per_synthetic_timer(n_synthetic: int) -> Iterator[dict[str, float]]:
    """Time the audit's steps that scale with the synthetic count.

    Wraps the module-level names in :mod:`fedbone.generative.audit.similarity`
    for the duration: ``nearest_k`` counts only when its queries are the
    synthetic images (its training and held-out queries are the part that does
    not grow with the synthetic count). Steps the module no longer has are
    left out of the dictionary, so the caller can say what was timed.

    Parameters
    ----------
    n_synthetic
        Synthetic images in the audited slice.
    """
    seconds: dict[str, float] = {}
    originals = {
        name: getattr(similarity, name)
        for name in _PER_SYNTHETIC_STEPS
        if hasattr(similarity, name)
    }

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if name != "nearest_k" or _queries(args, kwargs) == n_synthetic:
                    seconds[name] += time.perf_counter() - started

        return wrapper

    for name, function in originals.items():
        seconds[name] = 0.0
        setattr(similarity, name, timed(name, function))
    try:
        yield seconds
    finally:
        for name, function in originals.items():
            setattr(similarity, name, function)


def _queries(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The ``n_queries`` argument of a ``nearest_k(blocks, n_queries, k)`` call."""
    return kwargs["n_queries"] if "n_queries" in kwargs else args[1]


def measure_audit(sizes: CheckSizes, budget_s: float, figures: Figures) -> None:
    """Time the privacy audit on a slice and extrapolate to the whole pool.

    Parameters
    ----------
    sizes
        Canvas, training/held-out counts, slice and target.
    budget_s
        Seconds this measurement may use (the caller's cap stops an overrun).
    figures
        Filled with the sizes and the data's generation time, then the audit's
        times; an audit stopped at the cap leaves its time so far in
        ``slice_s`` (a lower bound) and no extrapolation.
    """
    if sizes.audit_slice in (sizes.audit_training, sizes.audit_held_out):
        raise ValueError(
            f"a slice of {sizes.audit_slice} synthetic images cannot be told "
            "from the training or held-out queries when timing the audit's "
            "parts; choose another slice size"
        )
    device = torch.device(sizes.device)
    figures["synthetic_slice"] = sizes.audit_slice
    figures["training_images"] = sizes.audit_training
    figures["held_out_images"] = sizes.audit_held_out
    figures["target_synthetic"] = sizes.audit_target
    started = time.perf_counter()
    training = uniform_images(
        sizes.audit_training, sizes.height, sizes.width, device, seed=2
    )
    held_out = uniform_images(
        sizes.audit_held_out, sizes.height, sizes.width, device, seed=3
    )
    synthetic = uniform_images(
        sizes.audit_slice, sizes.height, sizes.width, device, seed=4
    )
    figures["data_generation_s"] = round(time.perf_counter() - started, 2)
    # Two scans a patient: the same-patient control runs as at a real site.
    patients = [f"p{i // 2}" for i in range(len(training))]
    with per_synthetic_timer(len(synthetic)) as parts:
        audit_started = time.perf_counter()
        try:
            similarity.audit_synthetic(
                synthetic,
                training,
                training_patient_ids=patients,
                held_out=held_out,
                thresholds=AuditThresholds(),
                ms_ssim_fn=ms_ssim,
                device=sizes.device,
            )
        finally:
            slice_s = time.perf_counter() - audit_started
            figures["slice_s"] = round(slice_s, 2)
            for name, value in parts.items():
                figures[f"slice_{name}_s"] = round(value, 2)
    # Without a step to time, the whole slice is taken to grow (upper bound).
    per_synthetic_s = sum(parts.values()) if parts else slice_s
    scale = sizes.audit_target / sizes.audit_slice
    figures["slice_per_synthetic_part_s"] = round(per_synthetic_s, 2)
    figures["slice_fixed_part_s"] = round(slice_s - per_synthetic_s, 2)
    figures["extrapolated_s"] = round(slice_s + per_synthetic_s * (scale - 1), 1)
    figures["proportional_upper_bound_s"] = round(slice_s * scale, 1)
    figures["note"] = (
        f"timed on a slice of {sizes.audit_slice} synthetic x "
        f"{sizes.audit_training} training images ({sizes.height}x{sizes.width}, "
        f"{sizes.audit_held_out} held-out), extrapolated linearly in the "
        f"synthetic count to {sizes.audit_target}: the steps that grow with it "
        f"({', '.join(parts) or 'none found: the whole audit'}) x {scale:g}, "
        "the rest (real-vs-real control, training embeddings, membership "
        "queries) once"
    )


#: Every measurement, in the order the check runs them.
MEASUREMENTS: dict[str, Callable[[CheckSizes, float, Figures], None]] = {
    "classifier": measure_classifier,
    "gan": measure_gan,
    "audit": measure_audit,
}

#: Figures each measurement must report (the test and the Markdown rely on them).
REQUIRED_FIGURES: dict[str, tuple[str, ...]] = {
    "classifier": (
        "project_fp16_images_per_s",
        "bare_fp16_images_per_s",
        "bare_bf16_images_per_s",
        "project_over_bare_fp16",
    ),
    "gan": ("train_kimg_per_s", "generate_images_per_s", "train_peak_gib"),
    "audit": ("slice_s", "extrapolated_s", "proportional_upper_bound_s", "note"),
}
