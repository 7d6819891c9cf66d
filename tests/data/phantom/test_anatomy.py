from __future__ import annotations

import numpy as np
import pytest

from fedbone.data.phantom.canvas import Pose
from fedbone.data.phantom.lesions import heart_centre_mm
from fedbone.data.phantom.profiles import SITE_PROFILES
from fedbone.data.phantom.synthesize import (
    MAX_COUNTS,
    MIN_COUNTS,
    SyntheticScan,
    synthesize_views,
)
from fedbone.data.scan import View

SCANNER = SITE_PROFILES["A"].scanners[0]


def render(seed: int, **kwargs: int) -> SyntheticScan:
    return synthesize_views(
        np.random.default_rng(seed),
        scanner=SCANNER,
        female=False,
        age_years=70.0,
        **kwargs,
    )


def box_sum(image: np.ndarray, column: float, row: float, half: int) -> float:
    r, c = round(row), round(column)
    return float(image[r - half : r + half + 1, c - half : c + half + 1].sum())


def anterior_pixel(pose: Pose, x_mm: float, y_mm: float) -> tuple[float, float]:
    column, row = pose.to_pixels(np.array(x_mm), np.array(y_mm))
    return float(column), float(row)


def test_views_are_realistic_uint16_count_images() -> None:
    scan = render(0)

    for view in (View.ANTERIOR, View.POSTERIOR):
        counts = scan.views[view]
        assert counts.dtype == np.uint16
        assert counts.shape == SCANNER.shape
        assert MIN_COUNTS * 0.98 <= counts.sum() <= MAX_COUNTS * 1.02
    assert scan.spacing_mm == (SCANNER.spacing_mm, SCANNER.spacing_mm)


def test_same_seed_gives_same_pixels_and_other_seed_differs() -> None:
    first, again, other = render(5), render(5), render(6)

    np.testing.assert_array_equal(
        first.views[View.ANTERIOR], again.views[View.ANTERIOR]
    )
    np.testing.assert_array_equal(
        first.views[View.POSTERIOR], again.views[View.POSTERIOR]
    )
    assert not np.array_equal(first.views[View.ANTERIOR], other.views[View.ANTERIOR])


def test_spine_is_brighter_posteriorly_and_sternum_anteriorly() -> None:
    scan = render(1)
    h = scan.body.height_mm
    anterior = scan.views[View.ANTERIOR].astype(np.float64)
    # Mirror the posterior back into anterior orientation to compare pixels.
    posterior = scan.views[View.POSTERIOR][:, ::-1].astype(np.float64)
    lumbar = anterior_pixel(scan.pose, 0.0, 0.4 * h)
    sternum = anterior_pixel(scan.pose, 0.0, 0.25 * h)

    lumbar_ratio = box_sum(anterior, *lumbar, 4) / box_sum(posterior, *lumbar, 4)
    sternal_ratio = box_sum(anterior, *sternum, 3) / box_sum(posterior, *sternum, 3)

    assert lumbar_ratio < 1 / 1.2
    assert sternal_ratio > 1.2 * lumbar_ratio


def test_planted_metastases_raise_local_counts() -> None:
    seed = 11
    negative = render(seed)
    positive = render(seed, n_metastases=6)
    lesions = positive.lesions

    raised = [
        box_sum(positive.views[View.ANTERIOR], lesion.column, lesion.row, 3)
        + box_sum(positive.views[View.POSTERIOR][:, ::-1], lesion.column, lesion.row, 3)
        > box_sum(negative.views[View.ANTERIOR], lesion.column, lesion.row, 3)
        + box_sum(negative.views[View.POSTERIOR][:, ::-1], lesion.column, lesion.row, 3)
        for lesion in lesions
    ]

    assert len(lesions) == 6
    assert sum(raised) >= 5  # one may land off the field or under the bladder


@pytest.mark.parametrize("grade", [1, 2, 3])
def test_perugini_grade_raises_cardiac_counts(grade: int) -> None:
    def cardiac_share(scan: SyntheticScan) -> float:
        image = scan.views[View.ANTERIOR].astype(np.float64)
        heart = anterior_pixel(scan.pose, *heart_centre_mm(scan.body))
        return box_sum(image, *heart, 12) / image.sum()

    baseline = cardiac_share(render(4, perugini_grade=0))
    graded = [cardiac_share(render(4, perugini_grade=g)) for g in (grade, 3)]

    assert graded[0] > baseline * (1.05 + 0.25 * (grade - 1))
    assert graded[1] >= graded[0] * 0.999


def test_invalid_perugini_grade_is_refused() -> None:
    with pytest.raises(ValueError, match="perugini_grade"):
        render(0, perugini_grade=4)
