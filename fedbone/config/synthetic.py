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
      fd_images_per_class: 64
      encoder: site             # site (trained at the site) | torchscript
      encoder_path: null        # torchscript: a local file (e.g. Inception)
      encoder_sha256: null
      encoder_epochs: 4
      curation_epochs: 10       # the site's curation classifier
    synthesis:                  # phase `synthesize`
      n_per_class: 100
      classes: [0, 1, 2, 3]     # 2*bm + ca
      truncation: 1.0
      recipients: []            # sites receiving the pool (default: train sites)
    synthetic_training:         # used by phase `train`
      sites: [B]                # a `local-<site>-syn<r>` model per ratio
      ratios: [5]               # synthetic images per real scan (1:5)
      synthetic_only: false     # also `local-<site>-synonly`

Site ids are checked against the census when the study runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedbone.config.reader import StudyCollector

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

    mode: str = "local"
    sites: tuple[str, ...] = ()
    steps: int = 600
    checkpoint_every: int = 200
    rounds: int = 3
    batch_size: int = 16
    lr: float = 2e-3
    base_channels: int = 8
    max_channels: int = 64
    latent_dim: int = 64
    r1_gamma: float = 1.0
    ada_target: float | None = 0.6
    fd_images_per_class: int = 64
    encoder: str = "site"
    encoder_path: str | None = None
    encoder_sha256: str | None = None
    encoder_epochs: int = 4
    curation_epochs: int = 10


@dataclass(frozen=True)
class SynthesisSettings:
    """What each generator site makes, curates and audits (phase ``synthesize``)."""

    n_per_class: int = 100
    classes: tuple[int, ...] = (0, 1, 2, 3)
    truncation: float = 1.0
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class SyntheticTrainingSettings:
    """Which models the ``train`` phase trains with pooled synthetic images."""

    sites: tuple[str, ...] = ()
    ratios: tuple[float, ...] = ()
    synthetic_only: bool = False

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
    "gan": set(GanSettings.__dataclass_fields__),
    "synthesis": set(SynthesisSettings.__dataclass_fields__),
    "synthetic_training": set(SyntheticTrainingSettings.__dataclass_fields__),
}


def synthetic_model_name(site: str, ratio: float | None) -> str:
    """Name of site ``site``'s model trained with ratio ``ratio`` (``None``: only)."""
    if ratio is None:
        return f"local-{site}-synonly"
    text = f"{ratio:g}".replace(".", "p")
    return f"local-{site}-syn{text}"


def read_gan(c: StudyCollector, raw: Mapping[str, Any]) -> GanSettings:
    """Read the ``gan`` section (defaults when absent)."""
    g = c.section(raw, "gan")
    d = GanSettings()
    ada = g.get("ada_target", d.ada_target)
    if ada is not None:
        ada = c.number(g, "ada_target", "gan.ada_target", 0.6, 0.0, 1.0)
    encoder = c.one_of(g, "encoder", "gan.encoder", ENCODERS, d.encoder)
    path, sha = g.get("encoder_path"), g.get("encoder_sha256")
    if encoder == "torchscript" and not (path and sha):
        c.add(
            "missing-key",
            "gan.encoder_path",
            "a torchscript encoder needs a local file (encoder_path) and its "
            "sha256 (encoder_sha256); nothing is downloaded",
        )
    steps = c.integer(g, "steps", "gan.steps", d.steps, 1, 10_000_000)
    rounds = c.integer(g, "rounds", "gan.rounds", d.rounds, 1, 10_000)
    if steps < rounds:
        c.add(
            "invalid-value",
            "gan.steps",
            f"{steps} steps cannot be split over {rounds} federated rounds; "
            "use steps >= rounds",
        )
    return GanSettings(
        mode=c.one_of(g, "mode", "gan.mode", GAN_MODES, d.mode),
        sites=c.names(g, "sites", "gan.sites"),
        steps=steps,
        rounds=rounds,
        checkpoint_every=c.integer(
            g, "checkpoint_every", "gan.checkpoint_every", d.checkpoint_every, 1, 10**7
        ),
        batch_size=c.integer(g, "batch_size", "gan.batch_size", d.batch_size, 2, 4096),
        lr=c.number(g, "lr", "gan.lr", d.lr, 1e-7, 1.0),
        base_channels=c.integer(
            g, "base_channels", "gan.base_channels", d.base_channels, 1, 1024
        ),
        max_channels=c.integer(
            g, "max_channels", "gan.max_channels", d.max_channels, 1, 4096
        ),
        latent_dim=c.integer(g, "latent_dim", "gan.latent_dim", d.latent_dim, 1, 4096),
        r1_gamma=c.number(g, "r1_gamma", "gan.r1_gamma", d.r1_gamma, 0.0, 1000.0),
        ada_target=ada,
        fd_images_per_class=c.integer(
            g,
            "fd_images_per_class",
            "gan.fd_images_per_class",
            d.fd_images_per_class,
            2,
            100_000,
        ),
        encoder=encoder,
        encoder_path=str(path) if path else None,
        encoder_sha256=str(sha) if sha else None,
        encoder_epochs=c.integer(
            g, "encoder_epochs", "gan.encoder_epochs", d.encoder_epochs, 1, 1000
        ),
        curation_epochs=c.integer(
            g, "curation_epochs", "gan.curation_epochs", d.curation_epochs, 1, 1000
        ),
    )


def read_synthesis(c: StudyCollector, raw: Mapping[str, Any]) -> SynthesisSettings:
    """Read the ``synthesis`` section (defaults when absent)."""
    s = c.section(raw, "synthesis")
    d = SynthesisSettings()
    classes = s.get("classes", list(d.classes))
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
        classes = list(d.classes)
    return SynthesisSettings(
        n_per_class=c.integer(
            s, "n_per_class", "synthesis.n_per_class", d.n_per_class, 1, 1_000_000
        ),
        classes=tuple(int(v) for v in classes),
        truncation=c.number(
            s, "truncation", "synthesis.truncation", d.truncation, 0.0, 2.0
        ),
        recipients=c.names(s, "recipients", "synthesis.recipients"),
    )


def read_synthetic_training(
    c: StudyCollector, raw: Mapping[str, Any]
) -> SyntheticTrainingSettings:
    """Read the ``synthetic_training`` section (defaults when absent)."""
    t = c.section(raw, "synthetic_training")
    ratios = t.get("ratios", [])
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
    settings = SyntheticTrainingSettings(
        sites=c.names(t, "sites", "synthetic_training.sites"),
        ratios=tuple(float(r) for r in ratios),
        synthetic_only=c.flag(
            t, "synthetic_only", "synthetic_training.synthetic_only", False
        ),
    )
    if settings.sites and not (settings.ratios or settings.synthetic_only):
        c.add(
            "invalid-value",
            "synthetic_training.ratios",
            "sites are listed but no ratio and no synthetic_only: nothing to train",
        )
    return settings
