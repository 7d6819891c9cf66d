"""Phase ``enhance`` at a site: local rounds, and an evaluation releasing sums.

Everything here runs where the scans are. The site

1. builds its training pairs once
   (:func:`~fedbone.enhance.pairs.load_or_build_pair_set`:
   binomial thinning of the raw counts of its own standard scans, plus any
   real fast acquisitions its fast-scan manifest lists);
2. trains the enhancer it is sent for one federated round on the pairs of its
   ``train`` split (the Gaussian baseline: fits the filter's width per level);
3. evaluates every enhancer on its validation split, per level, against its
   standard scans and returns only per-image-set aggregates: the count and
   sums (and sums of squares) of PSNR, SSIM, MS-SSIM and the perceptual
   distance, the site's Fréchet distance in its own encoder's feature space,
   sums and cross-products of the hottest focus's counts (Bland-Altman and
   Pearson r at the centre), and per-class histograms of the study
   classifier's scores for standard, fast and enhanced scans (pooled AUC and
   the paired DeLong test at the centre, whose components come in a second
   exchange, :meth:`SiteEnhancement.components`).

Per-patient values stay in the site's run folder (``<work>/enhance/<run>/``),
with a site-local page of example triplets of its own scans.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedbone.classifier.local import predict_images
from fedbone.classifier.rounds import RoundResult
from fedbone.config.enhance import EnhanceSettings
from fedbone.data.cache import SiteCache
from fedbone.data.preprocess import normalise_to_unit_range
from fedbone.enhance.agreement import AgreementSums, focus_counts, hottest_focus
from fedbone.enhance.gaussian import fit_gaussian_sigma, gaussian_enhance
from fedbone.enhance.inference import enhance
from fedbone.enhance.metrics import ms_ssim_batch, psnr_batch, ssim_batch
from fedbone.enhance.model_file import EnhancerModel, save_enhancer
from fedbone.enhance.pairs import REAL, PairSet, load_or_build_pair_set
from fedbone.enhance.perceptual import (
    PerceptualFeatures,
    TorchScriptPerceptual,
    perceptual_distance,
)
from fedbone.enhance.scaling import (
    DEFAULT_PERCENTILE,
    intensity_level,
    network_input,
    to_counts,
    unit_range,
)
from fedbone.enhance.specs import (
    GAUSSIAN,
    enhancer_spec,
    enhancer_training,
    gaussian_key,
    simulated_levels,
)
from fedbone.enhance.thinning import parse_level
from fedbone.enhance.training import train_enhancer
from fedbone.generative.fidelity.distances import frechet_distance
from fedbone.generative.fidelity.encoders import (
    EncoderSpec,
    SiteEncoder,
    TorchScriptEncoder,
    train_site_encoder,
)
from fedbone.generative.site_gan import labelled_class_rows
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.enhancers import generator_arrays
from fedbone.models.parameters import load_arrays
from fedbone.safe_names import run_folder
from fedbone.validation.histograms import ScoreHistograms, score_histograms
from fedbone.validation.pooled_roc import paired_component_sums

__all__ = [
    "ENHANCER_SUFFIX",
    "ENHANCE_AREA",
    "EnhanceEvaluation",
    "SiteEnhancement",
    "reference_name",
    "variant_name",
]

logger = logging.getLogger(__name__)

ENHANCE_AREA = "enhance"
#: The unenhanced fast scan, scaled to the standard acquisition.
FAST = "fast"
STANDARD = "standard"
_SCORES_FILE = "scores.npz"
_ENCODER_FILE = "encoder.pt"
_EXAMPLES_DIR = "examples"
_PSNR_CAP_DB = 100.0
#: Suffix of the enhancer files a site keeps for ``fedbone enhance``.
ENHANCER_SUFFIX = ".enhancer.npz"
_DESCRIPTIONS = {
    "dncnn": "DnCNN residual denoiser (Zhang et al. 2017)",
    "ddsrcnn": "DDSRCNN-style encoder-decoder with skips (Ito et al.)",
    "rrdbnet": "RRDBNet conditional GAN (Qi et al. 2024)",
}


def variant_name(method: str, level: str) -> str:
    """Name of the image set ``method`` made at ``level`` (``dncnn-2x``)."""
    return f"{method}-{level}"


def reference_name(level: str) -> str:
    """Name of the standard scans of the patients evaluated at ``level``."""
    return variant_name(STANDARD, level)


def _normalise(counts: np.ndarray, percentile: float) -> np.ndarray:
    """Each image on the classifier's canvas scale, by preprocessing's own rule."""
    return np.stack([normalise_to_unit_range(image, percentile) for image in counts])


def _classifier_scores(
    spec: ClassifierSpec, arrays: Mapping[str, np.ndarray], images: np.ndarray
) -> np.ndarray:
    model = build_classifier(spec)
    load_arrays(model, arrays)
    return predict_images(model, images, device="cpu")


def _round_seed(seed: int, site_id: str, arrays: Mapping[str, np.ndarray]) -> int:
    """Return a seed that differs between sites and rounds (the arrays change)."""
    digest = hashlib.sha256(f"{seed}/{site_id}".encode())
    for key in sorted(arrays)[:4]:
        digest.update(np.ascontiguousarray(arrays[key]).tobytes()[:4096])
    return int.from_bytes(digest.digest()[:4], "little")


@dataclass(frozen=True)
class EnhanceEvaluation:
    """What an evaluation asks: enhancers, the scoring classifier, the split.

    ``enhancers`` maps a method to its trained arrays (``gaussian``: the
    filter widths); ``model`` is the study's classifier.
    """

    task: str
    run_name: str
    enhance: EnhanceSettings
    enhancers: dict[str, dict[str, np.ndarray]]
    classifier: ClassifierSpec
    model: dict[str, np.ndarray]
    split: str
    bins: int
    seed: int


@dataclass(frozen=True)
class _LevelData:
    """One level's evaluated patients: standard and fast counts, labels."""

    level: str
    standard: np.ndarray
    fast_scaled: np.ndarray
    inputs: np.ndarray
    input_levels: np.ndarray
    standard_levels: np.ndarray
    labels: np.ndarray
    scan_ids: tuple[str, ...]
    rows: np.ndarray


