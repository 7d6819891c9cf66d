"""Tables, figures and CSVs of the outcome part of a study report.

Renders ``run.results["outcomes"]`` (the ``outcomes`` phase: pooled
Kaplan-Meier curves, log-rank tests, site-stratified Cox models, per-site fits
with their meta-analysis and proportional-hazards checks). Every figure there
was computed from counts and derivatives the sites released; nothing here
touches patient-level data. Any analysis may be missing (it failed or was not
run); what exists is rendered and the endpoint's ``errors`` say why the rest is
absent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedbone.reporting.outcome_plots import km_groups, plot_kaplan_meier
from fedbone.reporting.synthetic_report import ReportSection, write_csv

__all__ = [
    "PH_FLAG_P",
    "cox_csv_rows",
    "km_csv_rows",
    "outcome_summary_lines",
    "write_outcome_sections",
]

#: PH-check p-value below which a covariate is flagged.
PH_FLAG_P = 0.05

_MODELS = ("crude", "adjusted")


def _value(value: Any) -> float:
    """``value`` as float; ``None``, ``""`` and non-numbers become NaN."""
    try:
        return math.nan if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return math.nan


def _num(value: Any, form: str = ".3g") -> str:
    number = _value(value)
    return "n/a" if math.isnan(number) else format(number, form)


def _p(value: Any) -> str:
    number = _value(value)
    if math.isnan(number):
        return "n/a"
    return "<0.0001" if number < 1e-4 else f"{number:.2g}"


def _hr(row: Mapping[str, Any]) -> str:
    """``3.71 (2.10-6.50)``; ``n/a`` without a ratio."""
    hr = _value(row.get("hr"))
    if math.isnan(hr):
        return "n/a"
    low, high = _value(row.get("hr-low")), _value(row.get("hr-high"))
    if math.isnan(low) or math.isnan(high):
        return f"{hr:.2f}"
    return f"{hr:.2f} ({low:.2f}-{high:.2f})"


def _count(value: Any) -> str:
    return _num(value, ".0f")


def _model_coefficients(
    cox: Mapping[str, Any], model: str
) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    fit = cox.get(model, {})
    return [(fit, coefficient) for coefficient in fit.get("coefficients", [])]


def cox_csv_rows(outcomes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per endpoint, Cox model and covariate, for ``outcomes_cox.csv``."""
    rows = []
    for endpoint, result in outcomes.get("endpoints", {}).items():
        for model in _MODELS:
            for fit, c in _model_coefficients(result.get("cox", {}), model):
                rows.append(
                    {
                        "endpoint": endpoint,
                        "model": model,
                        "covariate": c.get("covariate", ""),
                        "coef": c.get("coef"),
                        "se": c.get("se"),
                        "hr": c.get("hr"),
                        "hr-low": c.get("hr-low"),
                        "hr-high": c.get("hr-high"),
                        "p-value": c.get("p-value"),
                        "n-patients": fit.get("n-patients"),
                        "n-events": fit.get("n-events"),
                        "sites": " ".join(fit.get("sites", [])),
                        "converged": fit.get("converged"),
                        "iterations": fit.get("iterations"),
                    }
                )
    return rows


