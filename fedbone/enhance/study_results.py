"""The enhancement study's tables, from what every site sent (sums only).

Each site sends, per image set (``<method>-<level>``, the fast scan being
method ``fast``), its class counts and the sums and sums of squares of each
quality measure over its scans, its own Fréchet distance, sums and
cross-products of the hottest focus's counts against the standard scan, and
score histograms of the study classifier (also for ``standard-<level>``, the
standard scans of the same patients). These functions pool them:

- quality: pooled mean and SD per measure (exact: the sums add up), FD as the
  scan-weighted mean of the sites' FDs (each in its own feature space);
- count agreement: Bland-Altman bias and 95% limits and Pearson r of the
  pooled sums (:func:`fedbone.enhance.agreement.agreement`);
- diagnostic equivalence: pooled AUCs, the pooled paired DeLong test of each
  image set against the standard scans of the same patients and its
  non-inferiority verdict at the study's margin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedbone.enhance.agreement import AgreementSums, agreement
from fedbone.enhance.noninferiority import noninferiority
from fedbone.validation.histograms import ScoreHistograms, pool_histograms
from fedbone.validation.pooled_roc import (
    PairedComponentSums,
    pooled_paired_test,
    pooled_roc,
)

__all__ = [
    "MEASURES",
    "SiteEnhanceReply",
    "agreement_rows",
    "comparison_pairs",
    "equivalence_rows",
    "holding_sites",
    "pooled_score_histograms",
    "quality_rows",
]

MEASURES = ("psnr", "ssim", "ms-ssim", "perceptual")
_STANDARD = "standard-"


@dataclass(frozen=True)
class SiteEnhanceReply:
    """One site's ``enhance_evaluate`` reply, as plain values.

    ``metrics``, ``agreement`` and ``histograms`` are keyed by image set.
    """

    site: str
    metrics: dict[str, dict[str, float]]
    agreement: dict[str, dict[str, float]]
    histograms: dict[str, ScoreHistograms]

    @classmethod
    def of(
        cls, site: str, records: Mapping[str, Mapping[str, Any]]
    ) -> SiteEnhanceReply:
        """Sort a reply's records (``metrics-``, ``agreement-``, ``histograms-``)."""
        metrics, agreements, histograms = {}, {}, {}
        for name, values in records.items():
            kind, _, image_set = name.partition("-")
            if kind == "metrics":
                metrics[image_set] = {k: float(v) for k, v in values.items()}
            elif kind == "agreement":
                agreements[image_set] = {k: float(v) for k, v in values.items()}
            elif kind == "histograms":
                histograms[image_set] = ScoreHistograms.from_dict(
                    {"positives": values["positives"], "negatives": values["negatives"]}
                )
        return cls(site, metrics, agreements, histograms)


def _split(image_set: str) -> tuple[str, str]:
    method, _, level = image_set.partition("-")
    return method, level


def _usable(values: Mapping[str, float]) -> bool:
    """Tell whether the guard let a record out (withheld: n = -1, sums NaN)."""
    n = values.get("n", -1)
    return n > 0


def quality_rows(replies: Sequence[SiteEnhanceReply]) -> list[dict[str, Any]]:
    """Pooled mean and SD of each quality measure, and the mean FD, per image set."""
    names = sorted(
        {
            name
            for reply in replies
            for name in reply.metrics
            if not name.startswith(_STANDARD)
        }
    )
    rows = []
    for name in names:
        kept = [
            (r.site, r.metrics[name])
            for r in replies
            if name in r.metrics and _usable(r.metrics[name])
        ]
        if not kept:
            continue
        n = sum(int(values["n"]) for _, values in kept)
        method, level = _split(name)
        row: dict[str, Any] = {"image_set": name, "method": method, "level": level}
        row["n"] = n
        row["sites"] = len(kept)
        for measure in MEASURES:
            total = sum(values.get(f"sum-{measure}", math.nan) for _, values in kept)
            squares = sum(
                values.get(f"sumsq-{measure}", math.nan) for _, values in kept
            )
            mean = total / n
            variance = (squares - n * mean**2) / (n - 1) if n > 1 else math.nan
            row[measure] = mean
            row[f"{measure}_sd"] = (
                math.sqrt(max(variance, 0.0)) if math.isfinite(variance) else math.nan
            )
        fds = [(values["n"], values.get("fd", math.nan)) for _, values in kept]
        finite = [(w, fd) for w, fd in fds if math.isfinite(fd)]
        row["fd"] = (
            sum(w * fd for w, fd in finite) / sum(w for w, _ in finite)
            if finite
            else math.nan
        )
        row["fd_by_site"] = {site: values.get("fd", math.nan) for site, values in kept}
        rows.append(row)
    return rows


