"""Enhancer speed: training patches/s and whole-scan inference images/s.

Run ``.venv/bin/python bench/bench_enhance_speed.py --profile cpu`` (the sizes
of ``configs/enhance.yaml``: 256 x 64 canvas, 64 x 32 patches) or
``--profile paper --device cuda`` (``configs/enhance-paper.yaml``: 1024 x 256,
192 x 192 patches, RRDBNet with 9 blocks; ``bash bench/gpu_check.sh`` runs it).
``--profile smoke`` runs every code path at toy size in seconds and gives no
figure worth quoting.

For each trainable method (DnCNN, DDSRCNN, and RRDBNet trained as the
conditional GAN with the perceptual term) it times, through the project's own
functions:

- training: :func:`fedbone.enhance.training.train_enhancer` on noise pairs at
  the canvas size, with the study's batch, patch and network sizes; a warm-up
  round is not timed, then the step loop of a second round is (patch
  sampling, host-to-device copies and one loss read back per step included;
  building the networks is not). Patches/s is turned into an images/s
  equivalent by the patch's share of the canvas's pixels.
- inference: :func:`fedbone.enhance.inference.enhance` on whole canvases, the
  way phase ``enhance`` runs it (batch 8; building the network and the copies
  to and from the device included), after an untimed warm-up call.

The perceptual features come from an untrained
:class:`~fedbone.generative.fidelity.encoders.SiteEncoder` (one step on
noise): throughput does not depend on the weights or on image content. CUDA
is synchronised around every timing, and on CUDA the peak memory of each part
is recorded. With ``--budget-s`` fewer timed steps and images are run when
the warm-up says the full count would not fit; the results are rewritten
after every method, so a run stopped from outside keeps what it measured.

Writes ``bench/results/enhance_speed.json`` and ``.md`` (``--stem`` and
``--results-dir`` change that; smoke runs go to a temporary folder), with the
machine's details, and copies both to ``--out`` (default ``$OUT``) when set.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_benchmarks import machine, write_results
from gpu_measurements import peak_gib, reset_peak, synchronize

from fedbone.classifier.runtime import resolve_device, torch_threads
from fedbone.config.enhance import EnhanceSettings
from fedbone.config.profiles import profile_spec
from fedbone.config.study import load_study_config
from fedbone.enhance.inference import enhance
from fedbone.enhance.perceptual import PerceptualFeatures
from fedbone.enhance.specs import enhancer_spec, enhancer_training
from fedbone.enhance.training import EnhancerTraining, Perceptual, train_enhancer
from fedbone.generative.fidelity.encoders import EncoderSpec, train_site_encoder
from fedbone.models.enhancers import METHODS, initial_arrays

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
logger = logging.getLogger("enhance-speed")

#: The study file each profile takes its sizes from.
CONFIGS = {
    "smoke": ROOT / "configs" / "enhance.yaml",
    "cpu": ROOT / "configs" / "enhance.yaml",
    "paper": ROOT / "configs" / "enhance-paper.yaml",
}
#: Images per forward pass of whole-scan inference (``enhance``'s default,
#: which phase ``enhance`` uses).
INFERENCE_BATCH = 8
#: Noise canvases the training patches are drawn from.
TRAINING_CANVASES = 16


@dataclass(frozen=True)
class SpeedSizes:
    """What one run measures, and how much of it.

    Parameters
    ----------
    profile
        ``smoke``, ``cpu`` or ``paper``.
    height, width
        The canvas (whole-scan inference, and the scans patches are cut from).
    settings
        The study's ``enhance`` settings: network sizes, batch, patch, losses.
    warmup_steps, timed_steps
        Untimed and (at most) timed training steps of each method.
    inference_images
        Canvases (at most) in the timed inference call.
    """

    profile: str
    height: int
    width: int
    settings: EnhanceSettings
    warmup_steps: int
    timed_steps: int
    inference_images: int

    @property
    def training(self) -> EnhancerTraining:
        """One warm-up round's settings (``steps_per_epoch`` set per round)."""
        base = enhancer_training(self.settings, "rrdbnet")  # the lr times nothing
        return dataclasses.replace(base, epochs=1, steps_per_epoch=self.warmup_steps)

    @property
    def patch_share(self) -> float:
        """Pixels of a training patch over pixels of a canvas."""
        settings = self.settings
        patch = settings.patch_height * settings.patch_width
        return patch / (self.height * self.width)

    def describe(self) -> dict[str, Any]:
        """Return the sizes as plain values for the results file."""
        settings = self.settings
        return {
            "profile": self.profile,
            "config": str(CONFIGS[self.profile].relative_to(ROOT)),
            "canvas": f"{self.height}x{self.width}",
            "patch": f"{settings.patch_height}x{settings.patch_width}",
            "batch_size": settings.batch_size,
            "width": settings.width,
            "dncnn_depth": settings.dncnn_depth,
            "ddsrcnn_levels": settings.ddsrcnn_levels,
            "rrdb_blocks": settings.rrdb_blocks,
            "perceptual_weight": settings.perceptual_weight,
            "warmup_steps": self.warmup_steps,
            "timed_steps": self.timed_steps,
            "inference_images": self.inference_images,
            "inference_batch": INFERENCE_BATCH,
        }


