"""Study reports: tables, figures and a self-contained HTML page."""

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
    "study_ratio_sweep",
    "write_study_report",
]
