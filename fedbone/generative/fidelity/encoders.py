"""Feature encoders for fidelity metrics and the audit, loaded only from local files.

Fréchet distance, KID, precision/recall and the audit's feature-space rule all
compare images through an encoder
(:data:`fedbone.generative.audit.similarity.FeatureFn`).
fedbone never downloads one, so there are two kinds:

* :class:`SiteEncoder`, the **offline default**, trained by
  :func:`train_site_encoder` at the site on its own real training scans. It is a
  small CNN: four strided blocks (3x3 convolution with stride 2, then a 3x3
  convolution, each followed by GroupNorm and SiLU; 16, 32, 64, 128 channels),
  global average pooling, a ``feature_dim`` linear *embedding* layer and a
  linear head over the 4 conditioning classes of
  :func:`fedbone.generative.trainer.class_labels` (no BM/CA, CA only, BM only, both).
  It is trained with cross-entropy and Adam on class-balanced batches (each
  draw picks a class uniformly, then one of its scans, so a class with a single
  scan still counts) under light augmentation: random shifts of up to 1/32 of
  each side with zero fill, and intensity scaling by a factor in [0.85, 1.15]
  clipped to [0, 1]. Its features are the L2-normalised embedding: the head
  forces the embedding to separate what matters for the study's labels, and
  the normalisation makes distances independent of image brightness scale.

  Why train one: without internet the only weights a site can trust are those it
  produced itself. The price is that the feature space depends on the site's
  data, so Fréchet distances from a site encoder are comparable within one
  site and study (model selection, rounds, ratios), **not across studies** or
  with published FID values.
* :class:`TorchScriptEncoder`, for a TorchScript network the site supplies as a
  local file with its sha256, e.g. the Inception-v3 of FID implementations
  (``inception-2015-12-05.pt``), which gives an "FID" comparable with the
  literature. The checksum is checked before ``torch.jit.load`` reads the file.

:func:`load_feature_encoder` builds either from configuration values.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from fedbone.classifier.local import resolve_device, seed_everything
from fedbone.errors import Problem
from fedbone.generative.trainer import ImageReader
from fedbone.models.weights import file_sha256
from fedbone.validation.errors import EvaluationError

__all__ = [
    "EncoderSpec",
    "SiteEncoder",
    "TorchScriptEncoder",
    "load_feature_encoder",
    "train_site_encoder",
]

logger = logging.getLogger(__name__)

N_CLASSES = 4
_FORMAT = 1
_WIDTHS = (16, 32, 64, 128)
_DOWNSAMPLING = 2 ** len(_WIDTHS)
_SHIFT_FRACTION = 1 / 32
_INTENSITY_RANGE = (0.85, 1.15)
_GROUPS = 8


@dataclass(frozen=True)
class EncoderSpec:
    """Settings of the site-trained encoder.

    Parameters
    ----------
    feature_dim
        Length of the embedding (the feature vector).
    epochs
        Training epochs; an epoch draws as many scans as the site has.
    batch_size
        Scans per step (training) and per forward pass (embedding).
    lr
        Adam learning rate.
    seed
        Seed of weights, batch draws and augmentation.
    device
        ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
    """

    feature_dim: int = 64
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        problems = []
        if self.feature_dim < 2:
            problems.append(Problem("feature-dim", "must be at least 2", "feature_dim"))
        if self.epochs < 1:
            problems.append(Problem("epochs", "must be at least 1", "epochs"))
        if self.batch_size < 1:
            problems.append(Problem("batch-size", "must be at least 1", "batch_size"))
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(
                Problem("learning-rate", "must be a positive number, e.g. 1e-3", "lr")
            )
        if self.seed < 0:
            problems.append(Problem("seed", "must be non-negative", "seed"))
        if not self.device:
            problems.append(
                Problem("device", "use auto, cpu, cuda or cuda:N", "device")
            )
        EvaluationError.raise_if_any("encoder spec", problems)


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=2, padding=1),
        nn.GroupNorm(_GROUPS, outputs),
        nn.SiLU(),
        nn.Conv2d(outputs, outputs, 3, padding=1),
        nn.GroupNorm(_GROUPS, outputs),
        nn.SiLU(),
    )


class _EncoderNet(nn.Module):
    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        widths = (1, *_WIDTHS)
        self.blocks = nn.Sequential(*(_block(a, b) for a, b in pairwise(widths)))
        self.embedding = nn.Linear(_WIDTHS[-1], feature_dim)
        self.head = nn.Linear(feature_dim, N_CLASSES)

    def embed(self, images: Tensor) -> Tensor:
        return self.embedding(self.blocks(images).mean(dim=(2, 3)))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.embed(images))


def _read_rows(images: np.ndarray | ImageReader, positions: np.ndarray) -> np.ndarray:
    """Rows ``positions`` as float32; a memory map is read in ascending order."""
    if callable(images):
        return np.asarray(images(positions), dtype=np.float32)
    order = np.argsort(positions, kind="stable")
    batch = np.empty((len(positions), *images.shape[1:]), dtype=np.float32)
    batch[order] = images[positions[order]]
    return batch


def _check_images(images: np.ndarray, what: str) -> list[Problem]:
    if images.ndim != 3:
        return [
            Problem(
                "image-shape",
                f"expected (N, H, W) images, got shape {images.shape}",
                what,
            )
        ]
    if images.shape[0] == 0:
        return [Problem("no-images", "expected at least one image", what)]
    return []


class SiteEncoder:
    """The site-trained encoder (see the module docstring for how and why).

    Build it with :func:`train_site_encoder` or :meth:`load`.

    Attributes
    ----------
    spec
        The settings it was trained with.
    canvas
        ``(H, W)`` of the images it was trained on (and accepts).
    sha256
        sha256 of the file it was saved to or loaded from; None before that.
    name
        ``"site-encoder"``.
    """

    name = "site-encoder"

    def __init__(
        self,
        network: _EncoderNet,
        spec: EncoderSpec,
        canvas: tuple[int, int],
        *,
        device: str = "auto",
        sha256: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.spec = spec
        self.canvas = canvas
        self.sha256 = sha256

    @torch.no_grad()
    def embed(self, images: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings of ``(N, H, W)`` images in [0, 1].

        Returns
        -------
        numpy.ndarray
            ``(N, feature_dim)`` float64.

        Raises
        ------
        EvaluationError
            When the images are not ``(N, H, W)`` at the encoder's canvas.
        """
        problems = _check_images(images, "images")
        if not problems and images.shape[1:] != self.canvas:
            problems.append(
                Problem(
                    "canvas-mismatch",
                    f"the encoder was trained on {self.canvas} canvases, got "
                    f"{images.shape[1:]}; embed images prepared with the same "
                    "preprocessing spec",
                    "images",
                )
            )
        EvaluationError.raise_if_any("images to embed", problems)
        self.network.eval()
        features = []
        for start in range(0, len(images), self.spec.batch_size):
            batch = np.asarray(
                images[start : start + self.spec.batch_size], dtype=np.float32
            )
            tensor = torch.from_numpy(batch).unsqueeze(1).to(self.device)
            embedding = functional.normalize(self.network.embed(tensor), dim=1)
            features.append(embedding.double().cpu().numpy())
        return np.concatenate(features)

    def save(self, path: str | Path) -> str:
        """Write the encoder to ``path``; return (and remember) the file's sha256."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format": _FORMAT,
            "kind": self.name,
            "spec": asdict(self.spec),
            "canvas": list(self.canvas),
            "weights": {k: v.cpu() for k, v in self.network.state_dict().items()},
        }
        torch.save(state, target)
        self.sha256 = file_sha256(target)
        logger.info("site encoder %s sha256 %s", target, self.sha256)
        return self.sha256

    @classmethod
    def load(
        cls, path: str | Path, *, sha256: str | None = None, device: str = "auto"
    ) -> SiteEncoder:
        """Read an encoder written by :meth:`save`.

        Parameters
        ----------
        path
            The encoder file.
        sha256
            Its expected sha256, checked before the file is read when given.
        device
            Where to run it (``auto``: CUDA when present).

        Raises
        ------
        EvaluationError
            When the file is missing, its sha256 differs or it is not a site
            encoder file.
        """
        source = Path(path)
        actual = _verified_sha256(source, sha256)
        state = torch.load(source, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("kind") != cls.name:
            raise EvaluationError(
                source,
                [
                    Problem(
                        "not-a-site-encoder",
                        "the file is not a site encoder; write it with "
                        "SiteEncoder.save or use kind 'torchscript'",
                    )
                ],
            )
        if state.get("format") != _FORMAT:
            raise EvaluationError(
                source,
                [
                    Problem(
                        "encoder-format",
                        f"expected site encoder format {_FORMAT}, found "
                        f"{state.get('format')}; retrain the encoder",
                    )
                ],
            )
        spec = EncoderSpec(**state["spec"])
        network = _EncoderNet(spec.feature_dim)
        network.load_state_dict(state["weights"])
        height, width = state["canvas"]
        return cls(network, spec, (height, width), device=device, sha256=actual)


def _verified_sha256(path: Path, expected: str | None) -> str:
    """Return the file's sha256 after checking it exists and matches ``expected``."""
    if not path.is_file():
        raise EvaluationError(
            path,
            [
                Problem(
                    "missing-encoder",
                    "the feature encoder file does not exist; check the path "
                    "(fedbone never downloads weights: place the file locally)",
                )
            ],
        )
    actual = file_sha256(path)
    if expected is not None and actual != expected.strip().lower():
        raise EvaluationError(
            path,
            [
                Problem(
                    "sha256-mismatch",
                    f"expected sha256 {expected.strip().lower()}, the file has "
                    f"{actual}; replace the file with the intended one or correct "
                    "the configured sha256",
                )
            ],
        )
    return actual


