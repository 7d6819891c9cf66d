"""Outcome association: cohorts, survival counts, Kaplan-Meier, log-rank, Cox."""
