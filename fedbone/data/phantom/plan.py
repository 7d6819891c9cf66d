"""A site's cohort on paper: who is scanned, when, with which labels and split.

Planning draws no pixels, so label prevalences, splits, repeat scans and
outcomes can be checked (and tested) on large cohorts in milliseconds; the
renderer then turns each :class:`ScanPlan` into a DICOM file on its own seed.
"""

from __future__ import annotations

import datetime
import zlib
from dataclasses import dataclass, replace

import numpy as np

from fedbone.data.phantom.outcomes import simulate_outcomes
from fedbone.data.phantom.profiles import Scanner, SiteProfile, site_profile

__all__ = [
    "SPLIT_FRACTIONS",
    "ScanPlan",
    "fast_seed_sequence",
    "plan_site_cohort",
    "scan_seed_sequence",
]

#: Per-patient split fractions (train, val, test), stratified by label.
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
_HIDDEN_CA_PREVALENCE = 0.03  # rendered at sites that did not grade the heart
_MAX_METASTASES = 15


@dataclass(frozen=True)
class ScanPlan:
    """Everything needed to render and list one phantom scan.

    ``perugini_grade`` and ``age_years``/``female`` are the truth the scan is
    rendered from; ``ca_known`` and ``demographics_known`` say whether the site
    records them (manifest and DICOM header).
    """

    site: str
    index: int
    seed: int
    scan_id: str
    patient_id: str
    split: str
    label_bm: int
    n_metastases: int
    perugini_grade: int
    ca_known: bool
    age_years: float
    female: bool
    demographics_known: bool
    study_date: datetime.date
    scanner: Scanner
    tracer: str
    institution: str
    outcomes: tuple[tuple[str, int, int], ...] | None = None
    preview: bool = False

    @property
    def label_ca(self) -> int | None:
        """1 if Perugini grade >= 2, 0 if lower, ``None`` where not assessed."""
        return int(self.perugini_grade >= 2) if self.ca_known else None


def _site_key(site: str) -> int:
    return zlib.crc32(site.encode())


def scan_seed_sequence(seed: int, site: str, index: int) -> np.random.SeedSequence:
    """Return the seed of scan ``index`` of ``site``, independent of the rest.

    Parameters
    ----------
    seed
        Cohort seed.
    site
        Site name (``A``..``F``).
    index
        Position of the scan in the site's plan.
    """
    return np.random.SeedSequence(seed, spawn_key=(_site_key(site), 1, index))


def fast_seed_sequence(
    seed: int, site: str, index: int, speed: int
) -> np.random.SeedSequence:
    """Return the seed of scan ``index``'s fast acquisition at ``speed``.

    A stream of its own: adding fast acquisitions to a cohort changes none of
    its standard scans, and each speed's noise is independent of the others.

    Parameters
    ----------
    seed
        Cohort seed.
    site
        Site name (``A``..``F``).
    index
        Position of the scan in the site's plan.
    speed
        Table speed of the fast acquisition (2 for a 2x scan).
    """
    return np.random.SeedSequence(seed, spawn_key=(_site_key(site), 2, index, speed))


def _exact_count(prevalence: float, n: int) -> int:
    """Positives for a prevalence: rounded, but at least one if it is > 0."""
    return max(round(prevalence * n), 1) if prevalence > 0 else 0


def _grades(profile: SiteProfile, n: int, rng: np.random.Generator) -> np.ndarray:
    prevalence = profile.prevalence_ca
    if prevalence is None:
        prevalence = _HIDDEN_CA_PREVALENCE
    positives = _exact_count(prevalence, n)
    grades = np.zeros(n, dtype=np.int64)
    grades[:positives] = np.where(rng.random(positives) < 0.55, 2, 3)
    if "MDP" not in profile.tracers:  # MDP barely shows the heart at all
        mild = rng.random(n - positives) < 0.05
        grades[positives:][mild] = 1
    return rng.permutation(grades)


def _pair_repeats(
    grades: np.ndarray, n_pairs: int, rng: np.random.Generator
) -> list[list[int]]:
    """Group scan indices into patients; repeat scans share a Perugini grade."""
    order = rng.permutation(len(grades))
    patients: list[list[int]] = []
    pairs_left = n_pairs
    for grade in (0, 1, 2, 3):
        group = [int(i) for i in order if grades[i] == grade]
        wanted = min(
            round(n_pairs * len(group) / len(grades)), len(group) // 2, pairs_left
        )
        pairs_left -= wanted
        patients += [sorted(group[2 * k : 2 * k + 2]) for k in range(wanted)]
        patients += [[i] for i in group[2 * wanted :]]
    patients.sort(key=min)
    return patients


def _demographics(bm: int, grade: int, rng: np.random.Generator) -> tuple[float, bool]:
    if grade >= 2:  # transthyretin amyloidosis: old men
        age, male_share = rng.normal(78.0, 7.0), 0.8
    elif bm:
        age, male_share = rng.normal(69.0, 10.0), 0.55
    else:
        age, male_share = rng.normal(66.0, 13.0), 0.47
    return float(np.clip(age, 18.0, 97.0)), bool(rng.random() >= male_share)