def _check_training_data(
    images: np.ndarray | ImageReader, labels: np.ndarray
) -> tuple[int, int]:
    """Validate the training data; return the canvas ``(H, W)``."""
    problems = []
    if labels.ndim != 1 or labels.size == 0:
        problems.append(Problem("no-labels", "labels must be a non-empty 1-D array"))
        EvaluationError.raise_if_any("encoder training data", problems)
    if labels.min() < 0 or labels.max() >= N_CLASSES:
        problems.append(
            Problem(
                "label-out-of-range",
                f"class ids must lie in [0, {N_CLASSES}); drop images with unknown "
                "labels (class_labels(...) >= 0) first",
                "labels",
            )
        )
    # A reader has no shape: one row read tells the canvas.
    shape = (
        images.shape
        if isinstance(images, np.ndarray)
        else (len(labels), *_read_rows(images, np.zeros(1, np.int64)).shape[1:])
    )
    if len(shape) != 3:
        problems.append(
            Problem("image-shape", f"expected (N, H, W) images, got {shape}", "images")
        )
    elif shape[1] % _DOWNSAMPLING or shape[2] % _DOWNSAMPLING:
        problems.append(
            Problem(
                "canvas-size",
                f"height and width must be multiples of {_DOWNSAMPLING}, got "
                f"{shape[1]}x{shape[2]}; use a canvas such as 1024x256 or 512x128",
                "images",
            )
        )
    if shape[0] != len(labels):
        problems.append(
            Problem(
                "count-mismatch",
                f"{shape[0]} images but {len(labels)} labels; pass one label per image",
                "images",
            )
        )
    EvaluationError.raise_if_any("encoder training data", problems)
    return int(shape[1]), int(shape[2])


