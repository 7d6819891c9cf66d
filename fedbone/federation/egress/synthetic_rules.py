"""Reply rules for the generative exchange: audited images, audit summaries, grids.

Kept apart from :mod:`fedbone.federation.egress.reply_rules` because these are the
only rules under which pixels may leave a site: a ``synthetic`` ArrayRecord
passes only when every image in it is one the site's audit released (its
digest is in the release register) -- the guard checks that itself rather
than trusting the handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from fedbone.errors import Problem
from fedbone.federation.kinds import SYNTHETIC_KEYS

__all__ = [
    "MAX_SUMMARY_HISTOGRAM_BINS",
    "ReleaseCheck",
    "audit_summary_problems",
    "audited_image_problems",
    "density_grid_problems",
    "verdict_problems",
]

#: ``images -> positions of the images the site's audit did not release``.
ReleaseCheck = Callable[[np.ndarray], np.ndarray]

MAX_SUMMARY_HISTOGRAM_BINS = 64


def audited_image_problems(
    name: str, record: ArrayRecord, release_check: ReleaseCheck | None
) -> list[Problem]:
    """Every way ``record`` is not a batch of released synthetic images.

    Parameters
    ----------
    name
        The record's name, for messages.
    record
        The reply's record: ``images`` ``(N, H, W)`` float16 and ``class-ids``
        ``(N,)`` int64, nothing else.
    release_check
        Returns the positions of images the site's audit did not release;
        ``None`` (no release register) refuses every image.
    """
    problems = [
        Problem(
            "unexpected-array",
            f"a {name!r} record holds only {', '.join(SYNTHETIC_KEYS)}",
            f"{name}/{key}",
        )
        for key in record
        if key not in SYNTHETIC_KEYS
    ]
    missing = [key for key in SYNTHETIC_KEYS if key not in record]
    if missing:
        return problems + [
            Problem("missing-array", "audited images need both arrays", f"{name}/{k}")
            for k in missing
        ]
    images = record["images"].numpy()
    class_ids = record["class-ids"].numpy()
    if images.ndim != 3 or images.dtype != np.float16:
        problems.append(
            Problem(
                "not-images",
                f"expected (N, H, W) float16 images, got {images.shape} "
                f"{images.dtype}; send "
                "fedbone.generative.release_register.wire_images(...)",
                f"{name}/images",
            )
        )
    if class_ids.shape != images.shape[:1] or class_ids.dtype != np.int64:
        problems.append(
            Problem(
                "bad-labels",
                f"expected one int64 class id per image, got {class_ids.shape} "
                f"{class_ids.dtype}",
                f"{name}/class-ids",
            )
        )
    if problems:
        return problems
    if release_check is None:
        return [
            Problem(
                "no-release-register",
                "this site's guard has no release register, so no image can be "
                "shown to have passed an audit; images never leave without one",
                name,
            )
        ]
    unreleased = release_check(images)
    if len(unreleased):
        problems.append(
            Problem(
                "not-released-by-audit",
                f"{len(unreleased)} of {len(images)} images are not in the site's "
                "release register: only images the audit passed may leave",
                f"{name}/images",
            )
        )
    return problems


def audit_summary_problems(where: str, key: str, value: Any) -> list[Problem]:
    """Problems of one audit-summary value: scalars, or a short int histogram.

    Parameters
    ----------
    where
        ``record/key``, for messages.
    key
        The value's key; a list is allowed only under a ``*-histogram`` key.
    value
        The value; scalars pass, a list must be at most
        :data:`MAX_SUMMARY_HISTOGRAM_BINS` non-negative ints.
    """
    if not isinstance(value, list):
        return []
    if not key.endswith("-histogram"):
        return [
            Problem(
                "list-not-allowed",
                "an audit summary holds scalars and '*-histogram' counts only",
                where,
            )
        ]
    if len(value) > MAX_SUMMARY_HISTOGRAM_BINS or not all(
        isinstance(v, int) and v >= 0 for v in value
    ):
        return [
            Problem(
                "not-a-summary-histogram",
                f"expected at most {MAX_SUMMARY_HISTOGRAM_BINS} non-negative int "
                "counts over the public bin edges",
                where,
            )
        ]
    return []


def density_grid_problems(
    where: str, key: str, value: Any, small_cell_threshold: int
) -> list[Problem]:
    """Problems of one density-grid value: counts with small cells suppressed.

    Parameters
    ----------
    where
        ``record/key``, for messages.
    key
        The value's key; a list is allowed only under a ``grid-*`` key.
    value
        The value; scalars pass, a list must be non-negative int counts.
    small_cell_threshold
        On ``grid-real*`` keys (real scans), every non-zero cell must hold at
        least this many points; synthetic grids are not checked.
    """
    if not isinstance(value, list):
        return []
    if not key.startswith("grid-"):
        return [
            Problem(
                "list-not-allowed",
                "a density record holds scalars and 'grid-*' counts only",
                where,
            )
        ]
    if not all(isinstance(v, int) and v >= 0 for v in value):
        return [Problem("not-a-count", "grid cells must be int counts >= 0", where)]
    # Real scans are patients; synthetic images are not, so only the real
    # grid's small cells must be suppressed.
    small = sum(1 for v in value if 0 < v < small_cell_threshold)
    if key.startswith("grid-real") and small:
        return [
            Problem(
                "small-cell",
                f"{small} grid cell(s) hold 1..{small_cell_threshold - 1} points; "
                "suppress them (set to 0) before sending",
                where,
            )
        ]
    return []


def verdict_problems(
    name: str, record: ArrayRecord, request_shape: tuple[int, ...] | None
) -> list[Problem]:
    """Every way ``record`` is not one 0/1 verdict per image the request sent.

    ``request_shape`` is the shape of the request's ``synthetic/images``; a
    request without images may get no verdicts.

    Parameters
    ----------
    name
        The record's name, for messages.
    record
        The reply's record; must hold only ``passed``, ``(N,)`` uint8 of 0/1.
    request_shape
        Shape of the images the request sent, ``None`` when it sent none.
    """
    extra = [key for key in record if key != "passed"]
    if extra or "passed" not in record:
        return [
            Problem(
                "unexpected-array",
                "a verdicts record holds exactly one array, 'passed'",
                f"{name}/{', '.join(extra) or 'passed'}",
            )
        ]
    if request_shape is None:
        return [
            Problem(
                "no-images-in-request",
                "verdicts answer a request that carries synthetic images",
                name,
            )
        ]
    passed = record["passed"].numpy()
    if (
        passed.dtype != np.uint8
        or passed.shape != tuple(request_shape[:1])
        or not np.isin(passed, (0, 1)).all()
    ):
        return [
            Problem(
                "not-verdicts",
                f"expected ({request_shape[0]},) uint8 of 0/1, one per received "
                f"image; got {passed.shape} {passed.dtype}",
                f"{name}/passed",
            )
        ]
    return []
