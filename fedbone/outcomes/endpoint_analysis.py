"""The study's outcome analysis of one endpoint, from what the sites released.

Per endpoint the sites release survival counts per predicted group, their own
crude and adjusted Cox fits and proportional-hazards checks, and take part as
strata in the federated Cox models; each withheld part comes with a status
saying why. :func:`analyse_endpoint` turns those into the endpoint's part of
``outcomes.json``: group sizes, Kaplan-Meier curves, the pooled and
site-stratified log-rank tests, the federated Cox models (fitted through a
caller-supplied function, since every Newton step is a round trip to the
sites), the inverse-variance meta-analysis of the site fits, and the PH checks.
An analysis that cannot be done is listed under ``errors``, not raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedbone.outcomes.cohort import COX_MODELS
from fedbone.outcomes.kaplan_meier import FederatedKaplanMeier, FederatedLogRank
from fedbone.outcomes.meta_analysis import SiteCoxFit, meta_analyze_sites
from fedbone.outcomes.release import INCLUDED
from fedbone.outcomes.summary import (
    group_summary,
    km_summary,
    logrank_summary,
    meta_rows,
    site_fit_rows,
)
from fedbone.outcomes.survival_grid import SiteSurvivalCounts
from fedbone.validation.errors import EvaluationError

__all__ = ["EndpointReleases", "analyse_endpoint", "record_site_status"]

logger = logging.getLogger(__name__)

#: ``(Cox model, its strata) -> the fitted model's summary``.
CoxFitter = Callable[[str, list[int]], dict[str, Any]]


@dataclass
class EndpointReleases:
    """What the sites released for one endpoint, by site id.

    ``strata`` lists, per Cox model, the strata (the sites' node ids) that
    take part in the federated fit.
    """

    counts: dict[str, SiteSurvivalCounts] = field(default_factory=dict)
    fits: dict[str, dict[str, SiteCoxFit]] = field(default_factory=dict)
    ph: list[dict[str, Any]] = field(default_factory=list)
    strata: dict[str, list[int]] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        """Whether any site released anything for this endpoint."""
        return bool(self.counts or self.strata or self.fits)


def record_site_status(
    releases: Mapping[str, EndpointReleases],
    site: str,
    stratum: int,
    status: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Return a site's status rows; enrol it in the Cox fits it is included in.

    Parameters
    ----------
    releases
        Per endpoint, what the sites released so far (updated in place).
    site, stratum
        The site, and how its stratum is addressed (its node id).
    status
        The site's status record: ``<endpoint>-<part>`` -> status.
    """
    rows = []
    for key, value in sorted(status.items()):
        endpoint = next((e for e in releases if key.startswith(f"{e}-")), None)
        if endpoint is None:
            continue
        part = key.removeprefix(f"{endpoint}-")
        rows.append({"site": site, "endpoint": endpoint, "part": part, "status": value})
        if part.endswith("-stratum") and value == INCLUDED:
            model = part.removesuffix("-stratum")
            releases[endpoint].strata.setdefault(model, []).append(stratum)
    return rows


def analyse_endpoint(
    endpoint: str,
    found: EndpointReleases,
    *,
    exact: bool,
    fit_cox: CoxFitter,
    recoverable: Sequence[type[Exception]] = (EvaluationError,),
) -> dict[str, Any]:
    """Everything the study reports for one endpoint (errors listed, not raised).

    Parameters
    ----------
    endpoint
        The endpoint's name, for the log.
    found
        What the sites released for it.
    exact
        ``False`` under ``dp.statistics``: only the noisy counts exist, so the
        Cox models, site fits and PH checks are not reported.
    fit_cox
        Fits one federated Cox model over its strata; returns its summary.
    recoverable
        Errors that make one analysis fail without stopping the others.
    """
    caught = tuple(recoverable)
    result: dict[str, Any] = {"sites": sorted(found.counts), "errors": []}
    counts = [found.counts[site] for site in sorted(found.counts)]

    def attempt(analysis: str, compute: Any) -> None:
        try:
            compute()
        except caught as error:
            logger.warning("outcomes %s %s: %s", endpoint, analysis, error)
            result["errors"].append({"analysis": analysis, "reason": str(error)})

    if counts:
        result["groups"] = group_summary(counts)
        attempt(
            "kaplan-meier",
            lambda: result.update(km=km_summary(FederatedKaplanMeier().fit(counts))),
        )
        for key, stratified in (("logrank", False), ("logrank-stratified", True)):
            attempt(
                key,
                lambda key=key, stratified=stratified: result.update(
                    {key: logrank_summary(FederatedLogRank(stratified).fit(counts))}
                ),
            )
    else:
        result["errors"].append(
            {"analysis": "kaplan-meier", "reason": "no site released counts"}
        )
    if not exact:
        return result
    result["cox"], result["meta"], result["site-fits"] = {}, {}, []
    for model in COX_MODELS:
        strata = found.strata.get(model, [])
        if strata:
            attempt(
                f"cox-{model}",
                lambda m=model, s=strata: result["cox"].__setitem__(m, fit_cox(m, s)),
            )
        fits = found.fits.get(model, {})
        for site, fit in sorted(fits.items()):
            result["site-fits"] += site_fit_rows(site, model, fit)
        if fits:
            attempt(
                f"meta-{model}",
                lambda f=fits, m=model: result["meta"].__setitem__(
                    m, meta_rows(meta_analyze_sites([f[s] for s in sorted(f)]))
                ),
            )
    result["ph-checks"] = found.ph
    return result
