"""Study reports: tables, figures and a self-contained HTML page."""

from fedbone.reporting.study_report import (
    StudyReport,
    format_summary,
    write_study_report,
)

__all__ = ["StudyReport", "format_summary", "write_study_report"]
