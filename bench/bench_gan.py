"""GAN benchmark: local training and generation throughput of the conditional GAN.

Run with ``.venv/bin/python bench/bench_gan.py`` (CPU profile, 256 x 64) or
``--profile paper --device cuda`` (1024 x 256). Writes
``bench/results/gan.json`` and ``.md`` with machine info (``--tag`` adds a
suffix to the file names so a GPU run does not overwrite the CPU figures).

Training images/s counts real images per step (each step also generates as
many fakes, and updates D then G); it is measured over ``--steps`` steps after
two warm-up steps, with lazy R1 every 16 steps included in proportion.
Generation images/s is the EMA generator in inference mode. Throughput does not
depend on image content, so the "real" images are uniform noise on the canvas.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import machine_info

from fedbone.generative.trainer import GanTrainer, GanTrainSpec
from fedbone.models.gan import GanSpec

RESULTS = Path(__file__).resolve().parent / "results"

#: GAN sizes per preprocessing profile: small widths for CPU, paper-like on GPU.
SPECS = {
    "cpu": GanSpec(height=256, width=64, base_channels=16, max_channels=128),
    "paper": GanSpec(height=1024, width=256, base_channels=32, max_channels=512),
}


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.3f}"


def measure(
    spec: GanSpec, train: GanTrainSpec, steps: int, n_generate: int
) -> dict[str, float]:
    """Time ``steps`` training steps and the generation of ``n_generate`` images."""
    rng = np.random.default_rng(0)
    images = rng.random((256, spec.height, spec.width), dtype=np.float32)
    labels = rng.integers(0, spec.n_classes, len(images))
    trainer = GanTrainer(spec, train)
    trainer.train(images, labels, steps=2)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    trainer.train(images, labels, steps=steps)
    sync()
    train_s = time.perf_counter() - start
    wanted = np.arange(n_generate) % spec.n_classes
    trainer.generate(wanted[: train.batch_size], seed=0)
    sync()
    start = time.perf_counter()
    trainer.generate(wanted, seed=1, batch_size=64)
    sync()
    generate_s = time.perf_counter() - start
    return {
        "train_images_per_s": steps * train.batch_size / train_s,
        "train_step_s": train_s / steps,
        "generate_images_per_s": n_generate / generate_s,
        "generator_parameters": _parameters(trainer.generator),
        "discriminator_parameters": _parameters(trainer.discriminator),
    }


def main() -> None:
    """Measure, then write the JSON and Markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(SPECS), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--generate", type=int, default=128)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    spec = SPECS[args.profile]
    train = GanTrainSpec(batch_size=args.batch_size, device=args.device)
    figures = measure(spec, train, args.steps, args.generate)
    settings = {
        "profile": args.profile,
        "canvas": f"{spec.height}x{spec.width}",
        "base_channels": spec.base_channels,
        "max_channels": spec.max_channels,
        "latent_dim": spec.latent_dim,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "device": args.device,
        "amp": "bfloat16 autocast" if args.device.startswith("cuda") else "off (CPU)",
        "threads": torch.get_num_threads(),
        "r1": "lazy, every 16 steps, gamma 1",
    }
    if args.device.startswith("cuda"):
        settings["gpu"] = torch.cuda.get_device_name()
    result = {
        "machine": machine_info(),
        "settings": settings,
        "figures": {k: round(v, 3) for k, v in figures.items()},
    }
    name = "gan" + (f"_{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Conditional GAN benchmark",
        "",
        f"Profile {args.profile} ({settings['canvas']}), device {args.device}, "
        f"batch {args.batch_size}, base channels {spec.base_channels}.",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {k} | {_number(v)} |" for k, v in result["figures"].items()),
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()),
        "",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    json.dump(result, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