def km_csv_rows(outcomes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per endpoint, group and grid time, for ``outcomes_km.csv``."""
    rows = []
    for endpoint, result in outcomes.get("endpoints", {}).items():
        km = result.get("km", {})
        times = km.get("time-days", [])
        for group in km_groups(km):
            curve = km[group]
            for k, time in enumerate(times):
                rows.append(
                    {
                        "endpoint": endpoint,
                        "group": group,
                        "time-days": time,
                        "survival": curve["survival"][k],
                        "lower": curve["lower"][k],
                        "upper": curve["upper"][k],
                        "at-risk": curve["at-risk"][k],
                    }
                )
    return rows


def outcome_summary_lines(outcomes: Mapping[str, Any]) -> list[str]:
    """One terminal line per endpoint: crude and adjusted HR, log-rank p.

    Example: ``death: crude HR 3.71 (2.10-6.50), adjusted HR 3.02 (1.60-5.70),
    log-rank p = 0.0004``.
    """
    lines = []
    for endpoint, result in outcomes.get("endpoints", {}).items():
        cox = result.get("cox", {})
        parts = [
            f"{model} HR {_hr(_prediction_coefficient(cox.get(model, {})))}"
            for model in _MODELS
        ]
        p = result.get("logrank", {}).get("p-value")
        lines.append(f"{endpoint}: {', '.join(parts)}, log-rank p = {_p(p)}")
    return lines


def _prediction_coefficient(fit: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the predicted-positive row of a Cox fit (else its first row)."""
    coefficients = fit.get("coefficients", [])
    for c in coefficients:
        if c.get("covariate") == "predicted-positive":
            return dict(c)
    return dict(coefficients[0]) if coefficients else {}


def write_outcome_sections(
    out_dir: Path, outcomes: Mapping[str, Any]
) -> list[ReportSection]:
    """Write ``km_<endpoint>.png``, ``outcomes_cox.csv``, ``outcomes_km.csv``.

    Parameters
    ----------
    out_dir
        Report folder (created if needed).
    outcomes
        ``run.results["outcomes"]``; any part may be missing.

    Returns
    -------
    list of ReportSection
        A site-status section (when there is one), then one section per
        endpoint; a single section saying so when no site had follow-up data.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    endpoints = outcomes.get("endpoints", {})
    status = _status_rows(outcomes)
    if not endpoints:
        return [
            ReportSection(
                heading="Outcomes",
                notes=("No site had follow-up data; no outcome was analysed.",),
                tables=_tables(status),
            )
        ]
    for name, rows in (
        ("outcomes_cox.csv", cox_csv_rows(outcomes)),
        ("outcomes_km.csv", km_csv_rows(outcomes)),
    ):
        if rows:
            write_csv(out_dir / name, rows)
    sections = []
    if status:
        sections.append(
            ReportSection(
                heading="Outcome sites",
                notes=(
                    "Why each site is in or out of each endpoint's analyses "
                    "(counts, crude and adjusted fits).",
                ),
                tables=_tables(status),
            )
        )
    for endpoint, result in endpoints.items():
        sections.append(_endpoint_section(out_dir, outcomes, endpoint, result))
    return sections


def _tables(
    *tables: list[dict[str, Any]],
) -> tuple[tuple[list[dict[str, Any]], tuple[str, ...]], ...]:
    """Non-empty tables with their columns (first row's keys)."""
    return tuple((rows, tuple(rows[0])) for rows in tables if rows)


def _status_rows(outcomes: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {key: r.get(key, "") for key in ("site", "endpoint", "part", "status")}
        for r in outcomes.get("site-status", [])
    ]


def _endpoint_section(
    out_dir: Path,
    outcomes: Mapping[str, Any],
    endpoint: str,
    result: Mapping[str, Any],
) -> ReportSection:
    heading = f"Outcome: {endpoint} — predicted positive vs negative"
    images: tuple[Path, ...] = ()
    km = result.get("km", {})
    if km_groups(km):
        png = out_dir / f"km_{endpoint}.png"
        images = (plot_kaplan_meier(endpoint, km, png, title=heading),)
    return ReportSection(
        heading=heading,
        notes=_notes(outcomes, result),
        tables=_tables(
            _group_rows(result),
            _test_rows(result),
            _cox_rows(result),
            _meta_rows(result),
            _site_fit_rows(result),
            _ph_rows(result),
            [dict(e) for e in result.get("errors", [])],
        ),
        images=images,
    )


def _notes(outcomes: Mapping[str, Any], result: Mapping[str, Any]) -> tuple[str, ...]:
    notes = [
        f"Patients grouped by the {outcomes.get('model', 'final')} model's "
        f"prediction on their first scan (positive if score >= "
        f"{outcomes.get('threshold', 0.5)}); sites pooled: "
        f"{', '.join(result.get('sites', [])) or 'none'}.",
        "Curves and log-rank tests come from each site's counts of events and "
        f"censorings on a {_num(outcomes.get('resolution-days', 7.0), 'g')}-day "
        "grid, so they are exact at that resolution.",
    ]
    if "cox" in result:
        notes.append(
            "The Cox models are stratified by site and fitted exactly by federated "
            "Newton-Raphson (sites sent only per-iteration sums; ties: "
            f"{outcomes.get('ties', 'efron')}).",
        )
    if "meta" in result:
        notes.append(
            "The inverse-variance meta-analysis of the per-site fits is a "
            "cross-check of the federated Cox model, not the primary estimate.",
        )
    if outcomes.get("dp"):
        notes.append(
            "Under differential privacy only Laplace-noised counts were released, "
            "so curves and log-rank are approximate and no Cox model was fitted.",
        )
    return tuple(notes)


def _group_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "group": f"predicted {group}",
            "n": _count(g.get("n-patients")),
            "events": _count(g.get("n-events")),
        }
        for group, g in result.get("groups", {}).items()
    ]


def _test_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    tests = (("logrank", "log-rank"), ("logrank-stratified", "site-stratified"))
    return [
        {
            "test": label,
            "chi-squared": _num(result[key].get("statistic")),
            "df": _count(result[key].get("df")),
            "p": _p(result[key].get("p-value")),
        }
        for key, label in tests
        if key in result
    ]


def _cox_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for model in _MODELS:
        for fit, c in _model_coefficients(result.get("cox", {}), model):
            rows.append(
                {
                    "Cox model": model,
                    "covariate": c.get("covariate", ""),
                    "HR (95% CI)": _hr(c),
                    "p": _p(c.get("p-value")),
                    "n": _count(fit.get("n-patients")),
                    "events": _count(fit.get("n-events")),
                    "sites": ", ".join(fit.get("sites", [])),
                    "converged": str(fit.get("converged", "")),
                }
            )
    return rows


def _meta_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    meta = result.get("meta", {})
    return [
        {
            "meta-analysis": model,
            "covariate": m.get("covariate", ""),
            "HR (95% CI)": _hr(m),
            "p": _p(m.get("p-value")),
            "Q": _num(m.get("q")),
            "I²": _num(m.get("i2")),
            "sites": _count(m.get("n-sites")),
        }
        for model in _MODELS
        for m in meta.get(model, [])
    ]


def _site_fit_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "site fit": f.get("site", ""),
            "model": f.get("model", ""),
            "covariate": f.get("covariate", ""),
            "HR (95% CI)": _hr(f),
            "n": _count(f.get("n-patients")),
            "events": _count(f.get("n-events")),
        }
        for f in _sorted_by_site(result.get("site-fits", []))
    ]


def _ph_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for check in _sorted_by_site(result.get("ph-checks", [])):
        p = _value(check.get("p-value"))
        rows.append(
            {
                "PH check": check.get("site", ""),
                "model": check.get("model", ""),
                "covariate": check.get("covariate", ""),
                "statistic": _num(check.get("statistic")),
                "p": _p(p),
                "flag": "PH doubtful" if p < PH_FLAG_P else "",
            }
        )
    return rows


def _sorted_by_site(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(rows, key=lambda r: str(r.get("site", "")))
