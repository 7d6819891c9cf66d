"""Explaining the classifier: Grad-CAM maps and their sanity checks."""
