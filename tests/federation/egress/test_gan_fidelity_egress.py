"""The per-class fidelity figures of a site's GAN pass the egress guard; no other."""

from __future__ import annotations

import math

import numpy as np
import pytest
from federation_messages import config, request
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedbone.federation.egress.guard import EgressGuard, EgressRefused
from fedbone.generative.fidelity.reference import (
    ClassFidelity,
    FidelityFigures,
    FidelityReference,
)


def _gan_request() -> Message:
    return request("query.gan_train", RecordDict({"config": config("gan")}))


def _reference() -> FidelityReference:
    figures = FidelityFigures(1.5, 0.02, 0.7, 0.6, n_held_out=9, n_other=9)
    missing = FidelityFigures(*(math.nan,) * 4, n_held_out=2, n_other=2)
    return FidelityReference(
        "bm",
        (
            ClassFidelity("neg", synthetic=figures, real=figures),
            ClassFidelity("pos", synthetic=missing, real=missing),
            ClassFidelity("all", synthetic=figures, real=figures),
        ),
    )


def _reply(metrics: dict[str, float]) -> RecordDict:
    return RecordDict(
        {
            "metrics": MetricRecord({"best-fd": 1.2, "n-real": 600, **metrics}),
            "provenance": ConfigRecord(
                {"site-id": "A", "checkpoint-sha256": "cd" * 32}
            ),
        }
    )


def test_per_class_fidelity_figures_leave_the_site_nan_included() -> None:
    # Prepare
    metrics = _reference().to_metrics()

    # Execute
    _, verdict = EgressGuard().screen(_gan_request(), _reply(metrics))

    # Assert
    assert verdict.passed
    assert {"fd-synthetic-pos", "kid-real-neg", "precision-real-all"} <= set(metrics)
    assert np.isnan(metrics["fd-synthetic-pos"])


def test_a_fidelity_key_outside_the_policy_is_refused() -> None:
    # Prepare: a per-class figure of a class the policy does not name
    metrics = {**_reference().to_metrics(), "fd-synthetic-class-3": 0.4}

    # Execute
    with pytest.raises(EgressRefused) as caught:
        EgressGuard().screen(_gan_request(), _reply(metrics))

    # Assert
    assert any("fd-synthetic-class-3" in str(p) for p in caught.value.problems)
