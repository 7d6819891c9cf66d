"""Put a whole-body scan on the common canvas every site model reads.

The steps, per view, follow SCIENCE.md (Haberl et al. 2025):

1. **Orient** to the anterior convention: head at the top, the patient's right on
   the image left. DICOM PatientOrientation decides when the file gives it
   (``(row direction, column direction)``: a column direction containing ``H``
   means rows run towards the head, so the image is flipped vertically; a row
   direction containing ``R`` means columns run towards the patient's right, as a
   posterior camera sees it, so the image is flipped horizontally). Without it,
   the head is assumed at the top and the posterior view is mirrored.
2. **Resample** to the target spacing by area-overlap rebinning, which keeps the
   total counts exactly: every input pixel hands its counts to the output pixels
   it overlaps, in proportion to the overlap. The output covers the whole input
   extent, so the last row/column may be only partly covered.
3. **Clip level**: the ``clip_percentile`` percentile of the resampled view's
   pixels (the whole view, before any padding or cropping).
4. **Canvas rule**: the body's top row is the first of three consecutive rows
   whose row sum exceeds 5 % of the median non-zero row sum (a single noisy or
   marker row does not count). It is placed ``canvas_height // 64`` rows below
   the canvas top. Rows that fall below the canvas bottom (the feet) are cropped;
   missing rows are zero. Horizontally, the count-weighted column centroid is
   placed on the canvas centre column, cropping or zero-padding on both sides as
   needed. The fraction of counts cropped away is returned (:func:`fit_to_canvas`,
   :func:`preprocess_with_report`); ``prepare`` warns when it exceeds 10 %.
5. **Normalise**: divide by the clip level and clip to ``[0, 1]``.

With ``ViewMode.BOTH`` the anterior canvas is on the left and the (mirrored)
posterior canvas on the right, giving ``H x 2W``.

:func:`counts_on_canvas` stops before steps 3 and 5: the same orientation,
resampling and placement, counts kept as counts (for fast-scan enhancement,
whose training pairs must keep the acquisition's noise), and it can reuse one
acquisition's placements for another.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from fedbone.data.scan import NMScan, ScanView, View
from fedbone.data.spec import PreprocessSpec, ViewMode
from fedbone.errors import PreprocessingError, Problem

__all__ = [
    "CROP_WARNING_FRACTION",
    "CanvasFit",
    "CanvasPlacement",
    "CountsCanvas",
    "PreprocessedScan",
    "counts_on_canvas",
    "fit_to_canvas",
    "normalise_to_unit_range",
    "orient_to_anterior",
    "place_on_canvas",
    "preprocess_scan",
    "preprocess_with_report",
    "resample_preserving_counts",
]

logger = logging.getLogger(__name__)

CROP_WARNING_FRACTION = 0.10
"""Share of a view's counts a crop may remove before a warning is logged."""

_BODY_ROW_FRACTION = 0.05
_BODY_ROW_RUN = 3
_TOP_MARGIN_DIVISOR = 64
_SAMPLE_STRIDE = 16
_SAMPLE_PERCENTILE_SLACK = 2.0
# Spacings this close to the target are treated as equal: no resampling at all.
_SPACING_TOLERANCE = 1e-6


@lru_cache(maxsize=64)
def _overlap_matrix(n_in: int, spacing_in: float, spacing_out: float) -> sp.csr_array:
    """Sparse ``(n_out, n_in)`` area-overlap weights; each column sums to one.

    Cached because every scan from one scanner shares the same matrices.
    """
    n_out = max(1, math.ceil(n_in * spacing_in / spacing_out - _SPACING_TOLERANCE))
    in_edges = np.arange(n_in + 1, dtype=np.float64) * spacing_in
    out_edges = np.arange(n_out + 1, dtype=np.float64) * spacing_out
    # Each output pixel overlaps the input pixels from `first` to `last`.
    first = np.searchsorted(in_edges, out_edges[:-1], side="right") - 1
    last = np.searchsorted(in_edges, out_edges[1:], side="left") - 1
    last = np.minimum(last, n_in - 1)
    span = int((last - first).max()) + 1
    rows = np.repeat(np.arange(n_out), span)
    cols = (first[:, None] + np.arange(span)[None, :]).ravel()
    valid = cols <= np.repeat(last, span)
    rows, cols = rows[valid], cols[valid]
    overlap = np.minimum(in_edges[cols + 1], out_edges[rows + 1]) - np.maximum(
        in_edges[cols], out_edges[rows]
    )
    weights = np.clip(overlap, 0.0, None) / spacing_in
    # Renormalise so every input pixel hands out exactly all of its counts.
    weights /= np.bincount(cols, weights=weights, minlength=n_in)[cols]
    matrix = sp.csr_array(
        (weights.astype(np.float32), (rows, cols)), shape=(n_out, n_in)
    )
    matrix.eliminate_zeros()
    return matrix