def _differs_by_a_small_cell(a: _LevelData, b: _LevelData, min_class: int) -> bool:
    """Whether two evaluated patient sets differ by 1 to ``min_class - 1`` of a class.

    Histograms of the standard scans of both sets would then be differenced
    into those few patients' labels and scores.
    """
    labels = {int(r): int(y) for r, y in zip(a.rows, a.labels, strict=True)}
    labels.update({int(r): int(y) for r, y in zip(b.rows, b.labels, strict=True)})
    differing = set(map(int, a.rows)) ^ set(map(int, b.rows))
    positives = sum(labels[r] == 1 for r in differing)
    negatives = len(differing) - positives
    return 0 < positives < min_class or 0 < negatives < min_class


class SiteEnhancement:
    """A site's enhancement work, with its training pairs and encoder kept.

    Parameters
    ----------
    site_id
        The site's id (seeds differ between sites).
    work_dir
        The site's work folder; everything goes under ``enhance/``.
    fast_manifest
        The site's list of real fast acquisitions, if it has one.
    device
        Torch device for training (``auto``, ``cpu``, ``cuda``).
    min_class
        Fewest patients of a class a released image set may hold; smaller
        levels are not evaluated (the egress guard would withhold them).
    encoder_file
        Finds the site-approved TorchScript file of a sha256 the study names
        for the perceptual loss (``policy.encoders``); it refuses any other.
    """

    def __init__(
        self,
        *,
        site_id: str,
        work_dir: Path,
        fast_manifest: Path | None,
        device: str,
        min_class: int,
        encoder_file: Callable[[str], Path] | None = None,
    ) -> None:
        self.encoder_file = encoder_file
        self.site_id = site_id
        self.work_dir = work_dir
        self.fast_manifest = fast_manifest
        self.device = device
        self.min_class = min_class
        self._pairs: dict[tuple[Any, ...], PairSet] = {}
        self._encoders: dict[str, SiteEncoder] = {}

    # -- shared pieces ----------------------------------------------------

    def pair_set(
        self, cache: SiteCache, settings: EnhanceSettings, seed: int
    ) -> PairSet:
        """Return the site's pairs at the study's levels (built once, then kept).

        Parameters
        ----------
        cache
            The site's prepared cache (its scans' DICOM files are read again).
        settings
            The study's ``enhance`` settings (levels, real pairs).
        seed
            Seed of the thinning.
        """
        levels = tuple(parse_level(level) for level in settings.levels)
        manifest = self.fast_manifest if settings.real_pairs else None
        key = (cache.cache_dir, tuple(settings.levels), seed, manifest)
        if key not in self._pairs:
            self._pairs[key] = load_or_build_pair_set(
                cache,
                levels,
                seed=seed,
                fast_manifest=manifest,
                folder=self.work_dir / ENHANCE_AREA / "pairs",
            )
            skipped = self._pairs[key].skipped
            if skipped:
                logger.warning(
                    "enhance: %d scan(s) left out of the pairs: %s",
                    len(skipped),
                    "; ".join(f"{scan}: {why}" for scan, why in skipped[:5]),
                )
        return self._pairs[key]

    def encoder(
        self, cache: SiteCache, run_name: str, settings: EnhanceSettings, seed: int
    ) -> SiteEncoder:
        """Return the site's own encoder for this run (trained once, on its scans).

        It gives the perceptual loss, the perceptual distance and the Fréchet
        distance their feature space; it never leaves the site.

        Parameters
        ----------
        cache
            The site's prepared cache.
        run_name
            The study run (the encoder is kept in its folder).
        settings
            The study's ``enhance`` settings (encoder epochs).
        seed
            Seed of the encoder's training.
        """
        if run_name in self._encoders:
            return self._encoders[run_name]
        path = run_folder(self.work_dir, ENHANCE_AREA, run_name) / _ENCODER_FILE
        if path.is_file():
            encoder = SiteEncoder.load(path, device=self.device)
        else:
            positions, classes = labelled_class_rows(cache, ("train", "val", "test"))
            images = np.asarray(cache.images[positions], dtype=np.float32)
            encoder = train_site_encoder(
                images,
                classes,
                EncoderSpec(
                    epochs=settings.encoder_epochs, seed=seed, device=self.device
                ),
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            encoder.save(path)
        self._encoders[run_name] = encoder
        return encoder

    def _level_data(
        self, pairs: PairSet, level: str, split: str, task: str
    ) -> _LevelData | None:
        positions = pairs.indices(level, split)
        rows = pairs.rows[level][positions]
        labels_all = pairs.label_bm if task == "bm" else pairs.label_ca
        labels = np.asarray(labels_all[rows], dtype=np.int64)
        known = labels >= 0
        positions, rows, labels = positions[known], rows[known], labels[known]
        n_pos, n_neg = int(labels.sum()), int((labels == 0).sum())
        if 0 < n_pos < self.min_class or 0 < n_neg < self.min_class:
            logger.info(
                "enhance: level %s has %d+/%d- scans on split %s, a small cell; "
                "not evaluated",
                level,
                n_pos,
                n_neg,
                split,
            )
            return None
        if len(rows) == 0:
            return None
        standard = pairs.standard[rows]
        speed = pairs.speed[level][positions]
        fast_scaled = pairs.fast[level][positions] * speed[:, None, None]
        inputs = np.empty(fast_scaled.shape, dtype=np.float32)
        input_levels = np.empty(len(rows), dtype=np.float64)
        for i, (fast, factor) in enumerate(
            zip(pairs.fast[level][positions], speed, strict=True)
        ):
            inputs[i], input_levels[i] = network_input(fast, float(factor))
        return _LevelData(
            level=level,
            standard=standard,
            fast_scaled=fast_scaled.astype(np.float32),
            inputs=inputs,
            input_levels=input_levels,
            standard_levels=np.array([intensity_level(s) for s in standard]),
            labels=labels,
            scan_ids=tuple(pairs.scan_ids[int(r)] for r in rows),
            rows=rows,
        )

    # -- training ---------------------------------------------------------

    def _training_pairs(
        self,
        pairs: PairSet,
        settings: EnhanceSettings,
        split: str,
        *,
        real: bool = False,
    ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
        """Return inputs and targets per level, and how many scans they hold.

        The simulated levels always; with ``real``, also the site's real
        fast acquisitions (registered and scaled to their standards).
        """
        by_level = {}
        scans: set[int] = set()
        levels = list(simulated_levels(settings))
        if real:
            levels += [lv for lv in pairs.fast if pairs.source[lv] == REAL]
        for level in levels:
            positions = pairs.indices(level, split)
            rows = pairs.rows[level][positions]
            scans.update(int(r) for r in rows)
            inputs = np.empty((len(rows), *pairs.standard.shape[1:]), np.float32)
            targets = np.empty_like(inputs)
            for i, (position, row) in enumerate(zip(positions, rows, strict=True)):
                speed = float(pairs.speed[level][position])
                inputs[i], level_value = network_input(
                    pairs.fast[level][position], speed
                )
                targets[i] = pairs.standard[row] / np.float32(level_value)
            by_level[level] = (inputs, targets)
        return by_level, len(scans)

    def train_round(
        self,
        cache: SiteCache,
        arrays: Mapping[str, np.ndarray],
        *,
        method: str,
        settings: EnhanceSettings,
        run_name: str,
        seed: int,
    ) -> RoundResult:
        """Train ``method`` for one round on the ``train`` split's pairs.

        Parameters
        ----------
        cache
            The site's prepared cache.
        arrays
            The received global enhancer (``gaussian``: its filter widths).
        method
            One of the study's methods.
        settings
            The study's ``enhance`` settings.
        run_name
            The study run (the encoder of the perceptual loss is kept there).
        seed
            The study's seed.
        """
        started = time.perf_counter()
        pairs = self.pair_set(cache, settings, seed)
        by_level, n_scans = self._training_pairs(
            pairs,
            settings,
            "train",
            real=settings.train_on_real_pairs and method != GAUSSIAN,
        )
        if n_scans == 0:
            raise ValueError(
                f"site {self.site_id} has no training pairs (no readable scans on "
                "its train split); a validate-only site cannot train an enhancer"
            )
        if method == GAUSSIAN:
            sigmas = {
                gaussian_key(level): np.array(
                    [fit_gaussian_sigma(inputs, targets)], dtype=np.float32
                )
                for level, (inputs, targets) in by_level.items()
            }
            metrics: dict[str, float | int] = {
                "num-examples": n_scans,
                "seconds": time.perf_counter() - started,
            }
            return RoundResult(sigmas, metrics, None)
        inputs = np.concatenate([pair[0] for pair in by_level.values()])
        targets = np.concatenate([pair[1] for pair in by_level.values()])
        perceptual: Callable[[torch.Tensor], list[torch.Tensor]] | None = None
        if method == "rrdbnet" and settings.perceptual_weight > 0:
            perceptual = self._perceptual(cache, run_name, settings, seed)
        result = train_enhancer(
            enhancer_spec(method, settings),
            dict(arrays),
            inputs,
            targets,
            training=enhancer_training(settings, method),
            perceptual=perceptual,
            seed=_round_seed(seed, self.site_id, arrays),
            device=self.device,
        )
        metrics = {**result.metrics, "num-examples": n_scans}
        # the reply mirrors the request's dtypes (averaging made counters float)
        returned = {
            key: np.asarray(value).astype(arrays[key].dtype, copy=False)
            if key in arrays
            else value
            for key, value in result.arrays.items()
        }
        return RoundResult(returned, metrics, None)

    def _perceptual(
        self, cache: SiteCache, run_name: str, settings: EnhanceSettings, seed: int
    ) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        """Return the perceptual features: a site-approved file, or the site encoder."""
        sha256 = settings.perceptual_encoder_sha256
        if sha256 is None:
            return PerceptualFeatures(self.encoder(cache, run_name, settings, seed))
        if self.encoder_file is None:
            raise ValueError(
                "the study names a perceptual encoder file, but this site has no "
                "policy.encoders to approve it"
            )
        path = self.encoder_file(sha256)
        return TorchScriptPerceptual(
            TorchScriptEncoder.load(path, sha256=sha256, device=self.device)
        )

    def evaluate_round(
        self,
        cache: SiteCache,
        arrays: Mapping[str, np.ndarray],
        *,
        method: str,
        settings: EnhanceSettings,
        seed: int,
    ) -> dict[str, float | int]:
        """Score the received enhancer (loss, PSNR) on the ``val`` split's pairs.

        Parameters
        ----------
        cache
            The site's prepared cache.
        arrays
            The received global enhancer.
        method
            Its method.
        settings
            The study's ``enhance`` settings.
        seed
            The study's seed (the pairs' thinning).
        """
        pairs = self.pair_set(cache, settings, seed)
        by_level, n_scans = self._training_pairs(pairs, settings, "val")
        if n_scans == 0:
            return {"num-examples": 0, "val-loss": math.nan, "val-psnr": math.nan}
        losses, psnrs = [], []
        for level, (inputs, targets) in by_level.items():
            outputs = self._apply(method, arrays, settings, level, inputs)
            losses.append(((outputs - targets) ** 2).mean(axis=(1, 2)))
            psnrs.append(psnr_batch(np.clip(outputs, 0, 1), np.clip(targets, 0, 1)))
        return {
            "num-examples": n_scans,
            "val-loss": float(np.concatenate(losses).mean()),
            "val-psnr": float(np.concatenate(psnrs).mean()),
        }

    def _apply(
        self,
        method: str,
        arrays: Mapping[str, np.ndarray],
        settings: EnhanceSettings,
        level: str,
        inputs: np.ndarray,
    ) -> np.ndarray:
        """Run ``method`` on network inputs (the output is on the input's scale)."""
        if method == GAUSSIAN:
            return gaussian_enhance(inputs, _gaussian_sigma(arrays, level))
        return enhance(
            enhancer_spec(method, settings), dict(arrays), inputs, device=self.device
        )

    # -- evaluation -------------------------------------------------------

    def evaluate(
        self, cache: SiteCache, request: EnhanceEvaluation
    ) -> dict[str, dict[str, float | int | list[int]]]:
        """Evaluate every enhancer at every level; return the records to send.

        Parameters
        ----------
        cache
            The site's prepared cache.
        request
            What to evaluate, with which classifier, on which split.
        """
        settings = request.enhance
        pairs = self.pair_set(cache, settings, request.seed)
        encoder = self.encoder(cache, request.run_name, settings, request.seed)
        features = PerceptualFeatures(encoder)
        folder = run_folder(self.work_dir, ENHANCE_AREA, request.run_name)
        records: dict[str, dict[str, float | int | list[int]]] = {}
        kept: dict[str, np.ndarray] = {}
        released: list[_LevelData] = []
        for level in pairs.fast:
            data = self._level_data(pairs, level, request.split, request.task)
            if data is None:
                continue
            if any(
                _differs_by_a_small_cell(data, other, self.min_class)
                for other in released
            ):
                logger.info(
                    "enhance: level %s's patients differ from an evaluated "
                    "level's by a small cell; not evaluated (the two releases "
                    "could be differenced)",
                    level,
                )
                continue
            released.append(data)
            standard_unit = np.stack(
                [
                    unit_range(s, lv)
                    for s, lv in zip(data.standard, data.standard_levels, strict=True)
                ]
            )
            standard_norm = _normalise(data.standard, DEFAULT_PERCENTILE)
            standard_features = encoder.embed(standard_norm)
            standard_scores = _classifier_scores(
                request.classifier, request.model, standard_norm
            )
            reference = reference_name(level)
            records[f"metrics-{reference}"] = _class_counts(data.labels)
            records[f"histograms-{reference}"] = _histograms(
                data.labels, standard_scores, request.bins
            )
            kept[f"labels-{level}"] = data.labels
            kept[f"scores-{reference}"] = standard_scores
            variants = self._variants(data, request)
            positives = data.labels == 1
            views = 2 if cache.spec.views.value == "both" else 1
            foci = [hottest_focus(s, views=views) for s in data.standard[positives]]
            standard_focus = np.array(
                [
                    focus_counts(s, f)
                    for s, f in zip(data.standard[positives], foci, strict=True)
                ]
            )
            examples: dict[str, np.ndarray] = {}
            for method, counts in variants.items():
                name = variant_name(method, level)
                unit = np.stack(
                    [
                        unit_range(c, lv)
                        for c, lv in zip(counts, data.standard_levels, strict=True)
                    ]
                )
                norm = _normalise(counts, DEFAULT_PERCENTILE)
                scores = _classifier_scores(request.classifier, request.model, norm)
                records[f"metrics-{name}"] = {
                    **_class_counts(data.labels),
                    **_quality_sums(unit, standard_unit, features),
                    "fd": _fd(encoder.embed(norm), standard_features),
                }
                records[f"histograms-{name}"] = _histograms(
                    data.labels, scores, request.bins
                )
                kept[f"scores-{name}"] = scores
                if positives.any():
                    method_focus = np.array(
                        [
                            focus_counts(c, f)
                            for c, f in zip(counts[positives], foci, strict=True)
                        ]
                    )
                    sums = AgreementSums.of(standard_focus, method_focus).to_dict()
                    records[f"agreement-{name}"] = {
                        **sums,
                        "n-pos": int(positives.sum()),
                    }
                examples[method] = unit
            self._write_examples(folder, level, data, standard_unit, examples, settings)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / _SCORES_FILE, allow_pickle=False, **kept)
        self._install_models(cache, folder, pairs, request)
        return records

    def _install_models(
        self,
        cache: SiteCache,
        folder: Path,
        pairs: PairSet,
        request: EnhanceEvaluation,
    ) -> None:
        """Keep each trained enhancer as a file ``fedbone enhance`` can use here.

        The file records this site's canvas geometry and the speeds the
        enhancer was trained for (the simulated levels' count ratios).
        """
        settings = request.enhance
        levels = simulated_levels(settings)
        speeds = np.concatenate([pairs.speed[level] for level in levels])
        if speeds.size == 0:
            return
        for method, arrays in request.enhancers.items():
            if method == GAUSSIAN:
                continue
            spec = enhancer_spec(method, settings)
            path = folder / f"{method}{ENHANCER_SUFFIX}"
            sha256 = save_enhancer(
                EnhancerModel(
                    spec=spec,
                    arrays=generator_arrays(spec, arrays),
                    levels=levels,
                    speeds=(float(speeds.min()), float(speeds.max())),
                    spacing_mm=cache.spec.spacing_mm,
                    canvas=cache.spec.output_shape,
                    clip_percentile=DEFAULT_PERCENTILE,
                    study=request.run_name,
                    description=_DESCRIPTIONS[method],
                ),
                path,
            )
            logger.info("enhance: %s installed at %s (sha256 %s)", method, path, sha256)

    def _variants(
        self, data: _LevelData, request: EnhanceEvaluation
    ) -> dict[str, np.ndarray]:
        """Return the fast scan and every method's enhanced scan, in standard counts."""
        settings = request.enhance
        base = _nearest_simulated(data.level, simulated_levels(settings))
        variants = {FAST: data.fast_scaled}
        for method in settings.methods:
            arrays = request.enhancers.get(method)
            if arrays is None:
                continue
            outputs = self._apply(method, arrays, settings, base, data.inputs)
            variants[method] = np.stack(
                [
                    to_counts(o, lv)
                    for o, lv in zip(outputs, data.input_levels, strict=True)
                ]
            )
        return variants

    def _write_examples(
        self,
        folder: Path,
        level: str,
        data: _LevelData,
        standard_unit: np.ndarray,
        variants: Mapping[str, np.ndarray],
        settings: EnhanceSettings,
    ) -> None:
        """Site-local PNG triplets (fast / enhanced / standard) of its own scans."""
        from PIL import Image

        count = min(settings.examples, len(standard_unit))
        if count == 0:
            return
        target = folder / _EXAMPLES_DIR
        target.mkdir(parents=True, exist_ok=True)
        order = np.argsort(-data.labels, kind="stable")[:count]  # positives first
        gap = np.ones((standard_unit.shape[1], 2), dtype=np.float32)
        for i in order:
            panels = [variants[m][i] for m in variants] + [standard_unit[i]]
            row = np.concatenate(
                [p for panel in panels for p in (panel, gap)][:-1], axis=1
            )
            name = f"{level}-{data.scan_ids[i]}.png".replace("/", "_")
            Image.fromarray((row * 255).astype(np.uint8)).save(target / name)
        (target / "README.txt").write_text(
            "Site-local examples, never sent: columns "
            + ", ".join([*variants, STANDARD])
            + " (each on the standard scan's intensity level).\n"
        )

    def components(
        self,
        *,
        run_name: str,
        pooled: Mapping[str, ScoreHistograms],
        pairs: list[tuple[str, str]],
    ) -> dict[str, dict[str, float | int]]:
        """DeLong component sums of each pair against the pooled histograms.

        Parameters
        ----------
        run_name
            The run whose evaluation stored the scores.
        pooled
            The centre's pooled histograms by image set.
        pairs
            ``(image set, standard-<level>)`` pairs.
        """
        folder = run_folder(self.work_dir, ENHANCE_AREA, run_name)
        stored = dict(np.load(folder / _SCORES_FILE, allow_pickle=False))
        records: dict[str, dict[str, float | int]] = {}
        for a, b in pairs:
            level = b.removeprefix(f"{STANDARD}-")
            labels = stored.get(f"labels-{level}")
            scores_a, scores_b = stored.get(f"scores-{a}"), stored.get(f"scores-{b}")
            if labels is None or scores_a is None or scores_b is None:
                continue  # this site did not evaluate that level
            if a not in pooled or b not in pooled:
                continue
            sums = paired_component_sums(
                labels, scores_a, scores_b, pooled[a], pooled[b]
            )
            records[f"components-{a}-vs-{b}"] = sums.to_dict()
        return records


def _gaussian_sigma(arrays: Mapping[str, np.ndarray], level: str) -> float:
    return float(np.asarray(arrays[gaussian_key(level)]).reshape(-1)[0])


def _nearest_simulated(level: str, simulated: tuple[str, ...]) -> str:
    """Return the simulated level whose speed is closest to ``level``'s."""
    if level in simulated:
        return level
    wanted = _nominal_speed(level)
    return min(simulated, key=lambda s: abs(_nominal_speed(s) - wanted))


def _nominal_speed(level: str) -> float:
    head = level.removesuffix("-real")
    if head.endswith("x"):
        return float(head[:-1])
    # a kcounts level: relative to a nominal 1,000 kcounts standard view
    return 1000.0 / float(head[:-1])


def _class_counts(labels: np.ndarray) -> dict[str, float | int | list[int]]:
    return {
        "n": len(labels),
        "n-pos": int(labels.sum()),
        "n-neg": int((labels == 0).sum()),
    }


def _histograms(
    labels: np.ndarray, scores: np.ndarray, bins: int
) -> dict[str, float | int | list[int]]:
    counts = score_histograms(labels, scores, bins=bins).to_dict()
    return {"positives": counts["positives"], "negatives": counts["negatives"]}


def _quality_sums(
    images: np.ndarray, references: np.ndarray, features: PerceptualFeatures
) -> dict[str, float | int | list[int]]:
    values = {
        # identical images have an infinite PSNR: cap it (a finite sum leaves)
        "psnr": np.minimum(psnr_batch(images, references), _PSNR_CAP_DB),
        "ssim": ssim_batch(images, references),
        "ms-ssim": ms_ssim_batch(images, references),
        "perceptual": perceptual_distance(features, images, references),
    }
    sums: dict[str, float | int | list[int]] = {}
    for measure, per_image in values.items():
        per_image = np.asarray(per_image, dtype=np.float64)
        sums[f"sum-{measure}"] = float(per_image.sum())
        sums[f"sumsq-{measure}"] = float((per_image**2).sum())
    return sums


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return float(frechet_distance(a, b))
