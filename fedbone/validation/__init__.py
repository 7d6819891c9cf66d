"""Validation statistics: site metrics with CIs, DeLong, pooled ROC, histograms."""
