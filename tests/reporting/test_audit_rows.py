"""The audit table shows the synthesis shortfall and the realism figures."""

from __future__ import annotations

from fedbone.reporting.synthetic_report import audit_rows


def _synthesis(**audit: float | int) -> dict[str, object]:
    return {"audits": {"A": {"n-generated": 40, "n-released": 30, **audit}}}


def test_a_site_short_of_a_class_shows_which_and_by_how_much() -> None:
    # Prepare
    synthesis = _synthesis(
        **{
            "n-shortfall-class-0": 0,
            "n-shortfall-class-2": 7,
            "n-unrealistic": 3,
            "nearest-rank-q05": 0.1,
            "nearest-rank-q50": 0.5,
            "nearest-rank-q95": 0.97,
            "curation-val-auc": 0.83,
        }
    )

    # Execute
    (row,) = audit_rows(synthesis)

    # Assert
    assert row["short of quota (class: n)"] == "2: 7"
    assert row["unrealistic"] == "3"
    assert row["nearest rank q05 / q50 / q95"] == "0.1 / 0.5 / 0.97"
    assert row["curation val AUC"] == "0.83"


def test_a_filled_quota_reads_none_and_an_older_run_stays_blank() -> None:
    # Prepare
    filled = _synthesis(**{"n-shortfall-class-1": 0})
    older = _synthesis()

    # Execute
    (filled_row,), (older_row,) = audit_rows(filled), audit_rows(older)

    # Assert
    assert filled_row["short of quota (class: n)"] == "none"
    assert older_row["short of quota (class: n)"] == ""
    assert older_row["unrealistic"] == ""