def _augment(batch: Tensor, generator: torch.Generator) -> Tensor:
    """Shift each image by a small random offset (zero fill) and scale intensity."""
    size = len(batch)
    # affine_grid works in [-1, 1] coordinates: a shift of f of the side is 2f.
    shifts = (torch.rand(size, 2, generator=generator) * 2 - 1) * 2 * _SHIFT_FRACTION
    theta = torch.zeros(size, 2, 3)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shifts
    grid = functional.affine_grid(
        theta.to(batch.device), list(batch.shape), align_corners=False
    )
    shifted = functional.grid_sample(
        batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    low, high = _INTENSITY_RANGE
    scale = low + (high - low) * torch.rand(size, 1, 1, 1, generator=generator)
    return (shifted * scale.to(batch.device)).clamp(0.0, 1.0)


def train_site_encoder(
    images: np.ndarray | ImageReader, labels: np.ndarray, spec: EncoderSpec
) -> SiteEncoder:
    """Train the site encoder on the site's real training scans.

    Parameters
    ----------
    images
        ``(N, H, W)`` scans in [0, 1] (a float16 memory map is fine) or a reader
        ``images(positions) -> (B, H, W)``; H and W multiples of 16.
    labels
        ``(N,)`` conditioning classes 0..3
        (:func:`fedbone.generative.trainer.class_labels`).
    spec
        Training settings.

    Returns
    -------
    SiteEncoder
        The trained encoder (not yet saved: call :meth:`SiteEncoder.save`).

    Raises
    ------
    EvaluationError
        When labels are missing or out of range, or the images do not fit.
    """
    labels = np.asarray(labels, dtype=np.int64)
    canvas = _check_training_data(images, labels)
    seed_everything(spec.seed)
    device = resolve_device(spec.device)
    rng = np.random.default_rng(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    network = _EncoderNet(spec.feature_dim).to(device).train()
    optimiser = torch.optim.Adam(network.parameters(), lr=spec.lr)
    members = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    classes = np.array(sorted(members))
    steps = math.ceil(len(labels) / spec.batch_size)
    for epoch in range(spec.epochs):
        total = 0.0
        for _ in range(steps):
            picked = rng.choice(classes, spec.batch_size)
            positions = np.array([rng.choice(members[int(c)]) for c in picked])
            batch = torch.from_numpy(_read_rows(images, positions)).unsqueeze(1)
            inputs = _augment(batch.to(device), generator)
            target = torch.from_numpy(picked).to(device)
            loss = functional.cross_entropy(network(inputs), target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
        logger.info(
            "site encoder epoch %d/%d: loss %.4f", epoch + 1, spec.epochs, total / steps
        )
    return SiteEncoder(network, spec, canvas, device=spec.device)


class TorchScriptEncoder:
    """A TorchScript network supplied as a local file (e.g. FID's Inception-v3).

    Build it with :meth:`load`.

    Attributes
    ----------
    sha256
        The verified sha256 of the file.
    name
        ``"torchscript:<file name>"``.
    """

    def __init__(
        self,
        module: torch.jit.ScriptModule,
        *,
        name: str,
        sha256: str,
        input_size: tuple[int, int],
        channels: int,
        value_range: tuple[float, float],
        device: torch.device,
        forward_kwargs: Mapping[str, bool | int | float],
        batch_size: int,
    ) -> None:
        self.module = module
        self.name = name
        self.sha256 = sha256
        self.input_size = input_size
        self.channels = channels
        self.value_range = value_range
        self.device = device
        self.forward_kwargs = dict(forward_kwargs)
        self.batch_size = batch_size

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        sha256: str | None = None,
        input_size: tuple[int, int] = (299, 299),
        channels: int = 3,
        value_range: tuple[float, float] = (0.0, 255.0),
        device: str = "auto",
        forward_kwargs: Mapping[str, bool | int | float] | None = None,
        batch_size: int = 32,
    ) -> TorchScriptEncoder:
        """Load a TorchScript file after checking its sha256.

        Parameters
        ----------
        path
            The ``torch.jit.save``'d module.
        sha256
            Its expected sha256: **required**, checked before the file is read.
        input_size
            ``(H, W)`` the module expects; images are resized bilinearly.
        channels
            Input channels; the grey scan is repeated into each.
        value_range
            ``(low, high)`` that [0, 1] intensities are mapped to.
        device
            Where to run it (``auto``: CUDA when present).
        forward_kwargs
            Extra keyword arguments of the module's ``forward``, e.g.
            ``{"return_features": True}`` for NVIDIA's ``inception-2015-12-05.pt``
            (pool features instead of logits).
        batch_size
            Images per forward pass.

        Raises
        ------
        EvaluationError
            When the sha256 is missing or differs, the file is missing, or the
            settings are invalid.
        """
        source = Path(path)
        problems = []
        if not sha256:
            problems.append(
                Problem(
                    "missing-sha256",
                    "a TorchScript file runs code, so its sha256 is required; "
                    "compute it with `sha256sum` on a trusted copy and configure it",
                    "sha256",
                )
            )
        if channels < 1:
            problems.append(Problem("channels", "must be at least 1", "channels"))
        if min(input_size) < 1:
            problems.append(
                Problem("input-size", "height and width must be positive", "size")
            )
        if not value_range[0] < value_range[1]:
            problems.append(
                Problem("value-range", "low must be below high", "value_range")
            )
        if batch_size < 1:
            problems.append(Problem("batch-size", "must be at least 1", "batch_size"))
        EvaluationError.raise_if_any(source, problems)
        actual = _verified_sha256(source, sha256)
        torch_device = resolve_device(device)
        with warnings.catch_warnings():
            # torch deprecates TorchScript, but FID's Inception-v3 ships only in it.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(source), map_location=torch_device).eval()
        return cls(
            module,
            name=f"torchscript:{source.name}",
            sha256=actual,
            input_size=(int(input_size[0]), int(input_size[1])),
            channels=channels,
            value_range=(float(value_range[0]), float(value_range[1])),
            device=torch_device,
            forward_kwargs=forward_kwargs or {},
            batch_size=batch_size,
        )

    @torch.no_grad()
    def embed(self, images: np.ndarray) -> np.ndarray:
        """Flattened module outputs for ``(N, H, W)`` images in [0, 1].

        Returns
        -------
        numpy.ndarray
            ``(N, D)`` float64; a module returning a tuple contributes its first
            element.
        """
        EvaluationError.raise_if_any("images to embed", _check_images(images, "images"))
        low, high = self.value_range
        features = []
        for start in range(0, len(images), self.batch_size):
            batch = np.asarray(images[start : start + self.batch_size], np.float32)
            tensor = torch.from_numpy(batch).unsqueeze(1).to(self.device)
            resized = functional.interpolate(
                tensor, size=self.input_size, mode="bilinear", align_corners=False
            )
            inputs = low + (high - low) * resized.repeat(1, self.channels, 1, 1)
            output = self.module(inputs, **self.forward_kwargs)
            if isinstance(output, tuple | list):
                output = output[0]
            features.append(output.reshape(len(batch), -1).double().cpu().numpy())
        return np.concatenate(features)


def load_feature_encoder(
    kind: str,
    path: str | Path | None,
    sha256: str | None,
    **kw: Any,
) -> SiteEncoder | TorchScriptEncoder:
    """Load a feature encoder from configuration values.

    Parameters
    ----------
    kind
        ``site`` (:meth:`SiteEncoder.load`, sha256 checked when given) or
        ``torchscript`` (:meth:`TorchScriptEncoder.load`, sha256 required).
    path
        The local file.
    sha256
        Its expected sha256.
    **kw
        Further keyword arguments of the chosen ``load`` (``device``,
        ``input_size``...).

    Raises
    ------
    EvaluationError
        On an unknown kind, a missing path or file, or a sha256 mismatch.
    """
    problems = []
    if kind not in ("site", "torchscript"):
        problems.append(
            Problem("encoder-kind", f"{kind!r}; use 'site' or 'torchscript'", "kind")
        )
    if path is None:
        problems.append(
            Problem(
                "missing-path",
                "name the encoder file; train a site encoder with "
                "train_site_encoder and save it if you have none",
                "path",
            )
        )
    if path is None or problems:
        raise EvaluationError("feature encoder", problems)
    if kind == "site":
        return SiteEncoder.load(path, sha256=sha256, **kw)
    return TorchScriptEncoder.load(path, sha256=sha256, **kw)