def agreement_rows(replies: Sequence[SiteEnhanceReply]) -> list[dict[str, Any]]:
    """Bland-Altman and Pearson r of hottest-focus counts, per image set."""
    names = sorted({name for reply in replies for name in reply.agreement})
    rows = []
    for name in names:
        parts = [
            AgreementSums.from_dict(r.agreement[name])
            for r in replies
            if name in r.agreement and _usable(r.agreement[name])
        ]
        if not parts:
            continue
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        result = agreement(total)
        method, level = _split(name)
        rows.append(
            {
                "image_set": name,
                "method": method,
                "level": level,
                "n": result.n,
                "bias": result.bias,
                "sd": result.sd,
                "lower": result.lower,
                "upper": result.upper,
                "pearson_r": result.pearson_r,
                "sums": total.to_dict(),
            }
        )
    return rows


def _holds_scans(histograms: ScoreHistograms) -> bool:
    counts = histograms.to_dict()
    return sum(counts["positives"]) + sum(counts["negatives"]) > 0


def comparison_pairs(replies: Sequence[SiteEnhanceReply]) -> list[tuple[str, str]]:
    """Every image set against the standard scans of the same level's patients."""
    names = {name for reply in replies for name in reply.histograms}
    pairs = []
    for name in sorted(names):
        if name.startswith(_STANDARD):
            continue
        _, level = _split(name)
        reference = f"{_STANDARD}{level}"
        if reference in names:
            pairs.append((name, reference))
    return pairs


def holding_sites(
    replies: Sequence[SiteEnhanceReply], pair: tuple[str, str]
) -> list[SiteEnhanceReply]:
    """Return the sites whose histograms of both sets hold scans."""
    return [
        r
        for r in replies
        if all(n in r.histograms and _holds_scans(r.histograms[n]) for n in pair)
    ]


def pooled_score_histograms(
    replies: Sequence[SiteEnhanceReply], names: Sequence[str]
) -> dict[str, ScoreHistograms]:
    """Each set's histograms summed over the sites that hold scans for it."""
    pooled = {}
    for name in names:
        parts = [
            r.histograms[name]
            for r in replies
            if name in r.histograms and _holds_scans(r.histograms[name])
        ]
        if parts:
            pooled[name] = pool_histograms(parts)
    return pooled


def equivalence_rows(
    pairs: Sequence[tuple[str, str]],
    pooled: Mapping[tuple[str, str], tuple[ScoreHistograms, ScoreHistograms]],
    sums: Mapping[tuple[str, str], Sequence[PairedComponentSums]],
    *,
    margin: float,
) -> list[dict[str, Any]]:
    """Pooled AUCs, paired DeLong test and non-inferiority, per image set.

    Parameters
    ----------
    pairs
        ``(image set, standard-<level>)`` comparisons.
    pooled
        Per pair, both sets' histograms pooled over the sites that sent
        components for it.
    sums
        Per pair, those sites' DeLong component sums.
    margin
        Non-inferiority margin on the AUC difference (image set - standard).
    """
    rows = []
    for a, b in pairs:
        if (a, b) not in pooled or not sums.get((a, b)):
            continue
        hist_a, hist_b = pooled[(a, b)]
        roc_a, roc_b = pooled_roc([hist_a]), pooled_roc([hist_b])
        test = pooled_paired_test(sums[(a, b)], hist_a, hist_b)
        lower, p_value, non_inferior = math.nan, math.nan, False
        if math.isfinite(test.difference) and math.isfinite(test.se) and test.se > 0:
            verdict = noninferiority(test.difference, test.se, margin=margin)
            lower, p_value = verdict.lower, verdict.p_value
            non_inferior = verdict.non_inferior
        # else: the test is undefined (one class empty, or identical scores):
        # reported as not shown non-inferior, with NaN bounds
        method, level = _split(a)
        rows.append(
            {
                "image_set": a,
                "method": method,
                "level": level,
                "reference": b,
                "n_positive": roc_a.n_positive,
                "n_negative": roc_a.n_negative,
                "auc": roc_a.auc,
                "auc_low": roc_a.auc_ci.low,
                "auc_high": roc_a.auc_ci.high,
                "auc_standard": roc_b.auc,
                "difference": test.difference,
                "se": test.se,
                "p_value": test.p_value,
                "margin": margin,
                "lower_bound": lower,
                "noninferiority_p": p_value,
                "non_inferior": non_inferior,
                "sites": len(sums[(a, b)]),
            }
        )
    return rows
