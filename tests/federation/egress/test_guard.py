from __future__ import annotations

import math

import numpy as np
import pytest
from federation_messages import config, model_state, request, train_request
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedbone.federation.egress.guard import EgressGuard, EgressRefused
from fedbone.federation.records import arrays_to_record, canonical_bytes

BINS = 1000


def _train_metrics(**extra: float | int | list[float]) -> MetricRecord:
    values = {
        "num-examples": 40,
        "train-loss": 0.61,
        "val-loss": 0.7,
        "val-auc": float("nan"),
        "epochs": 1.0,
        "seconds": 3.5,
        **extra,
    }
    return MetricRecord(values)


def _train_reply(state: dict[str, np.ndarray] | None = None) -> RecordDict:
    arrays = arrays_to_record(model_state(seed=1) if state is None else state)
    return RecordDict({"arrays": arrays, "metrics": _train_metrics()})


def _refusal(request_message: Message, content: RecordDict) -> EgressRefused:
    with pytest.raises(EgressRefused) as caught:
        EgressGuard().screen(request_message, content)
    return caught.value


def _validate_request(*models: str, kind: str = "query.validate") -> Message:
    content = RecordDict(
        {f"model-{m}": arrays_to_record(model_state()) for m in models}
        | {"config": config("validate", split="test", bins=BINS)}
    )
    return request(kind, content)


def _validation_metrics() -> MetricRecord:
    keys = ["auc", "sensitivity", "specificity"]
    values: dict[str, float | int] = {"n": 30, "n-pos": 9, "n-neg": 21}
    for key in keys:
        values |= {key: 0.8, f"{key}-low": 0.7, f"{key}-high": float("nan")}
    return MetricRecord(values)


def _histograms(bins: int = BINS, n_pos: int = 9, n_neg: int = 21) -> MetricRecord:
    """Histograms that add up to ``n_pos`` positives and ``n_neg`` negatives."""
    return MetricRecord(
        {
            "positives": [1] * n_pos + [0] * (bins - n_pos),
            "negatives": [1] * n_neg + [0] * (bins - n_neg),
        }
    )


def _census_request() -> Message:
    return request("query.census", RecordDict({"config": config("census")}))


def _census_reply(**counts: int) -> RecordDict:
    site = ConfigRecord({"site-id": "vienna", "role": "train", "cache-hash": "ab12"})
    return RecordDict({"site": site, "census": MetricRecord(counts)})


def test_valid_train_reply_passes_unchanged() -> None:
    reply = _train_reply()

    screened, verdict = EgressGuard().screen(train_request(), reply)

    assert verdict.passed
    assert verdict.suppressed == ()
    assert canonical_bytes(screened) == canonical_bytes(reply)


def test_image_shaped_array_added_to_the_model_is_refused() -> None:
    state = model_state(seed=1) | {"image": np.ones((256, 64), dtype=np.float32)}

    error = _refusal(train_request(), _train_reply(state))

    assert error.codes == ["extra-array"]
    assert "arrays/image" in str(error)
    assert "(256, 64)" in str(error)
    assert "did not send" in str(error)


def test_image_in_its_own_array_record_is_refused() -> None:
    reply = _train_reply()
    reply["preview"] = ArrayRecord({"scan": Array(np.ones((256, 64), np.float32))})

    error = _refusal(train_request(), reply)

    assert error.codes == ["unexpected-arrays"]
    assert "preview" in str(error)


def test_array_with_a_different_shape_is_refused() -> None:
    state = model_state(seed=1)
    state["conv.bias"] = np.zeros(8, dtype=np.float32)

    error = _refusal(train_request(), _train_reply(state))

    assert error.codes == ["array-shape-mismatch"]
    assert "arrays/conv.bias" in str(error)
    assert "(8,)" in str(error) and "(4,)" in str(error)


def test_array_with_a_different_dtype_is_refused() -> None:
    state = model_state(seed=1)
    state["conv.weight"] = state["conv.weight"].astype(np.float64)

    error = _refusal(train_request(), _train_reply(state))

    assert error.codes == ["array-dtype-mismatch"]
    assert "arrays/conv.weight" in str(error)


