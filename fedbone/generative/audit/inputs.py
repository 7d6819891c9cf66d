"""Input checks of the privacy audit: every problem collected, raised once.

Shared by :func:`fedbone.generative.audit.similarity.audit_synthetic` and
:func:`fedbone.generative.audit.pairwise.pairwise_mse_mae`, which take the same image
stacks and report their problems with the same stable codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError

if TYPE_CHECKING:
    from fedbone.generative.audit.similarity import AuditThresholds

__all__ = ["check_audit_inputs", "check_image_stacks", "check_positive"]


def check_audit_inputs(
    synthetic: np.ndarray,
    training: np.ndarray,
    training_patient_ids: Sequence[str],
    held_out: np.ndarray | None,
    thresholds: AuditThresholds,
) -> None:
    """Check the arguments of an audit, raising once for every problem found.

    Parameters
    ----------
    synthetic, training
        ``(S, H, W)`` and ``(T, H, W)`` images in [0, 1].
    training_patient_ids
        One patient id per training scan, at least two distinct ids.
    held_out
        ``(R, H, W)`` images in [0, 1], or ``None``.
    thresholds
        The site's release rule.

    Raises
    ------
    EvaluationError
        Listing every problem with the images, patient ids or thresholds.
    """
    images = {"synthetic": synthetic, "training": training}
    if held_out is not None:
        images["held_out"] = held_out
    problems = check_image_stacks(images)
    problems += check_positive({"top_k": thresholds.top_k})
    if thresholds.shift_px < 0:
        problems.append(
            Problem(
                "bad-shift-px",
                f"shift_px is {thresholds.shift_px}, expected an integer >= 0",
                "thresholds.shift_px",
            )
        )
    if not 0.0 < thresholds.real_quantile < 1.0:
        problems.append(
            Problem(
                "bad-real-quantile",
                f"real_quantile is {thresholds.real_quantile}, expected a value "
                "in (0, 1) such as 0.01: fix the site's audit thresholds",
                "thresholds.real_quantile",
            )
        )
    if not 0.0 < thresholds.ms_ssim_ceiling <= 1.0:
        problems.append(
            Problem(
                "bad-ms-ssim-ceiling",
                f"ms_ssim_ceiling is {thresholds.ms_ssim_ceiling}, expected a "
                "value in (0, 1] such as 0.95: fix the site's audit thresholds",
                "thresholds.ms_ssim_ceiling",
            )
        )
    if not 0.5 <= thresholds.unrealistic_quantile <= 1.0:
        problems.append(
            Problem(
                "bad-unrealistic-quantile",
                f"unrealistic_quantile is {thresholds.unrealistic_quantile}, "
                "expected a value in [0.5, 1] such as 0.99: fix the site's audit "
                "thresholds",
                "thresholds.unrealistic_quantile",
            )
        )
    ids = list(training_patient_ids)
    if len(ids) != len(np.asarray(training)):
        problems.append(
            Problem(
                "patient-ids-length-mismatch",
                f"{len(ids)} patient ids for {len(np.asarray(training))} training "
                "scans; pass one id per training scan",
                "training_patient_ids",
            )
        )
    elif len(set(ids)) < 2:
        problems.append(
            Problem(
                "too-few-patients",
                f"{len(set(ids))} distinct patient(s) in the training scans; the "
                "different-patient control needs at least 2",
                "training_patient_ids",
            )
        )
    EvaluationError.raise_if_any("audit_synthetic", problems)


def check_image_stacks(images: dict[str, np.ndarray]) -> list[Problem]:
    """Return the problems of named image stacks meant to be compared.

    Parameters
    ----------
    images
        Argument name to array; each should be a non-empty numeric finite
        ``(N, H, W)`` stack in [0, 1], all of one ``(H, W)``.

    Returns
    -------
    list of Problem
        Empty when every stack is fit for comparison.
    """
    problems: list[Problem] = []
    sizes: dict[str, tuple[int, ...]] = {}
    for name, value in images.items():
        array = np.asarray(value)
        if array.ndim != 3 or array.shape[0] == 0 or array.dtype.kind not in "uif":
            problems.append(
                Problem(
                    "bad-image-stack",
                    f"{name} has shape {array.shape} and dtype {array.dtype}; "
                    "expected a non-empty numeric (N, H, W) stack",
                    name,
                )
            )
            continue
        sizes[name] = array.shape[1:]
        if not np.isfinite(array).all():
            problems.append(
                Problem(
                    "images-not-finite",
                    f"{name} holds NaN or infinite pixels; expected finite values "
                    "in [0, 1]",
                    name,
                )
            )
        elif array.min() < 0.0 or array.max() > 1.0:
            problems.append(
                Problem(
                    "images-outside-unit-interval",
                    f"{name} spans {array.min():.4g}..{array.max():.4g}; expected "
                    "[0, 1]: preprocess (clip and scale) as for training",
                    name,
                )
            )
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{name} {size}" for name, size in sizes.items())
        problems.append(
            Problem(
                "image-size-mismatch",
                f"image sizes differ ({shown}); compare images on one canvas",
            )
        )
    return problems


def check_positive(settings: dict[str, int]) -> list[Problem]:
    """Return a ``bad-<name>`` problem for each setting below 1.

    Parameters
    ----------
    settings
        Argument name to integer value.

    Returns
    -------
    list of Problem
        Empty when every value is at least 1.
    """
    return [
        Problem(
            f"bad-{name.replace('_', '-')}",
            f"{name} is {value}, expected an integer >= 1",
            name,
        )
        for name, value in settings.items()
        if value < 1
    ]
