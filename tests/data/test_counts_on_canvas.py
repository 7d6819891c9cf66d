"""Counts on the canvas: preprocessing's placement without the normalisation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedbone.data.preprocess import counts_on_canvas, preprocess_with_report
from fedbone.data.scan import NMScan, ScanMetadata, ScanView, View
from fedbone.data.spec import PreprocessSpec, ViewMode
from fedbone.errors import PreprocessingError

SPEC = PreprocessSpec(
    spacing_mm=8.0,
    canvas_height=64,
    canvas_width=32,
    views=ViewMode.BOTH,
    clip_percentile=100.0,
)


def small_scan(seed: int = 0, offset: int = 0) -> NMScan:
    """A 4 mm two-view scan whose body fits the canvas (nothing cropped)."""
    rng = np.random.default_rng(seed)
    views = {}
    for view in (View.ANTERIOR, View.POSTERIOR):
        counts = np.zeros((100, 50), dtype=np.float32)
        counts[10 + offset : 90 + offset, 15:35] = rng.poisson(40.0, (80, 20))
        counts[30 + offset, 20] = 900.0  # a hot spot
        views[view] = ScanView(view, counts, (4.0, 4.0))
    metadata = ScanMetadata("P1", "memory", "1.2.840.10008.5.1.4.1.1.20", "1.2")
    return NMScan(metadata=metadata, views=views)


def test_counts_are_placed_as_preprocessing_places_them() -> None:
    scan = small_scan()

    canvas = counts_on_canvas(scan, SPEC)

    normalised = preprocess_with_report(scan, SPEC).image
    for half in (slice(0, 32), slice(32, 64)):
        counts = canvas.image[:, half]
        np.testing.assert_allclose(
            counts / counts.max(), normalised[:, half], rtol=1e-5, atol=1e-6
        )
    assert canvas.image.shape == SPEC.output_shape
    assert set(canvas.placements) == {View.ANTERIOR, View.POSTERIOR}


def test_total_counts_are_kept_when_nothing_is_cropped() -> None:
    scan = small_scan()

    canvas = counts_on_canvas(scan, SPEC)

    raw = sum(view.total_counts for view in scan.views.values())
    assert float(canvas.image.sum(dtype=np.float64)) == pytest.approx(raw, rel=1e-5)


def test_given_placements_put_another_acquisition_in_the_same_place() -> None:
    standard = counts_on_canvas(small_scan(seed=0), SPEC)
    moved = small_scan(seed=1, offset=6)

    own = counts_on_canvas(moved, SPEC)
    reused = counts_on_canvas(moved, SPEC, placements=standard.placements)

    assert reused.placements == standard.placements
    assert own.placements[View.ANTERIOR] != standard.placements[View.ANTERIOR]
    standard_top = np.flatnonzero(standard.image[:, :32].sum(axis=1))[0]
    reused_top = np.flatnonzero(reused.image[:, :32].sum(axis=1))[0]
    assert reused_top > standard_top  # the shift is kept, not re-centred


def test_missing_views_and_placements_that_do_not_fit_are_listed() -> None:
    scan = small_scan()
    anterior_only = dataclasses.replace(
        scan, views={View.ANTERIOR: scan.views[View.ANTERIOR]}
    )
    wrong = dataclasses.replace(
        counts_on_canvas(scan, SPEC).placements[View.POSTERIOR],
        source=(slice(0, 200), slice(0, 20)),
    )

    with pytest.raises(PreprocessingError) as missing:
        counts_on_canvas(anterior_only, SPEC)
    with pytest.raises(PreprocessingError) as mismatch:
        counts_on_canvas(
            scan,
            SPEC,
            placements={
                View.ANTERIOR: counts_on_canvas(scan, SPEC).placements[View.ANTERIOR],
                View.POSTERIOR: wrong,
            },
        )

    assert missing.value.codes == ["missing-view"]
    assert mismatch.value.codes == ["placement-mismatch"]
