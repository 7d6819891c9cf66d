"""Whole-pixel registration of a fast acquisition to its standard scan."""

from __future__ import annotations

import numpy as np
import pytest

from fedbone.enhance.errors import EnhanceError
from fedbone.enhance.registration import apply_shift, register_translation


def body_like_image(height: int = 96, width: int = 40) -> np.ndarray:
    """Counts expected from a blurred trunk with a few hot spots."""
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float64)
    trunk = np.exp(-(((columns - width / 2) / 7.0) ** 2)) * (rows > 10) * (rows < 85)
    spots = sum(
        40.0 * np.exp(-((rows - r) ** 2 + (columns - c) ** 2) / 4.0)
        for r, c in ((20, 14), (45, 25), (70, 18))
    )
    return 20.0 * trunk + spots


def test_a_known_shift_is_recovered_from_noisy_acquisitions() -> None:
    rng = np.random.default_rng(0)
    expected = body_like_image()
    standard = rng.poisson(expected).astype(np.float32)
    fast = rng.poisson(apply_shift(expected, (-3, 2)) / 2).astype(np.float32)

    shift = register_translation(standard, fast, max_shift=6)

    assert shift == (3, -2)


def test_the_aligned_image_matches_the_reference_inside_the_overlap() -> None:
    reference = body_like_image()
    moving = apply_shift(reference, (4, -1))

    aligned = apply_shift(moving, register_translation(reference, moving))

    np.testing.assert_array_equal(aligned[:-4, 1:], reference[:-4, 1:])


def test_identical_images_need_no_shift_and_the_search_stays_in_bounds() -> None:
    reference = body_like_image()

    same = register_translation(reference, reference.copy())
    bounded = register_translation(reference, apply_shift(reference, (9, 0)), 2)

    assert same == (0, 0)
    assert abs(bounded[0]) <= 2 and abs(bounded[1]) <= 2


def test_apply_shift_fills_what_enters_with_zeros() -> None:
    image = np.arange(1, 13, dtype=np.float32).reshape(3, 4)

    down_left = apply_shift(image, (1, -2))
    gone = apply_shift(image, (5, 0))

    np.testing.assert_array_equal(down_left, [[0, 0, 0, 0], [3, 4, 0, 0], [7, 8, 0, 0]])
    assert down_left.dtype == image.dtype
    assert not gone.any()


def test_unusable_inputs_are_refused_with_every_problem() -> None:
    with pytest.raises(EnhanceError) as caught:
        register_translation(np.zeros((2, 3, 4)), np.array([[np.nan]]), -1)

    assert caught.value.codes == ["not-an-image", "non-finite-counts", "invalid-shift"]


def test_images_of_different_shapes_are_refused() -> None:
    with pytest.raises(EnhanceError) as caught:
        register_translation(np.zeros((8, 4)), np.zeros((8, 5)))

    assert caught.value.codes == ["shape-mismatch"]
