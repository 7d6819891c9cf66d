from __future__ import annotations

import pytest
from federation_messages import config, model_state, request
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedbone.federation.egress.guard import EgressGuard, EgressRefused
from fedbone.federation.records import arrays_to_record, canonical_bytes

NOISY_BINS = 20


def _validate_request(*models: str) -> Message:
    settings = config(
        "validate", split="test", **{"dp-stat-epsilon": 1.0, "dp-stat-bins": NOISY_BINS}
    )
    records: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
        f"model-{m}": arrays_to_record(model_state()) for m in models
    }
    records["config"] = settings
    return request("query.validate", RecordDict(records))


def _exact_request(*models: str) -> Message:
    records: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
        f"model-{m}": arrays_to_record(model_state()) for m in models
    }
    records["config"] = config("validate", split="test")
    return request("query.validate", RecordDict(records))


def _noisy(
    positives: list[int] | list[float] | None = None,
    negatives: list[int] | None = None,
) -> MetricRecord:
    return MetricRecord(
        {
            "positives": [0, 1] * (NOISY_BINS // 2) if positives is None else positives,
            "negatives": [3] * NOISY_BINS if negatives is None else negatives,
        }
    )


def _privacy(**extra: float) -> MetricRecord:
    return MetricRecord(
        {
            "statistics-epsilon": 1.0,
            "epsilon-spent": 3.5,
            "delta-spent": 1e-5,
            **extra,
        }
    )


def _refusal(request_message: Message, content: RecordDict) -> EgressRefused:
    with pytest.raises(EgressRefused) as caught:
        EgressGuard().screen(request_message, content)
    return caught.value


def test_noisy_histograms_and_the_privacy_record_pass_unchanged() -> None:
    # Prepare
    reply = RecordDict(
        {
            "noisy-histograms-fed": _noisy(),
            "noisy-histograms-local": _noisy(),
            "privacy": _privacy(),
        }
    )

    # Execute
    screened, verdict = EgressGuard().screen(_validate_request("fed", "local"), reply)

    # Assert
    assert verdict.passed
    assert verdict.suppressed == ()
    assert canonical_bytes(screened) == canonical_bytes(reply)


def test_twenty_bins_are_too_coarse_for_exact_histograms() -> None:
    # Prepare: the same counts, not declared noisy, in an exact validation
    reply = RecordDict({"histograms-fed": _noisy()})

    # Execute
    error = _refusal(_exact_request("fed"), reply)

    # Assert
    assert error.codes[:2] == ["short-histogram", "short-histogram"]


def test_exact_records_cannot_ride_along_with_noisy_ones() -> None:
    # Prepare: a DP reply that also carries exact per-site metrics
    reply = RecordDict(
        {
            "noisy-histograms-fed": _noisy(),
            "metrics-fed": MetricRecord({"n": 40, "n-pos": 10, "n-neg": 30}),
        }
    )

    # Execute
    error = _refusal(_validate_request("fed"), reply)

    # Assert
    assert error.codes == ["exact-statistic-under-dp", "missing-privacy-record"]


def test_noisy_records_are_refused_when_the_study_did_not_ask_for_them() -> None:
    # Prepare
    reply = RecordDict({"noisy-histograms-fed": _noisy(), "privacy": _privacy()})

    # Execute
    error = _refusal(_exact_request("fed"), reply)

    # Assert
    assert error.codes == ["noisy-without-request", "noisy-without-request"]


def test_noisy_histograms_with_five_bins_are_refused() -> None:
    # Prepare
    reply = RecordDict(
        {"noisy-histograms-fed": _noisy([1] * 5, [2] * 5), "privacy": _privacy()}
    )

    # Execute
    error = _refusal(_validate_request("fed"), reply)

    # Assert
    assert error.codes == ["short-histogram", "short-histogram"]
    assert "noisy-histograms-fed/positives" in str(error)
    assert "5 bins" in str(error)


def test_negative_noisy_counts_are_refused() -> None:
    # Prepare: raw Laplace noise, not made consistent
    reply = RecordDict(
        {
            "noisy-histograms-fed": _noisy(negatives=[-1] + [2] * 19),
            "privacy": _privacy(),
        }
    )

    # Execute
    error = _refusal(_validate_request("fed"), reply)

    # Assert
    assert error.codes == ["not-a-count"]
    assert "noisy-histograms-fed/negatives" in str(error)


def test_float_noisy_histograms_are_refused() -> None:
    # Prepare
    reply = RecordDict(
        {
            "noisy-histograms-fed": _noisy(positives=[0.5] * NOISY_BINS),
            "privacy": _privacy(),
        }
    )

    # Execute
    error = _refusal(_validate_request("fed"), reply)

    # Assert
    assert error.codes == ["per-patient-values"]


def test_privacy_record_with_an_unknown_key_is_refused() -> None:
    # Prepare
    reply = RecordDict(
        {"noisy-histograms-fed": _noisy(), "privacy": _privacy(**{"n-pos": 9.0})}
    )

    # Execute
    error = _refusal(_validate_request("fed"), reply)

    # Assert
    assert error.codes == ["unexpected-key"]
    assert "privacy/n-pos" in str(error)


def test_privacy_record_holds_scalars_only() -> None:
    # Prepare
    privacy = MetricRecord({"epsilon-spent": [1] * NOISY_BINS})
    reply = RecordDict({"noisy-histograms-fed": _noisy(), "privacy": privacy})

    # Execute
    error = _refusal(_validate_request("fed"), reply)

    # Assert
    assert error.codes == ["list-not-allowed"]


def test_noisy_histograms_of_a_model_the_request_did_not_send_are_refused() -> None:
    # Prepare
    reply = RecordDict(
        {
            "noisy-histograms-fed": _noisy(),
            "noisy-histograms-other": _noisy(),
            "privacy": _privacy(),
        }
    )

    # Execute
    error = _refusal(_validate_request("fed"), reply)

    # Assert
    assert error.codes == ["unexpected-record"]
    assert "noisy-histograms-other" in str(error)
