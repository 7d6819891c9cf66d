"""One tiny study over phantom sites, and the tiny GAN and classifier it uses.

Every integration test and deployment benchmark runs the same kind of study:
small CNN, one local epoch, phantom sites at 0.1% of their profile size, one
worker. :func:`tiny_study` writes that once; a test passes only the sections
(or keys of a section) it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fedbone.classifier.local import TrainSpec
from fedbone.config.synthetic import GanSettings
from fedbone.models import Architecture, ClassifierSpec, Norm


def tiny_study(
    root: Path,
    name: str,
    phases: list[str],
    *,
    sites: list[str] | tuple[str, ...] = ("A", "B", "C"),
    min_scans: int = 24,
    **sections: Any,
) -> dict[str, Any]:
    """Return the study mapping; ``sections`` update the defaults key by key.

    A section given as a mapping updates the default section of that name
    (``training={"rounds": 3}`` keeps ``local_epochs`` and ``min_train_sites``);
    ``study``, ``simulation`` and ``output`` are updated the same way.
    """
    study: dict[str, Any] = {
        "study": {"name": name, "task": "bm", "phases": list(phases)},
        "model": {"architecture": "small-cnn"},
        "training": {"rounds": 1, "local_epochs": 1, "min_train_sites": 2},
        "simulation": {
            "sites_dir": str(root / "sites"),
            "sites": list(sites),
            "scale": 0.001,
            "min_scans": min_scans,
            "workers": 1,
        },
        "output": {"runs_dir": str(root / "runs")},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(study.get(section), dict):
            study[section] = {**study[section], **values}
        else:
            study[section] = values
    return study


def write_tiny_study(
    root: Path,
    name: str,
    phases: list[str],
    *,
    filename: str = "study.yaml",
    **options: Any,
) -> Path:
    """Write :func:`tiny_study` to ``root/<filename>`` and return its path."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / filename
    path.write_text(yaml.safe_dump(tiny_study(root, name, phases, **options)))
    return path


TINY_GAN: dict[str, Any] = {
    "batch_size": 4,
    "base_channels": 4,
    "max_channels": 8,
    "latent_dim": 8,
    "fd_images_per_class": 4,
    "encoder_epochs": 1,
    "curation_epochs": 1,
}
"""GAN settings small enough for a whole study to run in a test."""


def tiny_gan_settings(**changes: Any) -> GanSettings:
    """Return :data:`TINY_GAN` as settings, with ``changes`` (e.g. ``steps=4``)."""
    return GanSettings(**{**TINY_GAN, **changes})


SMALL_CNN = ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.BATCH)
ONE_EPOCH = TrainSpec(epochs=1, batch_size=8, device="cpu")
"""The classifier and training the tiny GAN's curation and encoder use."""
