"""Study settings of phase ``enhance``: fast-scan enhancement and denoising.

One optional top-level section of the study YAML::

    enhance:
      methods: [gaussian, dncnn, ddsrcnn, rrdbnet]   # gaussian: the classical
                                  # baseline (its sigma fitted at each site)
      levels: ["2x", "3x"]        # simulated by binomial thinning of the raw
                                  # counts: "<k>x" keeps 1/k of them, "<n>k"
                                  # keeps n kcounts of each view
      real_pairs: true            # also evaluate on sites' real fast scans
      train_on_real_pairs: false  # and train the networks on them too (Qi
                                  # et al.'s "real" model; default: thinned
                                  # pairs only, the "simulated" model)
      rounds: 3                   # federated rounds per trained method
      local_epochs: 1
      steps_per_epoch: 40         # patch batches per local epoch
      batch_size: 8
      patch_height: 64
      patch_width: 32
      lr: 0.0002                  # RRDBNet-GAN: Adam (0.9, 0.999), as Qi et al.
      denoiser_lr: 0.001          # DnCNN and DDSRCNN (Zhang et al.: 1e-3)
      width: 32                   # feature channels of every network
      rrdb_blocks: 2              # RRDBNet blocks (paper profile: 9)
      dncnn_depth: 8              # DnCNN layers (the original: 17)
      ddsrcnn_levels: 2           # encoder-decoder down-sampling steps
      perceptual_weight: 1.0      # RRDBNet-GAN loss (Qi et al.): perceptual
      l1_weight: 0.005            #   + 0.005 L1 + 0.01 BCE + 0.001 GAN
      bce_weight: 0.01
      gan_weight: 0.001
      encoder_epochs: 4           # the site's own encoder (perceptual loss,
                                  # FD and the perceptual distance)
      perceptual_encoder_sha256: null  # or the sha256 of a TorchScript file
                                  # (e.g. a VGG) each site lists in its
                                  # policy.encoders: RRDBNet's perceptual loss
      noninferiority_margin: 0.05 # AUC margin of the diagnostic-equivalence test
      examples: 3                 # phantom triplets shown in the report

The networks are trained by every ``train`` site on its own scans (FedAvg of
the weights); every site evaluates them on its validation split.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedbone.config.reader import (
    SettingsCollector,
    flag,
    number,
    setting_keys,
    subset,
    whole,
)

__all__ = [
    "ENHANCE_METHODS",
    "ENHANCE_SECTIONS",
    "TRAINED_METHODS",
    "EnhanceSettings",
    "level_problem",
    "read_enhance",
]

#: Every method a study can compare; ``gaussian`` needs no federated training.
ENHANCE_METHODS = ("gaussian", "dncnn", "ddsrcnn", "rrdbnet")
TRAINED_METHODS = ("dncnn", "ddsrcnn", "rrdbnet")
_SPEED = re.compile(r"(\d+(?:\.\d+)?)x")
_KCOUNTS = re.compile(r"(\d+)k")
MAX_LEVELS = 6


@dataclass(frozen=True)
class EnhanceSettings:
    """How phase ``enhance`` trains and evaluates the enhancers."""

    methods: tuple[str, ...] = subset(ENHANCE_METHODS, ENHANCE_METHODS)
    levels: tuple[str, ...] = ("2x", "3x")
    real_pairs: bool = flag(True)
    train_on_real_pairs: bool = flag(False)
    rounds: int = whole(3, 1, 1000)
    local_epochs: int = whole(1, 1, 1000)
    steps_per_epoch: int = whole(40, 1, 100_000)
    batch_size: int = whole(8, 1, 256)
    patch_height: int = whole(64, 16, 1024)
    patch_width: int = whole(32, 16, 1024)
    lr: float = number(2e-4, 1e-7, 1.0)
    denoiser_lr: float = number(1e-3, 1e-7, 1.0)
    width: int = whole(32, 4, 256)
    rrdb_blocks: int = whole(2, 1, 32)
    dncnn_depth: int = whole(8, 3, 40)
    ddsrcnn_levels: int = whole(2, 1, 5)
    perceptual_weight: float = number(1.0, 0.0, 100.0)
    l1_weight: float = number(0.005, 0.0, 100.0)
    bce_weight: float = number(0.01, 0.0, 100.0)
    gan_weight: float = number(0.001, 0.0, 100.0)
    encoder_epochs: int = whole(4, 1, 1000)
    perceptual_encoder_sha256: str | None = None
    noninferiority_margin: float = number(0.05, 0.0, 0.5)
    examples: int = whole(3, 0, 16)

    @property
    def trained_methods(self) -> tuple[str, ...]:
        """The methods that need federated training, in the study's order."""
        return tuple(m for m in self.methods if m in TRAINED_METHODS)


ENHANCE_SECTIONS: dict[str, set[str]] = {"enhance": setting_keys(EnhanceSettings)}


def level_problem(level: Any) -> str | None:
    """Why ``level`` is not a count level (``None`` when it is one).

    ``"<k>x"`` keeps ``1/k`` of the counts, ``1 < k <= 10``; ``"<n>k"`` keeps
    ``n`` kcounts of each view, ``10 <= n <= 100000``.
    """
    text = str(level)
    speed = _SPEED.fullmatch(text)
    if speed is not None:
        if 1.0 < float(speed.group(1)) <= 10.0:
            return None
        return f"{text!r}: a speed must lie in (1, 10], e.g. '2x'"
    kcounts = _KCOUNTS.fullmatch(text)
    if kcounts is not None:
        if 10 <= int(kcounts.group(1)) <= 100_000:
            return None
        return f"{text!r}: kcounts must lie in [10, 100000], e.g. '300k'"
    return f"{text!r}: use '<k>x' (a k-times faster scan) or '<n>k' (n kcounts)"


def read_enhance(c: SettingsCollector, raw: Mapping[str, Any]) -> EnhanceSettings:
    """Read the ``enhance`` section (defaults when absent), every problem listed."""
    section = c.section(raw, "enhance")
    levels = section.get("levels", EnhanceSettings.levels)
    if not isinstance(levels, list | tuple) or not levels:
        c.add(
            "invalid-value", "enhance.levels", "list one or more levels, e.g. [2x, 3x]"
        )
        levels = EnhanceSettings.levels
    levels = tuple(str(level) for level in levels)
    for level in levels:
        problem = level_problem(level)
        if problem is not None:
            c.add("invalid-value", "enhance.levels", problem)
    if len(set(levels)) != len(levels) or len(levels) > MAX_LEVELS:
        c.add(
            "invalid-value",
            "enhance.levels",
            f"levels must be distinct, at most {MAX_LEVELS}",
        )
    sha = section.get("perceptual_encoder_sha256")
    if sha is not None and not (
        isinstance(sha, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha)
    ):
        c.add(
            "invalid-value",
            "enhance.perceptual_encoder_sha256",
            "name the encoder by the sha256 of its file (64 hex characters); "
            "each site lists the file in its policy.encoders",
        )
        sha = None
    settings = c.settings(
        section,
        "enhance",
        EnhanceSettings,
        levels=levels,
        perceptual_encoder_sha256=sha.lower() if sha else None,
    )
    if not settings.methods:
        c.add("invalid-value", "enhance.methods", "name at least one method")
    for name, size in (
        ("patch_height", settings.patch_height),
        ("patch_width", settings.patch_width),
    ):
        if size % 4:
            c.add(
                "invalid-value",
                f"enhance.{name}",
                f"{size} is not a multiple of 4 (the networks down-sample twice)",
            )
    return settings
