"""Grad-CAM with MONAI: the map points at what raised the positive logit."""

import numpy as np
import pytest
import torch
from torch import nn

from fedbone.explain.gradcam import gradcam_maps, last_convolution, pointing_game
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.validation.errors import EvaluationError


class _Brightness(nn.Module):
    """logit = mean of a 1x1 identity convolution: the evidence is the image."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.features.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.features(x)).mean(dim=(1, 2, 3))


def _images_with_spots(spots: list[tuple[int, int]]) -> np.ndarray:
    images = np.full((len(spots), 32, 16), 0.1, dtype=np.float32)
    for image, (row, col) in zip(images, spots, strict=True):
        image[row - 1 : row + 2, col - 1 : col + 2] = 1.0
    return images


def test_the_map_peaks_on_the_evidence_and_is_not_inverted() -> None:
    # Prepare: the positive logit is the image's brightness
    spots = [(5, 4), (20, 10), (28, 3)]
    images = _images_with_spots(spots)

    # Execute
    maps = gradcam_maps(_Brightness(), images)

    # Assert: 1 at the bright spot, low elsewhere (MONAI's default
    # normaliser would have put 0 there)
    assert maps.shape == images.shape
    for cam, (row, col) in zip(maps, spots, strict=True):
        assert cam[row, col] == pytest.approx(1.0)
        assert cam[0, 15] < 0.2


def test_the_pointing_game_counts_peaks_inside_lesions() -> None:
    # Prepare: lesions under the first two spots, the third elsewhere
    spots = [(5, 4), (20, 10), (28, 3)]
    maps = gradcam_maps(_Brightness(), _images_with_spots(spots))
    masks = np.zeros(maps.shape, dtype=bool)
    masks[0, 4:7, 3:6] = True
    masks[1, 19:22, 9:12] = True
    masks[2, 10:12, 10:12] = True

    # Execute, Assert
    assert pointing_game(maps, masks) == pytest.approx(2 / 3)
    assert pointing_game(maps, masks, tolerance=0) == pytest.approx(2 / 3)


def test_the_study_classifier_is_explained_at_its_last_convolution() -> None:
    # Prepare
    torch.manual_seed(0)
    model = build_classifier(
        ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.BATCH)
    )
    images = np.random.default_rng(0).random((3, 64, 16)).astype(np.float32)

    # Execute
    maps = gradcam_maps(model, images)

    # Assert
    assert last_convolution(model)
    assert maps.shape == images.shape
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


def test_a_pointing_game_without_lesions_is_a_typed_error() -> None:
    with pytest.raises(EvaluationError, match="no-lesion"):
        pointing_game(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), dtype=bool))