def resample_preserving_counts(
    counts: np.ndarray, spacing_mm: tuple[float, float], target_mm: float
) -> np.ndarray:
    """Rebin a count image to ``target_mm`` pixels, keeping its total counts.

    Parameters
    ----------
    counts
        2-D array of counts.
    spacing_mm
        ``(row_spacing, column_spacing)`` of ``counts`` in millimetres.
    target_mm
        Isotropic output spacing in millimetres.

    Returns
    -------
    numpy.ndarray
        float32 image of ``ceil(rows * row_spacing / target_mm)`` by
        ``ceil(columns * column_spacing / target_mm)`` pixels whose sum equals
        ``counts.sum()`` to float precision. Without resampling (spacing
        equal to the target) this may be ``counts`` itself; after column
        resampling it is column-major, which saves a copy.
    """
    if counts.ndim != 2:
        raise ValueError(f"expected a 2-D count image, got shape {counts.shape}")
    if min(spacing_mm) <= 0 or target_mm <= 0:
        raise ValueError(
            f"spacings must be positive, got {spacing_mm} -> {target_mm} mm"
        )
    # Sparse products copy strided (e.g. flipped) inputs element by element;
    # one contiguous copy up front is several times cheaper.
    image = np.ascontiguousarray(counts, dtype=np.float32)
    row_mm, col_mm = (float(s) for s in spacing_mm)
    if abs(row_mm - target_mm) > _SPACING_TOLERANCE * target_mm:
        image = _overlap_matrix(image.shape[0], row_mm, float(target_mm)) @ image
    if abs(col_mm - target_mm) > _SPACING_TOLERANCE * target_mm:
        column_weights = _overlap_matrix(image.shape[1], col_mm, float(target_mm))
        image = (column_weights @ image.T).T
    return image


def orient_to_anterior(view: ScanView) -> np.ndarray:
    """Return the view's counts with the head at the top, patient's right left.

    Parameters
    ----------
    view
        A view as stored; its ``patient_orientation`` decides the flips when
        present, otherwise the posterior view is mirrored horizontally.

    Returns
    -------
    numpy.ndarray
        A (possibly flipped) view of ``view.counts``; no data is copied.
    """
    image = view.counts
    if view.patient_orientation is None:
        return image[:, ::-1] if view.view is View.POSTERIOR else image
    row_direction, column_direction = (d.upper() for d in view.patient_orientation)
    if "H" in column_direction:
        image = image[::-1, :]
    if "R" in row_direction:
        image = image[:, ::-1]
    return image


@dataclass(frozen=True)
class CanvasFit:
    """A view placed on the canvas, and what the placement cut away.

    Attributes
    ----------
    image
        The ``(height, width)`` canvas.
    cropped_fraction
        Share of the view's counts that fell outside the canvas.
    top_row
        The body's top row in the input view.
    """

    image: np.ndarray
    cropped_fraction: float
    top_row: int


def _body_top_row(image: np.ndarray) -> int:
    row_sums = image.sum(axis=1, dtype=np.float64)
    nonzero = row_sums[row_sums > 0]
    if nonzero.size == 0:
        return 0
    above = row_sums > _BODY_ROW_FRACTION * float(np.median(nonzero))
    run = above.copy()
    for offset in range(1, min(_BODY_ROW_RUN, above.size)):
        run[:-offset] &= above[offset:]
        run[-offset:] = False
    candidates = np.flatnonzero(run) if run.any() else np.flatnonzero(above)
    return int(candidates[0]) if candidates.size else 0


@dataclass(frozen=True)
class CanvasPlacement:
    """Which part of a view lands where on the canvas.

    Attributes
    ----------
    source
        Rows and columns of the oriented, resampled view that are kept.
    target
        Where they go on the view's ``(height, width)`` canvas.
    top_row
        The body's top row in the view.
    cropped_fraction
        Share of the view's counts that fell outside the canvas.
    """

    source: tuple[slice, slice]
    target: tuple[slice, slice]
    top_row: int
    cropped_fraction: float


