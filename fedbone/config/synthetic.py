"""Study settings for the generative part: GAN training, synthesis, mixing.

Three optional top-level sections of the study YAML::

    gan:                        # phase `gan`
      mode: local               # local: each listed site trains its own GAN;
                                # federated: G and D averaged across the sites
      sites: [A]                # sites that train (default: every train site)
      steps: 600                # local steps in all, at each site
      checkpoint_every: 200     # local: checkpoint + FD every this many steps
      rounds: 3                 # federated: rounds (steps // rounds each);
                                # every round's global model is a checkpoint
      batch_size: 16
      lr: 0.002
      base_channels: 8          # CPU size; the paper profile uses 64/512
      max_channels: 64
      latent_dim: 64
      r1_gamma: 1.0
      ada_target: 0.6           # null disables adaptive augmentation
      class_loss_weight: 0.0    # auxiliary class loss (AC-GAN); 0 disables
      diversity_weight: 0.0     # mode-seeking term against a class collapsing
                                # to one scan; 0 disables
      fd_images_per_class: 64
      encoder: site             # site (trained at the site) | torchscript
      encoder_sha256: null      # torchscript: the sha256 of the file each site
                                # lists in its policy.encoders (no path here)
      encoder_epochs: 4
      curation_epochs: 10       # the site's curation classifier
    synthesis:                  # phase `synthesize`
      n_per_class: 100
      classes: [0, 1, 2, 3]     # 2*bm + ca
      truncation: 1.0
      max_attempts: 8           # batches per class until n_per_class pass
                                # curation and audit (a shortfall is reported)
      recipients: []            # sites receiving the pool (default: train sites)
    synthetic_training:         # used by phase `train`
      sites: [B]                # a `local-<site>-syn<r>` model per ratio
      ratios: [5]               # synthetic images per real scan (1:5)
      synthetic_only: false     # also `local-<site>-synonly`

Site ids are checked against the census when the study runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedbone.config.reader import (
    SettingsCollector,
    flag,
    names,
    number,
    one_of,
    optional_number,
    setting_keys,
    whole,
)

__all__ = [
    "SYNTHETIC_SECTIONS",
    "GanSettings",
    "SynthesisSettings",
    "SyntheticTrainingSettings",
    "read_gan",
    "read_synthesis",
    "read_synthetic_training",
    "synthetic_model_name",
]

GAN_MODES = ("local", "federated")
ENCODERS = ("site", "torchscript")


@dataclass(frozen=True)
class GanSettings:
    """How the conditional GAN is trained (phase ``gan``)."""

    mode: str = one_of("local", GAN_MODES)
    sites: tuple[str, ...] = names()
    steps: int = whole(600, 1, 10_000_000)
    checkpoint_every: int = whole(200, 1, 10**7)
    rounds: int = whole(3, 1, 10_000)
    batch_size: int = whole(16, 2, 4096)
    lr: float = number(2e-3, 1e-7, 1.0)
    base_channels: int = whole(8, 1, 1024)
    max_channels: int = whole(64, 1, 4096)
    latent_dim: int = whole(64, 1, 4096)
    r1_gamma: float = number(1.0, 0.0, 1000.0)
    ada_target: float | None = optional_number(0.6, 0.0, 1.0)
    class_loss_weight: float = number(0.0, 0.0, 100.0)
    diversity_weight: float = number(0.0, 0.0, 100.0)
    fd_images_per_class: int = whole(64, 2, 100_000)
    encoder: str = one_of("site", ENCODERS)
    encoder_path: str | None = None
    encoder_sha256: str | None = None
    encoder_epochs: int = whole(4, 1, 1000)
    curation_epochs: int = whole(10, 1, 1000)


@dataclass(frozen=True)
class SynthesisSettings:
    """What each generator site makes, curates and audits (phase ``synthesize``).

    Parameters
    ----------
    n_per_class
        Released images wanted per class: generated in batches until this many
        pass curation and the audit.
    classes
        Conditioning classes ``2 * bm + ca`` to generate.
    truncation
        Truncation of the generator's style (1: none).
    max_attempts
        Batches per class at most, so at most ``max_attempts * n_per_class``
        images of a class are generated; a class still short after them is
        reported as ``n-shortfall-class-<c>``.
    recipients
        Sites receiving the pool (default: the train sites).
    """

    n_per_class: int = whole(100, 1, 1_000_000)
    classes: tuple[int, ...] = (0, 1, 2, 3)
    truncation: float = number(1.0, 0.0, 2.0)
    max_attempts: int = whole(8, 1, 1000)
    recipients: tuple[str, ...] = names()


@dataclass(frozen=True)
class SyntheticTrainingSettings:
    """Which models the ``train`` phase trains with pooled synthetic images."""

    sites: tuple[str, ...] = names()
    ratios: tuple[float, ...] = ()
    synthetic_only: bool = flag(False)

    def model_names(self) -> dict[str, tuple[str, float | None]]:
        """Return ``name -> (site, ratio)``; ratio ``None`` is synthetic-only."""
        names: dict[str, tuple[str, float | None]] = {}
        for site in self.sites:
            for ratio in self.ratios:
                names[synthetic_model_name(site, ratio)] = (site, ratio)
            if self.synthetic_only:
                names[synthetic_model_name(site, None)] = (site, None)
        return names


SYNTHETIC_SECTIONS: dict[str, set[str]] = {
    "gan": setting_keys(GanSettings),
    "synthesis": setting_keys(SynthesisSettings),
    "synthetic_training": setting_keys(SyntheticTrainingSettings),
}


def synthetic_model_name(site: str, ratio: float | None) -> str:
    """Name of site ``site``'s model trained with ratio ``ratio`` (``None``: only)."""
    if ratio is None:
        return f"local-{site}-synonly"
    text = f"{ratio:g}".replace(".", "p")
    return f"local-{site}-syn{text}"


