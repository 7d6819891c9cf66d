"""Finding 6: allowed-key templates let per-patient data out as keys and strings.

The guard used to check only that each key matched a template: 300 scores
could leave as 300 ``sum-{name}`` keys, patient ids as ``outcome-status``
strings, histograms that did not add up to the site's counts, and a Cox
reply's sizes were believed. The real guard now checks content: a per-record
maximum of keys and key lengths, status values that are codes, Cox keys that
name the model's covariates and sizes tied to the requested model, and score
histograms that add up to the reply's own class counts.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedbone.federation.egress.guard import EgressGuard, EgressRefused
from fedbone.federation.egress.reply_rules import RequestSnapshot

SCORES = np.random.default_rng(0).random(300)


def _request(kind: str, models: tuple[str, ...] = (), **extra: str) -> RequestSnapshot:
    return RequestSnapshot(kind, 1, "run", "phase", {}, frozenset(models), **extra)


def _refusal(request: RequestSnapshot, reply: RecordDict) -> list[str]:
    with pytest.raises(EgressRefused) as refused:
        EgressGuard(small_cell_threshold=5).screen(request, reply)
    return refused.value.codes


def test_three_hundred_scores_as_keys_are_refused() -> None:
    # Prepare: each patient's score as its own sum-<name> key
    record = {"n-pos": 150, "n-neg": 150}
    record |= {f"sum-p{i}": float(score) for i, score in enumerate(SCORES)}
    reply = RecordDict({"components-a-vs-b": MetricRecord(record)})

    # Execute
    codes = _refusal(_request("query.paired_components", ("a", "b")), reply)

    # Assert
    assert codes == ["too-many-keys"]


def test_cox_coefficients_named_after_patients_are_refused() -> None:
    # Prepare: a handful of coef-<patient> keys (under the key limit)
    record = {f"coef-p{i}": float(SCORES[i]) for i in range(20)}
    reply = RecordDict({"site-cox-death-crude": MetricRecord(record)})

    # Execute
    codes = _refusal(_request("query.outcomes"), reply)

    # Assert: only the Cox models' covariates may be named
    assert set(codes) == {"unexpected-key"}


@pytest.mark.parametrize("value", ["P" * 128, "patient-0042", "Mueller, Anna"])
def test_patient_ids_as_status_strings_are_refused(value: str) -> None:
    reply = RecordDict({"outcome-status": ConfigRecord({"death-counts": value})})

    assert _refusal(_request("query.outcomes"), reply) == ["not-a-status-code"]


def test_histograms_that_do_not_add_up_to_the_counts_are_refused() -> None:
    # Prepare: 10 positives declared, 11 in the bins (one patient smuggled in)
    reply = RecordDict(
        {
            "metrics-m": MetricRecord({"n": 30, "n-pos": 10, "n-neg": 20}),
            "histograms-m": MetricRecord(
                {"positives": [1] * 11 + [0] * 989, "negatives": [1] * 20 + [0] * 980}
            ),
        }
    )

    # Execute / Assert
    codes = _refusal(_request("query.validate", ("m",)), reply)
    assert codes == ["histogram-count-mismatch"]


def test_a_cox_reply_larger_than_the_requested_model_is_refused() -> None:
    # Prepare: the crude model has one covariate; eight values come back
    reply = RecordDict(
        {
            "cox-derivatives": MetricRecord(
                {
                    "log-likelihood": -10.0,
                    "gradient": [0.1] * 8,
                    "hessian": [-1.0] * 64,
                    "num-patients": 40,
                    "num-events": 41,
                }
            )
        }
    )

    # Execute
    request = _request("query.outcome_cox", cox_model="crude")
    codes = _refusal(request, reply)

    # Assert
    assert codes == ["bad-gradient", "bad-count"]
