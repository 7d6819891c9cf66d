"""The report's fast-scan enhancement section: tables, agreement plot, examples.

Everything comes from ``run.results["enhance"]`` (pooled sums from the sites)
and, for the example triplets, from a phantom scan the centre made itself:
no site's scan appears in the centre's report (each site keeps a local page
of its own examples).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fedbone.reporting.synthetic_report import ReportSection, write_csv

__all__ = ["enhance_summary_lines", "plot_agreement", "write_enhance_sections"]


def _mean_sd(row: Mapping[str, Any], measure: str, digits: int) -> str:
    mean, sd = row.get(measure, math.nan), row.get(f"{measure}_sd", math.nan)
    if not math.isfinite(mean):
        return "-"
    return (
        f"{mean:.{digits}f} ± {sd:.{digits}f}"
        if math.isfinite(sd)
        else f"{mean:.{digits}f}"
    )


def _quality_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "image set": row["image_set"],
            "n": row["n"],
            "PSNR (dB)": _mean_sd(row, "psnr", 2),
            "SSIM": _mean_sd(row, "ssim", 3),
            "MS-SSIM": _mean_sd(row, "ms-ssim", 3),
            "perceptual": _mean_sd(row, "perceptual", 4),
            "FD": f"{row['fd']:.3g}" if math.isfinite(row["fd"]) else "-",
        }
        for row in rows
    ]


def _agreement_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "image set": row["image_set"],
            "n": row["n"],
            "bias (counts)": f"{row['bias']:.1f}",
            "95% limits": f"{row['lower']:.1f} to {row['upper']:.1f}",
            "Pearson r": f"{row['pearson_r']:.3f}",
        }
        for row in rows
    ]


def _equivalence_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "image set": row["image_set"],
            "n (+/-)": f"{row['n_positive']}/{row['n_negative']}",
            "AUC (95% CI)": (
                f"{row['auc']:.3f} ({row['auc_low']:.3f}-{row['auc_high']:.3f})"
            ),
            "standard AUC": f"{row['auc_standard']:.3f}",
            "difference": f"{row['difference']:+.3f}",
            "one-sided 95% lower bound": f"{row['lower_bound']:+.3f}",
            "verdict": (
                f"non-inferior (margin {row['margin']:.2f})"
                if row["non_inferior"]
                else f"not shown non-inferior (margin {row['margin']:.2f})"
            ),
        }
        for row in rows
    ]


def plot_agreement(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Bias and 95% limits of agreement per image set (Bland-Altman summary)."""
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.4))
    for i, row in enumerate(rows):
        ax.plot([row["lower"], row["upper"]], [i, i], color="0.5", lw=2)
        ax.plot(row["bias"], i, "o", color="C0")
    ax.axvline(0.0, color="k", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)), [row["image_set"] for row in rows])
    ax.invert_yaxis()
    ax.set_xlabel("hottest focus counts: method - standard (bias, 95% limits)")
    ax.set_title("Count-level consistency (Bland-Altman from pooled sums)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_enhance_sections(
    out_dir: Path, enhance: Mapping[str, Any], examples: Path | None = None
) -> list[ReportSection]:
    """Write ``enhance_*.csv`` and the agreement plot; return the report sections.

    Parameters
    ----------
    out_dir
        Report folder.
    enhance
        ``run.results["enhance"]``.
    examples
        PNG of phantom triplets made at the centre, if any.
    """
    quality = list(enhance.get("quality", []))
    agreement = list(enhance.get("agreement", []))
    equivalence = list(enhance.get("equivalence", []))
    write_csv(
        out_dir / "enhance_quality.csv",
        [{k: v for k, v in row.items() if k != "fd_by_site"} for row in quality],
    )
    write_csv(
        out_dir / "enhance_agreement.csv",
        [{k: v for k, v in row.items() if k != "sums"} for row in agreement],
    )
    write_csv(out_dir / "enhance_equivalence.csv", equivalence)
    plot = plot_agreement(agreement, out_dir / "enhance_agreement.png")
    images = tuple(p for p in (plot, examples) if p is not None)
    return [
        ReportSection(
            heading="Fast-scan enhancement: image quality",
            notes=(
                "Per image set (<method>-<level>; 'fast' is the unenhanced fast "
                "scan scaled to the standard acquisition, '-real' levels are real "
                "fast acquisitions, the others binomially thinned standard scans). "
                "PSNR/SSIM/MS-SSIM on each standard scan's intensity range; "
                "perceptual: an unweighted LPIPS-like distance in each site's own "
                "encoder; FD: the scan-weighted mean of the sites' Fréchet "
                "distances, each in its own feature space (lower is better). "
                "Pooled means and SDs are exact: the sites sent sums.",
            ),
            tables=(
                (
                    _quality_table(quality),
                    (
                        "image set",
                        "n",
                        "PSNR (dB)",
                        "SSIM",
                        "MS-SSIM",
                        "perceptual",
                        "FD",
                    ),
                ),
            ),
        ),
        ReportSection(
            heading="Fast-scan enhancement: count-level consistency",
            notes=(
                "Maximum counts in a 3x3 window at the hottest focus of each "
                "positive patient's standard scan (bladder excluded), method minus "
                "standard, in counts of a standard acquisition; from pooled sums "
                "and cross-products (the centre never sees a per-scan value, so the "
                "plot shows each set's bias and limits, not points).",
            ),
            tables=(
                (
                    _agreement_table(agreement),
                    ("image set", "n", "bias (counts)", "95% limits", "Pearson r"),
                ),
            ),
            images=images,
        ),
        ReportSection(
            heading="Fast-scan enhancement: diagnostic equivalence",
            notes=(
                "The study's federated classifier scores standard, fast and "
                "enhanced scans of the same patients; pooled AUC from per-class "
                "histograms; paired DeLong test against the standard scans from "
                "component sums; non-inferior when the one-sided 95% lower bound of "
                "the AUC difference lies above minus the margin.",
            ),
            tables=(
                (
                    _equivalence_table(equivalence),
                    (
                        "image set",
                        "n (+/-)",
                        "AUC (95% CI)",
                        "standard AUC",
                        "difference",
                        "one-sided 95% lower bound",
                        "verdict",
                    ),
                ),
            ),
        ),
    ]


def enhance_summary_lines(enhance: Mapping[str, Any]) -> list[str]:
    """Return lines for the printed summary: quality per set, verdicts."""
    lines = ["Fast-scan enhancement (pooled over sites):"]
    for row in enhance.get("quality", []):
        lines.append(
            f"  {row['image_set']:<22} PSNR {row['psnr']:6.2f} dB  SSIM "
            f"{row['ssim']:.3f}  FD {row['fd']:.3g}  (n={row['n']})"
        )
    for row in enhance.get("equivalence", []):
        verdict = "non-inferior" if row["non_inferior"] else "not shown non-inferior"
        lines.append(
            f"  {row['image_set']:<22} AUC {row['auc']:.3f} vs "
            f"{row['auc_standard']:.3f} ({row['difference']:+.3f}, lower bound "
            f"{row['lower_bound']:+.3f}): {verdict}"
        )
    return lines