def _placement(image: np.ndarray, height: int, width: int) -> CanvasPlacement:
    """Apply the module's canvas rule: where the view goes, what is cropped."""
    top_row = _body_top_row(image)
    column_sums = image.sum(axis=0, dtype=np.float64)
    total = float(column_sums.sum())
    centroid = (
        float(column_sums @ np.arange(image.shape[1])) / total
        if total > 0
        else (image.shape[1] - 1) / 2
    )
    row_shift = height // _TOP_MARGIN_DIVISOR - top_row
    col_shift = round((width - 1) / 2 - centroid)
    src_r0, dst_r0 = max(0, -row_shift), max(0, row_shift)
    src_c0, dst_c0 = max(0, -col_shift), max(0, col_shift)
    rows = max(0, min(image.shape[0] - src_r0, height - dst_r0))
    cols = max(0, min(image.shape[1] - src_c0, width - dst_c0))
    source = (slice(src_r0, src_r0 + rows), slice(src_c0, src_c0 + cols))
    kept = float(image[source].sum(dtype=np.float64))
    return CanvasPlacement(
        source=source,
        target=(slice(dst_r0, dst_r0 + rows), slice(dst_c0, dst_c0 + cols)),
        top_row=top_row,
        cropped_fraction=max(0.0, 1.0 - kept / total) if total > 0 else 0.0,
    )


def fit_to_canvas(image: np.ndarray, height: int, width: int) -> CanvasFit:
    """Place a view on a ``height x width`` canvas by the module's canvas rule.

    Parameters
    ----------
    image
        2-D oriented, resampled view.
    height, width
        Canvas size in pixels.

    Returns
    -------
    CanvasFit
        The float32 canvas, the share of counts cropped away and the top row.
    """
    placement = _placement(image, height, width)
    canvas = np.zeros((height, width), dtype=np.float32)
    canvas[placement.target] = image[placement.source]
    return CanvasFit(
        image=canvas,
        cropped_fraction=placement.cropped_fraction,
        top_row=placement.top_row,
    )