def test_missing_model_key_is_refused() -> None:
    state = model_state(seed=1)
    del state["bn.num_batches_tracked"]

    error = _refusal(train_request(), _train_reply(state))

    assert error.codes == ["missing-array"]
    assert "arrays/bn.num_batches_tracked" in str(error)


def test_array_whose_bytes_hide_more_than_it_declares_is_refused() -> None:
    reply = _train_reply()
    bias = reply["arrays"]["conv.bias"]
    image = Array(np.ones((256, 64), dtype=np.float32))
    reply["arrays"]["conv.bias"] = Array(
        dtype=bias.dtype, shape=bias.shape, stype=bias.stype, data=image.data
    )

    error = _refusal(train_request(), reply)

    assert error.codes == ["array-payload-mismatch"]
    assert "(256, 64)" in str(error)


def test_per_patient_float_list_is_refused() -> None:
    reply = _train_reply()
    reply["metrics"] = _train_metrics(**{"val-auc": [0.1, 0.9, 0.4]})

    error = _refusal(train_request(), reply)

    assert error.codes == ["per-patient-values"]
    assert "metrics/val-auc" in str(error)
    assert "0.9" not in str(error)


def test_unexpected_metric_key_is_refused() -> None:
    reply = _train_reply()
    reply["metrics"] = _train_metrics(**{"patient-age": 71})

    error = _refusal(train_request(), reply)

    assert error.codes == ["unexpected-key"]
    assert "metrics/patient-age" in str(error)
    assert "num-examples" in str(error)


def test_every_problem_is_listed_at_once() -> None:
    state = model_state(seed=1) | {"image": np.ones((256, 64), dtype=np.float32)}
    reply = _train_reply(state)
    reply["metrics"] = _train_metrics(**{"scores": [0.2, 0.3]})

    error = _refusal(train_request(), reply)

    assert sorted(error.codes) == [
        "extra-array",
        "per-patient-values",
        "unexpected-key",
    ]


def test_valid_validation_reply_with_nan_and_pairs_passes() -> None:
    reply = RecordDict(
        {
            "metrics-fed": _validation_metrics(),
            "histograms-fed": _histograms(),
            "metrics-local": _validation_metrics(),
            "paired-fed-vs-local": MetricRecord(
                {"difference": 0.1, "se": 0.04, "z": 2.5, "p-value": float("nan")}
            ),
        }
    )

    screened, verdict = EgressGuard().screen(_validate_request("fed", "local"), reply)

    assert verdict.passed
    assert canonical_bytes(screened) == canonical_bytes(reply)


def test_per_site_metrics_of_a_site_with_a_small_class_are_withheld() -> None:
    small = MetricRecord(dict(_validation_metrics()) | {"n-pos": 1, "n": 22})
    reply = RecordDict(
        {
            "metrics-fed": small,
            "histograms-fed": _histograms(n_pos=1),
            "metrics-local": small,
            "paired-fed-vs-local": MetricRecord(
                {"difference": 0.1, "se": 0.04, "z": 2.5, "p-value": 0.01}
            ),
        }
    )

    screened, verdict = EgressGuard().screen(_validate_request("fed", "local"), reply)

    metrics = screened.metric_records["metrics-fed"]
    paired = screened.metric_records["paired-fed-vs-local"]
    assert verdict.passed
    assert set(verdict.suppressed) == {
        "metrics-fed",
        "histograms-fed",
        "metrics-local",
        "paired-fed-vs-local",
    }
    assert (metrics["n"], metrics["n-pos"], metrics["n-neg"]) == (-1, -1, -1)
    assert all(
        math.isnan(float(v)) for k, v in metrics.items() if not k.startswith("n")
    )
    assert all(math.isnan(float(v)) for v in paired.values())
    # the histograms would show the one positive's score: they leave empty
    histograms = screened.metric_records["histograms-fed"]
    assert list(histograms["positives"]) == list(histograms["negatives"]) == [0] * BINS


def test_arrays_in_a_validation_reply_are_refused() -> None:
    reply = RecordDict(
        {
            "metrics-fed": _validation_metrics(),
            "model-fed": arrays_to_record(model_state()),
        }
    )

    error = _refusal(_validate_request("fed"), reply)

    assert error.codes == ["unexpected-arrays"]
    assert "model-fed" in str(error)


