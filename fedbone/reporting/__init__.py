"""Study reports: tables, figures and a self-contained HTML page."""

from fedbone.reporting.outcome_plots import plot_kaplan_meier
from fedbone.reporting.outcome_report import write_outcome_sections
from fedbone.reporting.study_report import (
    StudyReport,
    format_summary,
    study_ratio_sweep,
    write_study_report,
)
from fedbone.reporting.synthetic_report import compact_synthesis

__all__ = [
    "StudyReport",
    "compact_synthesis",
    "format_summary",
    "plot_kaplan_meier",
    "study_ratio_sweep",
    "write_outcome_sections",
    "write_study_report",
]
