"""One endpoint's outcome analysis from what the sites released."""

from __future__ import annotations

from typing import Any

from fedbone.outcomes.endpoint_analysis import (
    EndpointReleases,
    analyse_endpoint,
    record_site_status,
)


class _RefusedError(Exception):
    """A Cox fit whose strata changed mid-fit."""


def test_site_status_rows_enrol_included_strata() -> None:
    releases = {"death": EndpointReleases(), "sre": EndpointReleases()}
    status = {
        "death-counts": "included",
        "death-crude-stratum": "included",
        "death-adjusted-stratum": "small-group",
        "other-counts": "included",
    }

    rows = record_site_status(releases, "A", 7, status)

    assert [(r["endpoint"], r["part"], r["status"]) for r in rows] == [
        ("death", "adjusted-stratum", "small-group"),
        ("death", "counts", "included"),
        ("death", "crude-stratum", "included"),
    ]
    assert releases["death"].strata == {"crude": [7]}
    assert releases["death"].usable and not releases["sre"].usable


def test_cox_models_are_fitted_over_their_strata_and_failures_listed() -> None:
    found = EndpointReleases(strata={"crude": [2, 1], "adjusted": [1]})
    asked: list[tuple[str, list[int]]] = []

    def fit_cox(model: str, strata: list[int]) -> dict[str, Any]:
        asked.append((model, strata))
        if model == "adjusted":
            raise _RefusedError("site B did not answer a Newton round")
        return {"converged": True}

    result = analyse_endpoint(
        "death", found, exact=True, fit_cox=fit_cox, recoverable=(_RefusedError,)
    )

    assert asked == [("crude", [2, 1]), ("adjusted", [1])]
    assert result["cox"] == {"crude": {"converged": True}}
    assert result["errors"] == [
        {"analysis": "kaplan-meier", "reason": "no site released counts"},
        {"analysis": "cox-adjusted", "reason": "site B did not answer a Newton round"},
    ]
    assert result["sites"] == [] and result["ph-checks"] == []


def test_noisy_counts_get_no_cox_models() -> None:
    found = EndpointReleases(strata={"crude": [1]})

    result = analyse_endpoint(
        "death", found, exact=False, fit_cox=lambda model, strata: {}
    )

    assert "cox" not in result and "ph-checks" not in result