def _splits(
    keys: list[tuple[int, int]], test_only: bool, rng: np.random.Generator
) -> list[str]:
    if test_only:
        return ["test"] * len(keys)
    splits = [""] * len(keys)
    train_cut, val_cut = SPLIT_FRACTIONS[0], SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]
    for key in sorted(set(keys)):
        members = rng.permutation([i for i, k in enumerate(keys) if k == key])
        for rank, patient in enumerate(members):
            position = (rank + 0.5) / len(members)
            splits[int(patient)] = (
                "train"
                if position < train_cut
                else "val"
                if position < val_cut
                else "test"
            )
    return splits


def plan_site_cohort(
    site: str,
    *,
    scale: float = 0.01,
    min_scans: int = 20,
    seed: int = 0,
    outcomes: bool | None = None,
    test_only: bool | None = None,
    previews: int = 0,
) -> list[ScanPlan]:
    """Plan a site's phantom cohort without rendering anything.

    Parameters
    ----------
    site
        Profile name ``A``..``F`` (:data:`~.profiles.SITE_PROFILES`).
    scale
        Fraction of the paper's cohort size.
    min_scans
        Floor on the number of scans.
    seed
        Cohort seed; the same seed gives the same plan.
    outcomes
        Simulate follow-up; ``None`` follows the profile (site D).
    test_only
        Put every patient in ``test``; ``None`` follows the profile
        (validation-only sites C-F). Otherwise 70/10/20 by patient.
    previews
        How many scans to mark for a PNG preview (positives first).

    Returns
    -------
    list of ScanPlan
        One per scan, in scan-index order.
    """
    profile = site_profile(site)
    n = max(int(min_scans), round(profile.n_scans * scale))
    rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(_site_key(site), 0))
    )
    bm = rng.permutation(np.arange(n) < _exact_count(profile.prevalence_bm, n)).astype(
        np.int64
    )
    grades = _grades(profile, n, rng)
    n_pairs = round(n * profile.repeat_fraction / (1 + profile.repeat_fraction))
    patients = _pair_repeats(grades, n_pairs, rng)
    first = [scans[0] for scans in patients]
    people = [_demographics(int(bm[i]), int(grades[i]), rng) for i in first]
    split_of = _splits(
        [(int(bm[i]), int(grades[i] >= 2)) for i in first],
        profile.validation_only if test_only is None else test_only,
        rng,
    )
    start = datetime.date(profile.years[0], 1, 1)
    span_days = (datetime.date(profile.years[1], 12, 31) - start).days
    follow_up = None
    if profile.has_outcomes if outcomes is None else outcomes:
        simulated = simulate_outcomes(
            bm[first],
            (grades[first] >= 2).astype(np.int64),
            np.array([age for age, _ in people]),
            np.array([0 if female else 1 for _, female in people]),
            rng,
        )
        follow_up = {
            name: (result.time_days, result.event) for name, result in simulated.items()
        }
    scanner_p = np.array(profile.scanner_weights) / sum(profile.scanner_weights)
    plans: dict[int, ScanPlan] = {}
    for number, scans in enumerate(patients):
        age, female = people[number]
        entry = start + datetime.timedelta(days=int(rng.integers(span_days)))
        shortest = min(
            (int(t[number]) for t, _ in (follow_up or {}).values()), default=10_000
        )
        for visit, index in enumerate(scans):
            gap = (
                0
                if visit == 0
                else min(int(rng.integers(90, 720)), max(shortest - 1, 0))
            )
            endpoints = None
            if follow_up is not None:
                endpoints = tuple(
                    (name, int(times[number]) - gap, int(events[number]))
                    for name, (times, events) in follow_up.items()
                )
            plans[index] = ScanPlan(
                site=site,
                index=index,
                seed=seed,
                scan_id=f"{site}-{index:06d}",
                patient_id=f"{site}P{number:06d}",
                split=split_of[number],
                label_bm=int(bm[index]),
                n_metastases=int(min(rng.geometric(0.25), _MAX_METASTASES))
                if bm[index]
                else 0,
                perugini_grade=int(grades[index]),
                ca_known=profile.prevalence_ca is not None,
                age_years=round(age + gap / 365.25, 1),
                female=female,
                demographics_known=profile.demographics_known,
                study_date=entry + datetime.timedelta(days=gap),
                scanner=profile.scanners[
                    int(rng.choice(len(profile.scanners), p=scanner_p))
                ],
                tracer=str(rng.choice(list(profile.tracers))),
                institution=profile.institution,
                outcomes=endpoints,
            )
    ordered = [plans[i] for i in range(n)]
    return _mark_previews(ordered, previews)


def _mark_previews(plans: list[ScanPlan], previews: int) -> list[ScanPlan]:
    """Mark up to ``previews`` scans: a BM case, a CA case, then any others."""
    firsts = [
        next((p.index for p in plans if p.label_bm == 1), None),
        next((p.index for p in plans if p.perugini_grade >= 2), None),
    ]
    chosen = list(dict.fromkeys(i for i in firsts if i is not None))
    chosen += [p.index for p in plans if p.index not in chosen]
    marked = set(chosen[: max(previews, 0)])
    return [replace(p, preview=True) if p.index in marked else p for p in plans]
