"""Site profiles A-F after Haberl et al. 2025, and their gamma cameras.

Sizes and prevalences are the paper's; scanners, tracers and study periods are
plausible stand-ins so that sites differ the way real centres do (pixel size,
resolution, count level, vendor, tracer, missing demographics).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SITE_PROFILES", "Scanner", "SiteProfile", "site_profile"]


@dataclass(frozen=True)
class Scanner:
    """A whole-body gamma camera as a site runs it.

    Parameters
    ----------
    manufacturer, model
        Written to the DICOM header and the manifest ``scanner`` column.
    spacing_mm
        Square pixel size of the 1024 x 256 whole-body matrix.
    fwhm_mm
        System resolution (collimator + intrinsic) at a typical distance.
    median_counts
        Median total counts per view at this site's protocol.
    scan_velocity_cm_min
        Table speed.
    """

    manufacturer: str
    model: str
    spacing_mm: float
    fwhm_mm: float
    median_counts: float
    scan_velocity_cm_min: float
    shape: tuple[int, int] = (1024, 256)

    @property
    def name(self) -> str:
        """``"<manufacturer> <model>"`` as written to the manifest."""
        return f"{self.manufacturer} {self.model}"


@dataclass(frozen=True)
class SiteProfile:
    """One centre's cohort structure.

    Parameters
    ----------
    site
        Site letter.
    institution
        Written as InstitutionName.
    n_scans
        Cohort size in the paper (scaled down by the generator).
    prevalence_bm
        Fraction of scans with metastasis-indicative uptake.
    prevalence_ca
        Fraction with Perugini grade >= 2; ``None`` when the site did not
        assess it (``label_ca`` and ``perugini_grade`` stay empty).
    tracers
        Tracers used, chosen per scan.
    scanners
        Cameras, chosen per scan with ``scanner_weights``.
    scanner_weights
        Relative use of each camera.
    years
        First and last year of the study period.
    has_outcomes
        Follow-up (death, heart-failure hospitalisation) is recorded.
    demographics_known
        Age and sex are in the headers and manifest.
    validation_only
        External test site in the paper: every scan goes to ``test``.
    repeat_fraction
        Fraction of patients with a second scan.
    """

    site: str
    institution: str
    n_scans: int
    prevalence_bm: float
    prevalence_ca: float | None
    tracers: tuple[str, ...]
    scanners: tuple[Scanner, ...]
    scanner_weights: tuple[float, ...]
    years: tuple[int, int]
    has_outcomes: bool = False
    demographics_known: bool = True
    validation_only: bool = False
    repeat_fraction: float = 0.06


_SYMBIA = Scanner("SIEMENS", "Symbia T2", 2.26, 11.0, 2.6e6, 14.0)
_INTEVO = Scanner("SIEMENS", "Symbia Intevo", 2.26, 10.0, 3.0e6, 15.0)
_DISCOVERY = Scanner(
    "GE MEDICAL SYSTEMS", "Discovery NM/CT 670", 2.4, 11.5, 2.2e6, 12.0
)
_INFINIA = Scanner("GE MEDICAL SYSTEMS", "Infinia Hawkeye 4", 2.4, 12.5, 1.8e6, 10.0)
_BRIGHTVIEW = Scanner("Philips", "BrightView XCT", 2.21, 12.0, 2.4e6, 13.0)
_ANYSCAN = Scanner("Mediso", "AnyScan SC", 2.21, 9.5, 3.4e6, 16.0)

SITE_PROFILES: dict[str, SiteProfile] = {
    "A": SiteProfile(
        "A",
        "Vienna General Hospital",
        9170,
        0.12,
        0.02,
        ("DPD", "HMDP"),
        (_SYMBIA, _INTEVO),
        (0.6, 0.4),
        (2010, 2020),
    ),
    "B": SiteProfile(
        "B",
        "Spedali Civili Brescia",
        181,
        0.06,
        0.38,
        ("HMDP",),
        (_DISCOVERY,),
        (1.0,),
        (2016, 2021),
    ),
    "C": SiteProfile(
        "C",
        "Careggi University Hospital",
        200,
        0.09,
        0.52,
        ("HMDP",),
        (_INFINIA,),
        (1.0,),
        (2015, 2021),
        validation_only=True,
    ),
    "D": SiteProfile(
        "D",
        "Vienna General Hospital",
        3210,
        0.25,
        0.06,
        ("DPD",),
        (_INTEVO, _SYMBIA),
        (0.7, 0.3),
        (2020, 2023),
        has_outcomes=True,
        validation_only=True,
    ),
    "E": SiteProfile(
        "E",
        "Champalimaud Foundation",
        934,
        0.16,
        0.0,
        ("MDP",),
        (_BRIGHTVIEW,),
        (1.0,),
        (2017, 2022),
        validation_only=True,
    ),
    "F": SiteProfile(
        "F",
        "West China Hospital",
        3128,
        0.08,
        None,
        ("HMDP",),
        (_ANYSCAN, _DISCOVERY),
        (0.5, 0.5),
        (2018, 2022),
        demographics_known=False,
        validation_only=True,
    ),
}


def site_profile(site: str) -> SiteProfile:
    """Return the profile of ``site`` (``A``..``F``).

    Raises
    ------
    KeyError
        Naming the known sites when ``site`` is not one of them.
    """
    try:
        return SITE_PROFILES[site]
    except KeyError:
        known = ", ".join(SITE_PROFILES)
        raise KeyError(
            f"unknown phantom site {site!r}; choose one of {known}"
        ) from None
