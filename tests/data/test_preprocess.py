from __future__ import annotations

import logging

import numpy as np
import pytest

from fedbone.data.preprocess import (
    fit_to_canvas,
    normalise_to_unit_range,
    orient_to_anterior,
    place_on_canvas,
    preprocess_scan,
    preprocess_with_report,
    resample_preserving_counts,
)
from fedbone.data.scan import NMScan, ScanMetadata, ScanView, View
from fedbone.data.spec import PreprocessSpec, ViewMode
from fedbone.errors import PreprocessingError

METADATA = ScanMetadata(
    patient_id="P1",
    source_path="scan.dcm",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.20",
    transfer_syntax_uid="1.2.840.10008.1.2.1",
)


def body_counts(
    shape: tuple[int, int] = (200, 64), top: int = 20, seed: int = 0
) -> np.ndarray:
    """A trunk-like block of counts over faint background noise."""
    rng = np.random.default_rng(seed)
    mean = np.full(shape, 0.2)
    mean[top:, shape[1] // 4 : 3 * shape[1] // 4] = 30.0
    return rng.poisson(mean).astype(np.float32)


def two_view_scan(
    anterior: np.ndarray, posterior: np.ndarray, spacing: float = 2.0
) -> NMScan:
    return NMScan(
        metadata=METADATA,
        views={
            View.ANTERIOR: ScanView(View.ANTERIOR, anterior, (spacing, spacing)),
            View.POSTERIOR: ScanView(View.POSTERIOR, posterior, (spacing, spacing)),
        },
    )


@pytest.mark.parametrize(
    "spacing", [(2.26, 2.26), (2.4, 2.1), (1.5, 4.0), (4.0, 4.0), (2.0, 2.0)]
)
def test_resampling_preserves_total_counts(spacing: tuple[float, float]) -> None:
    counts = body_counts(seed=1)

    resampled = resample_preserving_counts(counts, spacing, 2.0)

    assert resampled.dtype == np.float32
    assert resampled.sum(dtype=np.float64) == pytest.approx(
        counts.sum(dtype=np.float64), rel=1e-6
    )


def test_resampling_from_2_26_mm_to_2_mm_covers_the_whole_extent() -> None:
    counts = np.ones((1024, 256), dtype=np.float32)

    resampled = resample_preserving_counts(counts, (2.26, 2.26), 2.0)

    # 1024 * 2.26 / 2 = 1157.1 rows and 256 * 2.26 / 2 = 289.3 columns.
    assert resampled.shape == (1158, 290)


def test_uniform_image_stays_uniform() -> None:
    counts = np.full((100, 40), 5.0, dtype=np.float32)

    resampled = resample_preserving_counts(counts, (2.26, 2.26), 2.0)

    # Only the last, partly covered, row and column hold less.
    interior = resampled[:-1, :-1]
    expected = 5.0 * (2.0 / 2.26) ** 2
    np.testing.assert_allclose(interior, expected, rtol=1e-5)


def test_resampling_to_coarser_pixels_sums_blocks() -> None:
    counts = np.arange(16, dtype=np.float32).reshape(4, 4)

    resampled = resample_preserving_counts(counts, (1.0, 1.0), 2.0)

    np.testing.assert_allclose(resampled, [[10, 18], [42, 50]])


def test_equal_spacing_leaves_the_image_unchanged() -> None:
    counts = body_counts()

    resampled = resample_preserving_counts(counts, (2.0, 2.0), 2.0)

    np.testing.assert_array_equal(resampled, counts)


def test_posterior_without_orientation_is_mirrored() -> None:
    counts = np.arange(6, dtype=np.float32).reshape(2, 3)

    anterior = orient_to_anterior(ScanView(View.ANTERIOR, counts, (2.0, 2.0)))
    posterior = orient_to_anterior(ScanView(View.POSTERIOR, counts, (2.0, 2.0)))

    np.testing.assert_array_equal(anterior, counts)
    np.testing.assert_array_equal(posterior, counts[:, ::-1])


@pytest.mark.parametrize(
    ("orientation", "expected_flip"),
    [
        (("L", "F"), (False, False)),  # anterior as seen from the front
        (("R", "F"), (False, True)),  # columns run to the patient's right
        (("L", "H"), (True, False)),  # rows run to the head: feet at the top
        (("R", "H"), (True, True)),
    ],
)
def test_patient_orientation_decides_the_flips(
    orientation: tuple[str, str], expected_flip: tuple[bool, bool]
) -> None:
    counts = np.arange(6, dtype=np.float32).reshape(2, 3)
    expected = counts
    if expected_flip[0]:
        expected = expected[::-1, :]
    if expected_flip[1]:
        expected = expected[:, ::-1]

    # The posterior view too: the orientation, not the view name, decides.
    oriented = orient_to_anterior(
        ScanView(View.POSTERIOR, counts, (2.0, 2.0), patient_orientation=orientation)
    )

    np.testing.assert_array_equal(oriented, expected)


def test_canvas_puts_the_body_top_near_the_canvas_top() -> None:
    counts = body_counts(shape=(200, 64), top=50)

    fit = fit_to_canvas(counts, 256, 64)

    row_sums = fit.image.sum(axis=1)
    first_body_row = int(np.flatnonzero(row_sums > 100)[0])
    assert fit.top_row == 50
    assert first_body_row == 256 // 64
    assert fit.cropped_fraction < 0.01


def test_canvas_ignores_a_single_hot_row_above_the_body() -> None:
    counts = body_counts(shape=(200, 64), top=50)
    counts[10, :] = 200.0  # e.g. a marker or a noisy line

    fit = fit_to_canvas(counts, 256, 64)

    assert fit.top_row == 50


def test_canvas_crops_the_feet_and_reports_the_lost_counts() -> None:
    counts = body_counts(shape=(200, 64), top=0)

    fit = fit_to_canvas(counts, 100, 64)

    assert fit.image.shape == (100, 64)
    kept = fit.image.sum(dtype=np.float64) / counts.sum(dtype=np.float64)
    assert fit.cropped_fraction == pytest.approx(1 - kept)
    assert fit.cropped_fraction > 0.4


def test_canvas_centres_the_count_centroid() -> None:
    counts = np.zeros((50, 40), dtype=np.float32)
    counts[:, 5:9] = 10.0  # body near the left edge, centroid at column 6.5

    canvas = place_on_canvas(counts, 50, 64)

    columns = np.flatnonzero(canvas.sum(axis=0))
    centroid = float(canvas.sum(axis=0) @ np.arange(64)) / canvas.sum()
    assert abs(centroid - 31.5) <= 0.5
    assert len(columns) == 4


def test_large_crop_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    counts = body_counts(shape=(200, 64), top=0)

    with caplog.at_level(logging.WARNING):
        place_on_canvas(counts, 100, 64)

    assert "cropped" in caplog.text


def test_normalise_clips_at_the_percentile() -> None:
    image = np.arange(1, 101, dtype=np.float32).reshape(10, 10)

    normalised = normalise_to_unit_range(image, 90.0)

    assert normalised.min() >= 0.0
    assert normalised.max() == 1.0
    level = np.percentile(image, 90.0)
    np.testing.assert_allclose(normalised[0, 0], 1.0 / level)
    assert (normalised == 1.0).sum() == 10


def test_normalising_an_empty_view_fails_clearly() -> None:
    with pytest.raises(PreprocessingError) as caught:
        normalise_to_unit_range(np.zeros((8, 8), dtype=np.float32), 99.5)

    assert caught.value.codes == ["empty-view"]


def test_both_views_sit_side_by_side_in_anterior_orientation() -> None:
    anterior = body_counts(seed=2)
    posterior = body_counts(seed=3)
    # A hot spot on the patient's right: image left from the front, image
    # right as the posterior camera sees it.
    anterior[100, 18] = posterior[100, 64 - 1 - 18] = 5000.0
    scan = two_view_scan(anterior, posterior)
    spec = PreprocessSpec(
        canvas_height=256, canvas_width=64, views=ViewMode.BOTH, clip_percentile=100
    )

    image = preprocess_scan(scan, spec)

    assert image.shape == (256, 128)
    assert image.dtype == np.float32
    assert image.min() >= 0.0
    left_hot = np.unravel_index(np.argmax(image[:, :64]), (256, 64))
    right_hot = np.unravel_index(np.argmax(image[:, 64:]), (256, 64))
    assert left_hot[1] < 32 and right_hot[1] < 32
    assert left_hot == right_hot


def test_spec_view_missing_from_the_scan_is_reported() -> None:
    scan = NMScan(
        metadata=METADATA,
        views={View.ANTERIOR: ScanView(View.ANTERIOR, body_counts(), (2.0, 2.0))},
    )
    spec = PreprocessSpec(canvas_height=256, canvas_width=64, views=ViewMode.BOTH)

    with pytest.raises(PreprocessingError) as caught:
        preprocess_scan(scan, spec)

    assert caught.value.codes == ["missing-view"]
    assert caught.value.problems[0].where == "posterior"


def test_empty_view_is_reported_with_the_view_name() -> None:
    scan = two_view_scan(body_counts(), np.zeros((200, 64), dtype=np.float32))
    spec = PreprocessSpec(canvas_height=256, canvas_width=64, views=ViewMode.BOTH)

    with pytest.raises(PreprocessingError) as caught:
        preprocess_scan(scan, spec)

    assert caught.value.codes == ["empty-view"]
    assert caught.value.problems[0].where == "posterior"
    assert caught.value.subject == "scan.dcm"


def test_report_gives_the_cropped_share_per_view() -> None:
    scan = two_view_scan(body_counts(top=0), body_counts(top=0))
    spec = PreprocessSpec(canvas_height=100, canvas_width=64, views=ViewMode.ANTERIOR)

    result = preprocess_with_report(scan, spec)

    assert result.image.shape == (100, 64)
    assert set(result.cropped_fraction) == {View.ANTERIOR}
    assert result.cropped_fraction[View.ANTERIOR] > 0.4


def test_posterior_mode_mirrors_the_posterior_view() -> None:
    anterior = body_counts(seed=4)
    posterior = body_counts(seed=5)
    posterior[100, 64 - 1 - 18] = 5000.0
    spec = PreprocessSpec(
        canvas_height=256,
        canvas_width=64,
        views=ViewMode.POSTERIOR,
        clip_percentile=100,
    )

    image = preprocess_scan(two_view_scan(anterior, posterior), spec)

    hot = np.unravel_index(np.argmax(image), image.shape)
    assert image.shape == (256, 64)
    assert hot[1] < 32