def read_gan(c: SettingsCollector, raw: Mapping[str, Any]) -> GanSettings:
    """Read the ``gan`` section (defaults when absent)."""
    g = c.section(raw, "gan")
    path, sha = g.get("encoder_path"), g.get("encoder_sha256")
    settings = c.settings(
        g, "gan", GanSettings, encoder_sha256=str(sha).lower() if sha else None
    )
    if path:
        c.add(
            "site-setting",
            "gan.encoder_path",
            "a study never names a file at a site (loading TorchScript runs its "
            "code): name the encoder by encoder_sha256 and let each site list "
            "the file in its own policy.encoders",
        )
    if settings.encoder == "torchscript" and not (
        isinstance(sha, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha)
    ):
        c.add(
            "missing-key",
            "gan.encoder_sha256",
            "a torchscript encoder is named by the sha256 of its file (64 hex "
            "characters); each site lists the file in its policy.encoders",
        )
    if settings.steps < settings.rounds:
        c.add(
            "invalid-value",
            "gan.steps",
            f"{settings.steps} steps cannot be split over {settings.rounds} "
            "federated rounds; use steps >= rounds",
        )
    return settings


def read_synthesis(c: SettingsCollector, raw: Mapping[str, Any]) -> SynthesisSettings:
    """Read the ``synthesis`` section (defaults when absent)."""
    s = c.section(raw, "synthesis")
    classes = s.get("classes", list(SynthesisSettings.classes))
    if (
        not isinstance(classes, list | tuple)
        or not classes
        or not all(isinstance(v, int) and 0 <= v <= 3 for v in classes)
        or len(set(classes)) != len(classes)
    ):
        c.add(
            "invalid-value",
            "synthesis.classes",
            "expected distinct class ids 0-3 (class = 2 * bm + ca)",
        )
        classes = list(SynthesisSettings.classes)
    return c.settings(
        s, "synthesis", SynthesisSettings, classes=tuple(int(v) for v in classes)
    )


def read_synthetic_training(
    c: SettingsCollector, raw: Mapping[str, Any]
) -> SyntheticTrainingSettings:
    """Read the ``synthetic_training`` section (defaults when absent)."""
    t = c.section(raw, "synthetic_training")
    ratios = t.get("ratios", list(SyntheticTrainingSettings.ratios))
    if not isinstance(ratios, list | tuple) or not all(
        isinstance(r, int | float) and not isinstance(r, bool) and 0 < r <= 10_000
        for r in ratios
    ):
        c.add(
            "invalid-value",
            "synthetic_training.ratios",
            "expected synthetic images per real scan, each in (0, 10000], "
            "e.g. [1, 2, 5, 10, 25, 50, 100]",
        )
        ratios = []
    settings = c.settings(
        t,
        "synthetic_training",
        SyntheticTrainingSettings,
        ratios=tuple(float(r) for r in ratios),
    )
    if settings.sites and not (settings.ratios or settings.synthetic_only):
        c.add(
            "invalid-value",
            "synthetic_training.ratios",
            "sites are listed but no ratio and no synthetic_only: nothing to train",
        )
    return settings