def test_short_histogram_is_refused() -> None:
    reply = RecordDict({"histograms-fed": _histograms(bins=10)})

    error = _refusal(_validate_request("fed"), reply)

    assert error.codes == [
        "short-histogram",
        "short-histogram",
        "histogram-without-counts",
    ]
    assert "histograms-fed/positives" in str(error)
    assert "10 bins" in str(error) and "1000" in str(error)


def test_integer_list_outside_histograms_is_refused() -> None:
    reply = RecordDict({"metrics-fed": MetricRecord({"n": [1] * BINS})})

    error = _refusal(_validate_request("fed"), reply)

    assert error.codes == ["list-not-allowed"]


def test_records_named_after_a_model_the_server_did_not_send_are_refused() -> None:
    reply = RecordDict({"metrics-patient-0042": _validation_metrics()})

    error = _refusal(_validate_request("fed"), reply)

    assert error.codes == ["unexpected-record"]
    assert "metrics-patient-0042" in str(error)
    assert "the request sent (fed)" in str(error)


def test_unknown_message_kind_is_refused() -> None:
    message = request("query.export_scans", RecordDict({"config": config("report")}))

    error = _refusal(message, RecordDict())

    assert error.codes == ["unknown-kind"]
    assert "query.export_scans" in str(error)


def test_census_small_cells_are_suppressed_and_zero_kept() -> None:
    reply = _census_reply(
        **{"n-train": 120, "n-train-bm-pos": 3, "n-train-bm-neg": 0, "n-test-ca-pos": 4}
    )

    screened, verdict = EgressGuard(small_cell_threshold=5).screen(
        _census_request(), reply
    )

    census = screened["census"]
    assert census["n-train"] == 120
    assert census["n-train-bm-pos"] == -1
    assert census["n-test-ca-pos"] == -1
    assert census["n-train-bm-neg"] == 0
    assert verdict.suppressed == ("n-train-bm-pos", "n-test-ca-pos")
    assert screened["suppressed"]["keys"] == ["n-train-bm-pos", "n-test-ca-pos"]
    assert reply["census"]["n-train-bm-pos"] == 3


def test_census_threshold_comes_from_the_guard() -> None:
    reply = _census_reply(**{"n-val": 4, "n-test": 5})

    screened, verdict = EgressGuard(small_cell_threshold=6).screen(
        _census_request(), reply
    )

    assert verdict.suppressed == ("n-val", "n-test")
    assert screened["census"]["n-test"] == -1


def test_census_with_arrays_or_float_counts_is_refused() -> None:
    reply = _census_reply(**{"n-train": 120})
    reply["census"]["n-val"] = 2.0
    reply["thumbnails"] = ArrayRecord({"0": Array(np.ones((256, 64), np.float32))})

    error = _refusal(_census_request(), reply)

    assert sorted(error.codes) == ["not-a-count", "unexpected-arrays"]


def test_a_reply_may_not_write_the_guards_suppressed_record() -> None:
    reply = _census_reply(**{"n-train": 120})
    reply["suppressed"] = ConfigRecord({"keys": ["anything"]})

    error = _refusal(_census_request(), reply)

    assert error.codes == ["reserved-record"]


def test_long_strings_in_config_records_are_refused() -> None:
    reply = _census_reply(**{"n-train": 120})
    reply["site"]["cache-hash"] = "x" * 500

    error = _refusal(_census_request(), reply)

    assert error.codes == ["not-a-short-string"]
    assert "site/cache-hash" in str(error)


def test_paired_components_allow_only_scalar_sums() -> None:
    message = _validate_request("fed", "local", kind="query.paired_components")
    good = RecordDict(
        {"components-fed-vs-local": MetricRecord({"n-pos": 9, "sum-v10-v01": 1.5})}
    )
    bad = RecordDict(
        {
            "components-fed-vs-local": MetricRecord({"placement": [0.1, 0.2]}),
            "components-fed-vs-scans": MetricRecord({"n-pos": 9}),
        }
    )

    _, verdict = EgressGuard().screen(message, good)
    error = _refusal(message, bad)

    assert verdict.passed
    assert sorted(error.codes) == [
        "per-patient-values",
        "unexpected-key",
        "unexpected-record",
    ]
