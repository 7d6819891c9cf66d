"""The terminal summary's synthetic-images block."""

from __future__ import annotations

from fedbone.reporting.study_report import (
    StudyReport,
    format_summary,
    synthesis_summary_lines,
)


def _synthesis() -> dict:
    return {
        "audits": {
            "A": {
                "n-released": 250,
                "n-released-class-0": 150,
                "n-released-class-2": 100,
                "n-shortfall-class-0": 0,
                "n-shortfall-class-2": 50,
                "n-unrealistic": 12,
                "curation-val-auc": 0.81,
            }
        }
    }


def test_each_generator_site_gets_released_shortfall_and_flags() -> None:
    # Execute
    lines = synthesis_summary_lines(_synthesis())

    # Assert
    assert lines == [
        "A: released 250 (class 0: 150, class 2: 100); short class 2: 50; "
        "flagged unrealistic 12; curation classifier val AUC 0.810"
    ]


def test_the_block_is_printed_only_when_a_site_released_images() -> None:
    # Prepare
    with_images = StudyReport(title="t", config={}, synthesis=_synthesis())
    without = StudyReport(title="t", config={})

    # Execute
    printed, empty = format_summary(with_images), format_summary(without)

    # Assert
    assert "Synthetic images\nA: released 250" in printed
    assert "Synthetic images" not in empty
