from __future__ import annotations

from collections import defaultdict

import pytest

from fedbone.data.phantom.plan import ScanPlan, plan_site_cohort
from fedbone.data.phantom.profiles import SITE_PROFILES


def patients(plans: list[ScanPlan]) -> dict[str, list[ScanPlan]]:
    grouped: dict[str, list[ScanPlan]] = defaultdict(list)
    for plan in plans:
        grouped[plan.patient_id].append(plan)
    return grouped


@pytest.mark.parametrize("site", ["A", "B", "C", "D", "E"])
def test_prevalences_match_the_profile(site: str) -> None:
    profile = SITE_PROFILES[site]

    plans = plan_site_cohort(site, scale=0.5, seed=2)

    n = len(plans)
    assert n == round(profile.n_scans * 0.5)
    assert sum(p.label_bm for p in plans) / n == pytest.approx(
        profile.prevalence_bm, abs=0.01
    )
    assert sum(p.label_ca or 0 for p in plans) / n == pytest.approx(
        profile.prevalence_ca or 0.0, abs=0.01
    )
    assert all(p.label_ca == int(p.perugini_grade >= 2) for p in plans)


def test_splits_are_per_patient_with_repeat_scans_and_roughly_70_10_20() -> None:
    plans = plan_site_cohort("A", scale=0.1, seed=0)

    grouped = patients(plans)
    shares = {
        split: sum(p.split == split for p in plans) / len(plans)
        for split in ("train", "val", "test")
    }

    assert all(len({p.split for p in scans}) == 1 for scans in grouped.values())
    repeats = [scans for scans in grouped.values() if len(scans) > 1]
    assert 0.02 < len(repeats) / len(grouped) < 0.1
    assert all(scans[1].study_date > scans[0].study_date for scans in repeats)
    assert all(len({p.perugini_grade for p in scans}) == 1 for scans in repeats)
    assert shares["train"] == pytest.approx(0.7, abs=0.03)
    assert shares["val"] == pytest.approx(0.1, abs=0.03)
    assert shares["test"] == pytest.approx(0.2, abs=0.03)
    assert {p.split for p in plans if p.label_bm} == {"train", "val", "test"}


def test_validation_only_sites_are_test_only_unless_overridden() -> None:
    assert {p.split for p in plan_site_cohort("C", min_scans=30)} == {"test"}
    assert {p.split for p in plan_site_cohort("C", min_scans=30, test_only=False)} == {
        "train",
        "val",
        "test",
    }


def test_site_f_records_neither_demographics_nor_cardiac_grade() -> None:
    plans = plan_site_cohort("F", scale=0.05)

    assert not any(p.demographics_known or p.ca_known for p in plans)
    assert all(p.label_ca is None for p in plans)


def test_scale_floor_seed_and_outcome_defaults() -> None:
    small = plan_site_cohort("B", scale=0.0, min_scans=12, seed=7)

    assert len(small) == 12
    assert small == plan_site_cohort("B", scale=0.0, min_scans=12, seed=7)
    assert small != plan_site_cohort("B", scale=0.0, min_scans=12, seed=8)
    assert all(p.outcomes is None for p in small)
    assert all(p.outcomes is not None for p in plan_site_cohort("D", min_scans=20))
    with_outcomes = plan_site_cohort("B", min_scans=20, outcomes=True)
    assert all(days >= 1 for p in with_outcomes for _, days, _ in p.outcomes or ())


def test_previews_prefer_a_metastasis_and_an_amyloidosis_case() -> None:
    plans = plan_site_cohort("C", min_scans=40, previews=3)

    marked = [p for p in plans if p.preview]

    assert len(marked) == 3
    assert any(p.label_bm for p in marked)
    assert any(p.perugini_grade >= 2 for p in marked)


def test_unknown_site_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="A, B, C, D, E, F"):
        plan_site_cohort("Z")
