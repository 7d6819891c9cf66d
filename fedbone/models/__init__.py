"""Classifier factory (MONAI networks and a small CPU network) and weights."""

from __future__ import annotations

from fedbone.models.classifier import (
    Architecture,
    ClassifierSpec,
    Norm,
    SingleLogitClassifier,
    build_classifier,
)
from fedbone.models.errors import ModelError
from fedbone.models.weights import PretrainedReport, load_pretrained

__all__ = [
    "Architecture",
    "ClassifierSpec",
    "ModelError",
    "Norm",
    "PretrainedReport",
    "SingleLogitClassifier",
    "build_classifier",
    "load_pretrained",
]
