"""Phantom cohorts: realistic simulated whole-body bone scans as NM DICOM.

Sites A-F replicate the cohort structure of Haberl et al. 2025 (sizes,
prevalences, scanners, tracers, missing demographics, follow-up). Scans carry
planted metastases and Perugini-graded cardiac uptake; outcomes carry planted
hazard ratios. Everything is seeded: the same seed writes the same files.
"""

from fedbone.data.phantom.cohort import (
    FAST_MANIFEST_NAME,
    MANIFEST_COLUMNS,
    CohortSummary,
    fast_scan_file,
    generate_site_cohort,
    render_planned_scan,
    write_preview_png,
)
from fedbone.data.phantom.outcomes import (
    DEATH,
    HEART_FAILURE,
    EndpointModel,
    EndpointOutcome,
    simulate_outcomes,
)
from fedbone.data.phantom.plan import ScanPlan, plan_site_cohort
from fedbone.data.phantom.profiles import SITE_PROFILES, Scanner, SiteProfile
from fedbone.data.phantom.synthesize import (
    FastAcquisition,
    SyntheticScan,
    fast_acquisition,
    synthesize_views,
)

__all__ = [
    "DEATH",
    "FAST_MANIFEST_NAME",
    "HEART_FAILURE",
    "MANIFEST_COLUMNS",
    "SITE_PROFILES",
    "CohortSummary",
    "EndpointModel",
    "EndpointOutcome",
    "FastAcquisition",
    "ScanPlan",
    "Scanner",
    "SiteProfile",
    "SyntheticScan",
    "fast_acquisition",
    "fast_scan_file",
    "generate_site_cohort",
    "plan_site_cohort",
    "render_planned_scan",
    "simulate_outcomes",
    "synthesize_views",
    "write_preview_png",
]