def profile_sizes(profile: str) -> SpeedSizes:
    """Return the sizes of ``profile`` from its study file."""
    study = load_study_config(CONFIGS[profile], base_dir=ROOT)
    if study.simulation is None:
        raise ValueError(
            f"{CONFIGS[profile]} has no simulation block naming its canvas "
            "profile (cpu or paper); add one"
        )
    canvas = profile_spec(study.simulation.profile)
    sizes = SpeedSizes(
        profile=profile,
        height=canvas.canvas_height,
        width=canvas.canvas_width,
        settings=study.enhance,
        warmup_steps=5 if profile == "paper" else 2,
        timed_steps=40 if profile == "paper" else 10,
        inference_images=128 if profile == "paper" else 32,
    )
    if profile != "smoke":
        return sizes
    toy = dataclasses.replace(
        study.enhance,
        batch_size=2,
        patch_height=16,
        patch_width=16,
        width=4,
        dncnn_depth=2,
        ddsrcnn_levels=1,
        rrdb_blocks=1,
    )
    return dataclasses.replace(
        sizes,
        height=32,
        width=16,
        settings=toy,
        warmup_steps=1,
        timed_steps=2,
        inference_images=2,
    )


def noise_canvases(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Return ``(n, height, width)`` float32 noise in [0, 1]."""
    return np.random.default_rng(seed).random((n, height, width), dtype=np.float32)


def perceptual_features(sizes: SpeedSizes, device: torch.device) -> Perceptual:
    """Perceptual features of a site encoder trained for one step on noise."""
    settings = sizes.settings
    patches = noise_canvases(4, settings.patch_height, settings.patch_width, seed=9)
    spec = EncoderSpec(epochs=1, batch_size=4, device=str(device))
    encoder = train_site_encoder(patches, np.arange(4) % 4, spec)
    return PerceptualFeatures(encoder)


def _affordable(per_unit_s: float, left_s: float | None, wanted: int) -> int:
    """How many of ``wanted`` units fit in ``left_s`` (at least 2)."""
    if left_s is None:
        return wanted
    return max(2, min(wanted, int(left_s / max(per_unit_s, 1e-9))))


def measure_method(
    method: str,
    sizes: SpeedSizes,
    device: torch.device,
    perceptual: Perceptual | None,
    budget_s: float | None,
    figures: dict[str, Any],
) -> None:
    """Time one method's training and whole-scan inference; fill ``figures``.

    Parameters
    ----------
    method
        One of :data:`fedbone.models.enhancers.METHODS`.
    sizes
        Canvas, network sizes, steps and images.
    device
        Where to run.
    perceptual
        Feature extractor of the ``rrdbnet`` perceptual term (other methods
        ignore it).
    budget_s
        Seconds this method may use, or ``None`` for the full counts.
    figures
        Filled as the measurement goes, so an error leaves what was measured.
    """
    started = time.perf_counter()
    spec = enhancer_spec(method, sizes.settings)
    arrays = initial_arrays(spec, seed=0)
    figures["parameters"] = int(sum(a.size for a in arrays.values()))
    canvases = noise_canvases(TRAINING_CANVASES, sizes.height, sizes.width, seed=1)
    targets = noise_canvases(TRAINING_CANVASES, sizes.height, sizes.width, seed=2)
    batch = sizes.settings.batch_size

    def train(steps: int) -> float:
        """Seconds of the step loop of one ``steps``-step round."""
        training = dataclasses.replace(sizes.training, steps_per_epoch=steps)
        synchronize(device)
        result = train_enhancer(
            spec,
            arrays,
            canvases,
            targets,
            training=training,
            perceptual=perceptual,
            seed=0,
            device=str(device),
        )
        synchronize(device)
        return result.metrics["seconds"]

    reset_peak(device)
    warmup_step_s = train(sizes.warmup_steps) / sizes.warmup_steps
    figures["warmup_step_s"] = round(warmup_step_s, 4)
    # Half of what is left for the timed training, the rest for inference.
    left = None if budget_s is None else budget_s - (time.perf_counter() - started)
    steps = _affordable(
        warmup_step_s, None if left is None else 0.5 * left, sizes.timed_steps
    )
    train_s = train(steps)
    patches_per_s = steps * batch / train_s
    figures["timed_steps"] = steps
    figures["train_step_s"] = round(train_s / steps, 4)
    figures["train_patches_per_s"] = round(patches_per_s, 2)
    figures["train_images_per_s"] = round(patches_per_s * sizes.patch_share, 3)
    figures["train_peak_gib"] = peak_gib(device)

    reset_peak(device)
    scans = noise_canvases(
        max(sizes.inference_images, INFERENCE_BATCH), sizes.height, sizes.width, 3
    )

    def infer(count: int) -> float:
        synchronize(device)
        call_started = time.perf_counter()
        enhance(
            spec, arrays, scans[:count], batch_size=INFERENCE_BATCH, device=str(device)
        )
        synchronize(device)
        return time.perf_counter() - call_started

    warm = min(INFERENCE_BATCH, sizes.inference_images)
    per_image_s = infer(warm) / warm
    left = None if budget_s is None else budget_s - (time.perf_counter() - started)
    count = _affordable(per_image_s, left, sizes.inference_images)
    infer_s = infer(count)
    figures["inference_images"] = count
    figures["inference_images_per_s"] = round(count / infer_s, 2)
    figures["inference_peak_gib"] = peak_gib(device)


def run(
    sizes: SpeedSizes,
    device: torch.device,
    budget_s: float | None,
    write: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Measure every method; call ``write`` with the results after each.

    A method that fails is recorded with its error and the figures it had;
    the others still run.
    """
    started = time.perf_counter()
    methods: dict[str, dict[str, Any]] = {}
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": str(device),
        "sizes": sizes.describe(),
        "threads": torch.get_num_threads(),
        "budget_s": budget_s,
        # Other jobs on the machine slow every figure down; this says how busy.
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "methods": methods,
        "machine": machine(),
    }
    if device.type == "cuda":
        result["cudnn_tf32"] = torch.backends.cudnn.allow_tf32
    perceptual: Perceptual | None = None
    if sizes.settings.perceptual_weight > 0:
        perceptual = perceptual_features(sizes, device)
    for position, method in enumerate(METHODS):
        method_started = time.perf_counter()
        share = None
        if budget_s is not None:
            left = budget_s - (method_started - started)
            share = left / (len(METHODS) - position)
        figures: dict[str, Any] = {}
        record: dict[str, Any] = {"figures": figures}
        methods[method] = record
        logger.info("%s: started", method)
        try:
            measure_method(method, sizes, device, perceptual, share, figures)
        except Exception as error:
            traceback.print_exc()
            record["error"] = f"{type(error).__name__}: {error}"
        record["seconds"] = round(time.perf_counter() - method_started, 1)
        logger.info("%s: %s", method, record)
        result["wall_s"] = round(time.perf_counter() - started, 1)
        result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
        write(result)
    return result