def place_on_canvas(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Place a view on the canvas; warn when the crop removes many counts.

    Parameters
    ----------
    image
        2-D oriented, resampled view.
    height, width
        Canvas size in pixels.

    Returns
    -------
    numpy.ndarray
        float32 ``(height, width)`` canvas (see the module docstring's rule).
    """
    fit = fit_to_canvas(image, height, width)
    if fit.cropped_fraction > CROP_WARNING_FRACTION:
        logger.warning(
            "canvas %dx%d cropped %.1f%% of the counts",
            height,
            width,
            100 * fit.cropped_fraction,
        )
    return fit.image


def _high_percentile(image: np.ndarray, percentile: float) -> float:
    """``np.percentile(image, percentile)`` (linear), fast for high percentiles.

    A full partition of a 1024 x 256 view costs milliseconds; the percentile of a
    strided sample gives a threshold below which the answer almost surely does
    not lie, so only the few pixels above it are partitioned. The result is
    exact: when the threshold turns out too high the full computation runs.
    """
    values = image.ravel(order="K")  # order is irrelevant, copies are not
    rank = percentile / 100 * (values.size - 1)
    low = math.floor(rank)
    sample = values[::_SAMPLE_STRIDE]
    threshold = np.percentile(sample, max(0.0, percentile - _SAMPLE_PERCENTILE_SLACK))
    candidates = values[values >= threshold]
    first_rank = values.size - candidates.size  # rank of the smallest candidate
    if candidates.size == 0 or low < first_rank:
        return float(np.percentile(values, percentile))
    offset = low - first_rank
    wanted = [offset, offset + 1] if offset + 1 < candidates.size else [offset]
    ordered = np.partition(candidates, wanted)
    below = float(ordered[offset])
    above = float(ordered[wanted[-1]])
    return below + (rank - low) * (above - below)


def _clip_level(image: np.ndarray, percentile: float) -> float:
    """Return the clip intensity of a view; raise on empty or non-finite views."""
    if not np.isfinite(image).all():
        raise PreprocessingError(
            "view",
            [
                Problem(
                    "non-finite-counts",
                    "the view holds NaN or infinite values; counts must be finite "
                    "numbers, check the pixel data and rescale slope",
                )
            ],
        )
    level = _high_percentile(image, percentile)
    if level <= 0:
        level = float(image.max())
    if level <= 0:
        raise PreprocessingError(
            "view",
            [
                Problem(
                    "empty-view",
                    "the view holds no counts; expected a scan with positive "
                    "counts, check the frame is not blank or mislabelled",
                )
            ],
        )
    return level


def normalise_to_unit_range(image: np.ndarray, percentile: float) -> np.ndarray:
    """Clip at the ``percentile`` percentile of ``image`` and scale to [0, 1].

    Parameters
    ----------
    image
        A view's counts.
    percentile
        Clip percentile in ``(0, 100]``; when it is zero (a mostly empty view)
        the maximum is used instead.

    Returns
    -------
    numpy.ndarray
        float32 image in ``[0, 1]``.

    Raises
    ------
    PreprocessingError
        ``empty-view`` for an all-zero view, ``non-finite-counts`` for NaN/inf.
    """
    level = _clip_level(image, percentile)
    return np.clip(np.asarray(image, dtype=np.float32) / level, 0.0, 1.0)


@dataclass(frozen=True)
class PreprocessedScan:
    """A scan on the canvas plus the per-view share of counts cropped away."""

    image: np.ndarray
    cropped_fraction: dict[View, float]


def _views_for(mode: ViewMode) -> tuple[View, ...]:
    if mode is ViewMode.BOTH:
        return (View.ANTERIOR, View.POSTERIOR)
    return (View(mode.value),)


def _missing_views(scan: NMScan, spec: PreprocessSpec) -> list[Problem]:
    present = ", ".join(v.value for v in scan.views) or "none"
    return [
        Problem(
            "missing-view",
            f"the {view.value} view is required by the spec (views="
            f"{spec.views.value}) but the scan has: {present}; set the site's "
            "default view or choose a view mode the archive provides",
            where=view.value,
        )
        for view in _views_for(spec.views)
        if view not in scan.views
    ]


def preprocess_with_report(scan: NMScan, spec: PreprocessSpec) -> PreprocessedScan:
    """Preprocess a scan and report how much each view's crop removed.

    Parameters
    ----------
    scan
        The scan as read from DICOM.
    spec
        Target spacing, canvas and views.

    Returns
    -------
    PreprocessedScan
        float32 image of ``spec.output_shape`` in ``[0, 1]`` and cropped shares.

    Raises
    ------
    PreprocessingError
        ``missing-view`` when the scan lacks a view the spec needs;
        ``empty-view`` / ``non-finite-counts`` for unusable counts. Every
        problem of every view is listed.
    """
    wanted = _views_for(spec.views)
    source = scan.metadata.source_path
    problems = _missing_views(scan, spec)
    PreprocessingError.raise_if_any(source, problems)
    height, width = spec.canvas_height, spec.canvas_width
    output = np.zeros(spec.output_shape, dtype=np.float32)
    cropped: dict[View, float] = {}
    for slot, view in enumerate(wanted):
        scan_view = scan.views[view]
        resampled = resample_preserving_counts(
            orient_to_anterior(scan_view), scan_view.spacing_mm, spec.spacing_mm
        )
        try:
            level = _clip_level(resampled, spec.clip_percentile)
        except PreprocessingError as error:
            problems.extend(
                Problem(p.code, p.message, where=view.value) for p in error.problems
            )
            continue
        placement = _placement(resampled, height, width)
        cropped[view] = placement.cropped_fraction
        if placement.cropped_fraction > CROP_WARNING_FRACTION:
            # Callers get the fraction back; prepare warns once per scan in the
            # parent process (worker processes have no log handlers).
            logger.debug(
                "%s: the %s view lost %.1f%% of its counts to the %dx%d canvas",
                source,
                view.value,
                100 * placement.cropped_fraction,
                height,
                width,
            )
        # Scale straight into the output: no intermediate canvas per view.
        target = output[:, slot * width : (slot + 1) * width][placement.target]
        np.divide(resampled[placement.source], level, out=target)
        np.clip(target, 0.0, 1.0, out=target)
    PreprocessingError.raise_if_any(source, problems)
    return PreprocessedScan(image=output, cropped_fraction=cropped)


def preprocess_scan(scan: NMScan, spec: PreprocessSpec) -> np.ndarray:
    """Put a scan on the canvas described by ``spec``.

    Parameters
    ----------
    scan
        The scan as read from DICOM.
    spec
        Target spacing, canvas and views.

    Returns
    -------
    numpy.ndarray
        float32 ``spec.output_shape`` image in ``[0, 1]``: ``(H, W)``, or
        ``(H, 2W)`` with the anterior left and mirrored posterior right for
        ``ViewMode.BOTH``.

    Raises
    ------
    PreprocessingError
        See :func:`preprocess_with_report`.
    """
    return preprocess_with_report(scan, spec).image


@dataclass(frozen=True)
class CountsCanvas:
    """A scan's counts on the canvas, and where each view was placed.

    Attributes
    ----------
    image
        float32 ``spec.output_shape`` counts (not normalised): the oriented,
        resampled views placed exactly as :func:`preprocess_with_report`
        places them.
    placements
        Where each view went, in canvas order (anterior first with
        ``ViewMode.BOTH``); pass them to :func:`counts_on_canvas` to place
        another acquisition of the same views (a thinned copy) identically.
    """

    image: np.ndarray
    placements: dict[View, CanvasPlacement]


def _placement_problem(
    view: View,
    placement: CanvasPlacement,
    shape: tuple[int, ...],
    canvas: tuple[int, int],
) -> Problem | None:
    rows, columns = placement.source
    target_rows, target_columns = placement.target
    if (
        rows.stop <= shape[0]
        and columns.stop <= shape[1]
        and target_rows.stop <= canvas[0]
        and target_columns.stop <= canvas[1]
    ):
        return None
    return Problem(
        "placement-mismatch",
        f"the given placement takes rows {rows.start}:{rows.stop} and columns "
        f"{columns.start}:{columns.stop} of a resampled view of shape {shape} "
        f"to a {canvas[0]}x{canvas[1]} canvas; pass the placements of an "
        "acquisition with the same matrix, pixel spacing and spec, or none to "
        "apply the canvas rule",
        where=view.value,
    )


def counts_on_canvas(
    scan: NMScan,
    spec: PreprocessSpec,
    *,
    placements: Mapping[View, CanvasPlacement] | None = None,
) -> CountsCanvas:
    """Put a scan's counts on the canvas without normalising them.

    Orientation, count-preserving resampling and placement are those of
    :func:`preprocess_with_report`, so the image is that function's output
    before division by the clip level (where nothing is clipped).

    Parameters
    ----------
    scan
        The scan as read from DICOM (or a thinned copy of it).
    spec
        Target spacing, canvas and views (the clip percentile is not used).
    placements
        Per view, where to place it; ``None`` applies the canvas rule. Give
        the standard scan's placements to place a copy of it identically.

    Returns
    -------
    CountsCanvas
        float32 counts of ``spec.output_shape`` and the placements used.

    Raises
    ------
    PreprocessingError
        ``missing-view`` when the scan (or ``placements``) lacks a view the
        spec needs, ``non-finite-counts`` for NaN or infinite counts,
        ``placement-mismatch`` when a given placement does not fit the view.
        Every problem of every view is listed.
    """
    source = scan.metadata.source_path
    problems = _missing_views(scan, spec)
    if placements is not None:
        problems.extend(
            Problem(
                "missing-view",
                f"no placement given for the {view.value} view; pass the "
                "placements of every view the spec uses",
                where=view.value,
            )
            for view in _views_for(spec.views)
            if view not in placements
        )
    PreprocessingError.raise_if_any(source, problems)
    height, width = spec.canvas_height, spec.canvas_width
    output = np.zeros(spec.output_shape, dtype=np.float32)
    used: dict[View, CanvasPlacement] = {}
    for slot, view in enumerate(_views_for(spec.views)):
        scan_view = scan.views[view]
        resampled = resample_preserving_counts(
            orient_to_anterior(scan_view), scan_view.spacing_mm, spec.spacing_mm
        )
        if not np.isfinite(resampled).all():
            problems.append(
                Problem(
                    "non-finite-counts",
                    "the view holds NaN or infinite values; counts must be "
                    "finite numbers, check the pixel data and rescale slope",
                    where=view.value,
                )
            )
            continue
        if placements is None:
            placement = _placement(resampled, height, width)
        else:
            placement = placements[view]
            mismatch = _placement_problem(
                view, placement, resampled.shape, (height, width)
            )
            if mismatch is not None:
                problems.append(mismatch)
                continue
        used[view] = placement
        canvas = output[:, slot * width : (slot + 1) * width]
        canvas[placement.target] = resampled[placement.source]
    PreprocessingError.raise_if_any(source, problems)
    return CountsCanvas(image=output, placements=used)