def _value(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


#: Rows of the Markdown table: (label, figure).
_ROWS = (
    ("training patches/s", "train_patches_per_s"),
    ("training images/s equivalent", "train_images_per_s"),
    ("training s/step", "train_step_s"),
    ("timed training steps", "timed_steps"),
    ("training peak GPU GiB", "train_peak_gib"),
    ("inference images/s (whole scans)", "inference_images_per_s"),
    ("timed inference images", "inference_images"),
    ("inference peak GPU GiB", "inference_peak_gib"),
    ("parameters (RRDBNet: with discriminator)", "parameters"),
)


def render_markdown(result: dict[str, Any]) -> str:
    """Return the results as a Markdown page."""
    sizes = result["sizes"]
    methods = result["methods"]
    lines = [
        "# Enhancer speed",
        "",
        f"Dated {result['date']}. Profile {sizes['profile']} "
        f"({sizes['config']}) on {result['device']}: canvas {sizes['canvas']}, "
        f"patches {sizes['patch']}, batch {sizes['batch_size']}, width "
        f"{sizes['width']}; DnCNN depth {sizes['dncnn_depth']}, DDSRCNN levels "
        f"{sizes['ddsrcnn_levels']}, RRDBNet blocks {sizes['rrdb_blocks']} (GAN "
        f"with the perceptual term, weight {sizes['perceptual_weight']:g}). "
        f"Training: {sizes['warmup_steps']} warm-up steps, then the timed ones; "
        f"whole-scan inference in batches of {sizes['inference_batch']} after "
        "a warm-up call. "
        f"Whole run {result['wall_s']:.0f} s on {result['threads']} torch thread(s); "
        f"1-minute load average {result['load_average_1m_at_start']:g} at the "
        f"start, {result['load_average_1m_at_end']:g} at the end.",
        "",
        "Training images/s equivalent: patches/s x the patch's share of the "
        "canvas's pixels.",
        "",
        "| figure | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for label, key in _ROWS:
        values = [_value(record["figures"].get(key)) for record in methods.values()]
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    lines.append("")
    for method, record in methods.items():
        if "error" in record:
            lines += [
                f"**{method} failed** after {record['seconds']} s: {record['error']}",
                "",
            ]
    lines += ["## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in result["machine"].items()]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=list(CONFIGS), default="cpu")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds for all methods after start-up (default: the full counts)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's; 1 with --profile smoke)",
    )
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--stem", default="enhance_speed", help="results file name")
    parser.add_argument(
        "--out", default=os.environ.get("OUT"), help="also copy the files here"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure, write the results; return 0 when every method succeeded."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    sizes = profile_sizes(args.profile)
    if args.profile == "smoke":
        folder = args.results_dir or Path(tempfile.mkdtemp(prefix="fedbone-enhance-"))
    else:
        folder = args.results_dir or BENCH / "results"

    def write(result: dict[str, Any]) -> None:
        write_results(result, folder, args.stem, args.out, render_markdown)

    # One thread at toy size: spinning threads swamp tiny kernels.
    threads = 1 if args.profile == "smoke" and args.threads is None else args.threads
    with torch_threads(threads):
        result = run(sizes, device, args.budget_s, write)
    print(f"wrote {folder / args.stem}.json and .md")
    return 1 if any("error" in record for record in result["methods"].values()) else 0


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True
    )
    sys.exit(main())
