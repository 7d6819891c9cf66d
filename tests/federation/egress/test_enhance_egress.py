"""Phase ``enhance`` through the real egress guard: only aggregates leave a site.

An evaluation reply may hold, per image set (``<method>-<level>``), class
counts and quality sums (``metrics-*``), hottest-focus sums (``agreement-*``)
and score histograms that add up to the class counts (``histograms-*``);
a component reply, DeLong component sums. Per-scan lists, unknown keys and
unknown records are refused, a small class withholds everything, and a site
that insists on differential privacy sends neither. A training round in phase
``enhance`` returns exactly the arrays it received.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fast_scan_sites import tiny_enhance_settings
from federation_messages import config, model_state, request
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedbone.enhance.specs import initial_enhancer_arrays
from fedbone.federation.egress.guard import EgressGuard, EgressRefused
from fedbone.federation.records import arrays_to_record, canonical_bytes
from fedbone.federation.study_messages import enhance_settings_json

BINS = 1000
SETTINGS = tiny_enhance_settings()
QUALITY = ("psnr", "ssim", "ms-ssim", "perceptual")


def _enhance_config(**extra: object) -> ConfigRecord:
    return config(
        "enhance", **{"enhance-settings": enhance_settings_json(SETTINGS), **extra}
    )


def _evaluate_request() -> Message:
    content = RecordDict(
        {
            "config": _enhance_config(split="test", bins=BINS, seed=0),
            "model-federated": arrays_to_record(model_state()),
            "enhancer-gaussian": arrays_to_record(
                initial_enhancer_arrays("gaussian", SETTINGS, 0)
            ),
        }
    )
    return request("query.enhance_evaluate", content)


def _components_request() -> Message:
    content = RecordDict(
        {"config": _enhance_config(pairs=["dncnn-2x|standard-2x"])}
        | {f"pooled-{name}": _histograms() for name in ("dncnn-2x", "standard-2x")}
    )
    return request("query.enhance_components", content)


def _counts(n_pos: int = 9, n_neg: int = 21) -> dict[str, int]:
    return {"n": n_pos + n_neg, "n-pos": n_pos, "n-neg": n_neg}


def _quality(n_pos: int = 9, n_neg: int = 21) -> MetricRecord:
    sums = {f"{part}-{m}": 1.5 for part in ("sum", "sumsq") for m in QUALITY}
    return MetricRecord({**_counts(n_pos, n_neg), **sums, "fd": 0.02})


def _agreement(n_pos: int = 9) -> MetricRecord:
    sums = {f"sum-{k}": 10.0 * n_pos for k in ("x", "y", "xx", "yy", "xy")}
    return MetricRecord({"n": n_pos, "n-pos": n_pos, **sums})


def _histograms(n_pos: int = 9, n_neg: int = 21, bins: int = BINS) -> MetricRecord:
    return MetricRecord(
        {
            "positives": [1] * n_pos + [0] * (bins - n_pos),
            "negatives": [1] * n_neg + [0] * (bins - n_neg),
        }
    )


def _evaluate_reply(n_pos: int = 9, n_neg: int = 21) -> RecordDict:
    """What a site sends for level 2x: standard, fast and one enhanced set."""
    reply = RecordDict(
        {
            "metrics-standard-2x": MetricRecord(_counts(n_pos, n_neg)),
            "histograms-standard-2x": _histograms(n_pos, n_neg),
        }
    )
    for image_set in ("fast-2x", "dncnn-2x"):
        reply[f"metrics-{image_set}"] = _quality(n_pos, n_neg)
        reply[f"agreement-{image_set}"] = _agreement(n_pos)
        reply[f"histograms-{image_set}"] = _histograms(n_pos, n_neg)
    return reply


def _components() -> MetricRecord:
    sums = {
        f"sum-{tag}-{field}": 0.25
        for tag in ("pos", "neg")
        for field in ("a", "b", "aa", "bb", "ab")
    }
    return MetricRecord({"n-pos": 9, "n-neg": 21, **sums})


def _components_reply() -> RecordDict:
    return RecordDict({"components-dncnn-2x-vs-standard-2x": _components()})


def _refusal(
    request_message: Message, content: RecordDict, guard: EgressGuard | None = None
) -> EgressRefused:
    with pytest.raises(EgressRefused) as caught:
        (guard or EgressGuard()).screen(request_message, content)
    return caught.value


# -- query.enhance_evaluate ------------------------------------------------


def test_an_evaluation_reply_of_sums_and_histograms_passes_unchanged() -> None:
    reply = _evaluate_reply()

    screened, verdict = EgressGuard().screen(_evaluate_request(), reply)

    assert verdict.passed and verdict.suppressed == ()
    assert canonical_bytes(screened) == canonical_bytes(reply)


def test_image_sets_may_cover_different_patients() -> None:
    # Prepare: real fast scans exist for a subset of the level-2x patients
    reply = _evaluate_reply()
    reply["metrics-standard-2x-real"] = MetricRecord(_counts(6, 12))
    reply["histograms-standard-2x-real"] = _histograms(6, 12)

    # Execute
    _, verdict = EgressGuard().screen(_evaluate_request(), reply)

    # Assert
    assert verdict.passed


def test_per_scan_psnrs_are_refused() -> None:
    reply = _evaluate_reply()
    reply["metrics-dncnn-2x"]["sum-psnr"] = [31.2, 28.4, 30.9, 29.7]

    error = _refusal(_evaluate_request(), reply)

    assert error.codes == ["per-patient-values"]
    assert "metrics-dncnn-2x/sum-psnr" in str(error)


def test_a_per_scan_list_of_counts_outside_a_histogram_is_refused() -> None:
    reply = _evaluate_reply()
    reply["agreement-dncnn-2x"]["sum-x"] = [1200, 980, 1530]

    error = _refusal(_evaluate_request(), reply)

    assert error.codes == ["list-not-allowed"]
    assert "agreement-dncnn-2x/sum-x" in str(error)


@pytest.mark.parametrize(
    ("record", "key"),
    [
        ("metrics-fast-2x", "psnr-B-000006"),
        ("metrics-standard-2x", "auc"),
        ("agreement-dncnn-2x", "n-neg"),
        ("histograms-dncnn-2x", "scores"),
    ],
)
def test_a_key_the_record_may_not_hold_is_refused(record: str, key: str) -> None:
    reply = _evaluate_reply()
    reply[record][key] = 7.5

    error = _refusal(_evaluate_request(), reply)

    assert "unexpected-key" in error.codes
    assert f"{record}/{key}" in str(error)


@pytest.mark.parametrize(
    ("name", "record", "code"),
    [
        ("scores-dncnn-2x", MetricRecord({"n": 30}), "unexpected-record"),
        (
            "examples",
            ArrayRecord({"scan": Array(np.zeros((128, 32)))}),
            "unexpected-arrays",
        ),
        ("scan-ids", ConfigRecord({"first": "B-000006"}), "unexpected-record"),
        ("metrics", MetricRecord(_counts()), "unexpected-record"),
    ],
)
def test_a_record_the_reply_may_not_hold_is_refused(
    name: str, record: ArrayRecord | MetricRecord | ConfigRecord, code: str
) -> None:
    reply = _evaluate_reply()
    reply[name] = record

    error = _refusal(_evaluate_request(), reply)

    assert error.codes == [code]
    assert name in str(error)


@pytest.mark.parametrize(("n_pos", "n_neg"), [(10, 21), (9, 20), (0, 30)])
def test_a_histogram_that_does_not_add_up_to_its_counts_is_refused(
    n_pos: int, n_neg: int
) -> None:
    reply = _evaluate_reply()
    reply["histograms-dncnn-2x"] = _histograms(n_pos, n_neg)

    error = _refusal(_evaluate_request(), reply)

    assert error.codes == ["histogram-count-mismatch"]
    assert "histograms-dncnn-2x" in str(error)


def test_a_histogram_without_its_counts_is_refused() -> None:
    reply = _evaluate_reply()
    del reply["metrics-dncnn-2x"]

    error = _refusal(_evaluate_request(), reply)

    assert error.codes == ["histogram-without-counts"]


@pytest.mark.parametrize(
    ("bins", "code"), [(BINS - 1, "short-histogram"), (2001, "long-histogram")]
)
def test_histograms_keep_within_the_sites_bins(bins: int, code: str) -> None:
    reply = _evaluate_reply()
    reply["histograms-fast-2x"] = _histograms(bins=bins)

    error = _refusal(_evaluate_request(), reply, EgressGuard(max_histogram_bins=2000))

    assert error.codes == [code, code]


def _assert_withheld(screened: RecordDict, reply: RecordDict) -> None:
    for name, record in screened.metric_records.items():
        sent = reply.metric_records[name]
        assert set(record) == set(sent)
        if name.startswith("histograms-"):
            for key in ("positives", "negatives"):
                assert record[key] == [0] * len(sent[key])
            continue
        for key, value in record.items():
            if key in ("n", "n-pos", "n-neg"):
                assert value == -1
            else:
                assert isinstance(value, float) and math.isnan(value)


@pytest.mark.parametrize("small", [1, 2, 3, 4])
@pytest.mark.parametrize("small_class", ["n-pos", "n-neg"])
def test_a_small_class_withholds_every_metric_agreement_and_histogram(
    small: int, small_class: str
) -> None:
    # Prepare: one image set's class is a small cell (threshold 5)
    n_pos, n_neg = (small, 21) if small_class == "n-pos" else (9, small)
    reply = _evaluate_reply(n_pos, n_neg)

    # Execute
    screened, verdict = EgressGuard().screen(_evaluate_request(), reply)

    # Assert: nothing of the few patients leaves, and the guard says so
    _assert_withheld(screened, reply)
    assert set(verdict.suppressed) == set(reply)
    assert screened["suppressed"]["keys"] == list(verdict.suppressed)


def test_a_small_class_given_as_a_float_is_withheld_too() -> None:
    reply = _evaluate_reply(n_pos=2)
    for name, record in reply.metric_records.items():
        if not name.startswith("histograms-"):
            record["n-pos"] = 2.0

    screened, _ = EgressGuard().screen(_evaluate_request(), reply)

    assert sum(screened["histograms-dncnn-2x"]["positives"]) == 0


def test_one_small_image_set_withholds_the_others_too() -> None:
    reply = _evaluate_reply()
    reply["metrics-standard-2x-real"] = MetricRecord(_counts(2, 12))
    reply["histograms-standard-2x-real"] = _histograms(2, 12)

    screened, _ = EgressGuard().screen(_evaluate_request(), reply)

    _assert_withheld(screened, reply)


def test_the_sites_own_class_minimum_withholds_above_the_cell_threshold() -> None:
    guard = EgressGuard(small_cell_threshold=5, min_patients_per_class=10)

    screened, verdict = guard.screen(_evaluate_request(), _evaluate_reply(n_pos=9))

    assert "histograms-dncnn-2x" in verdict.suppressed
    assert sum(screened["histograms-dncnn-2x"]["positives"]) == 0


def test_an_absent_class_is_not_a_small_cell() -> None:
    reply = _evaluate_reply(n_pos=0, n_neg=30)

    _, verdict = EgressGuard().screen(_evaluate_request(), reply)

    assert verdict.suppressed == ()


# -- query.enhance_components ----------------------------------------------


def test_a_components_reply_of_component_sums_passes() -> None:
    reply = _components_reply()

    screened, verdict = EgressGuard().screen(_components_request(), reply)

    assert verdict.passed
    assert canonical_bytes(screened) == canonical_bytes(reply)


@pytest.mark.parametrize(
    ("name", "key", "value", "code"),
    [
        ("components-dncnn-2x-vs-standard-2x", "auc", 0.8, "unexpected-key"),
        (
            "components-dncnn-2x-vs-standard-2x",
            "sum-pos-a",
            [0.1, 0.9],
            "per-patient-values",
        ),
        ("scores-dncnn-2x", "n-pos", 9, "unexpected-record"),
        ("histograms-dncnn-2x", "positives", [1] * BINS, "unexpected-record"),
    ],
)
def test_a_components_reply_holds_only_component_sums(
    name: str, key: str, value: float | list[float], code: str
) -> None:
    reply = _components_reply()
    record = reply.metric_records.get(name, MetricRecord())
    record[key] = value
    reply[name] = record

    error = _refusal(_components_request(), reply)

    assert error.codes == [code]
    assert name in str(error)


# -- a site that lets statistics out only under differential privacy --------


@pytest.mark.parametrize("kind", ["enhance-evaluate", "enhance-components"])
def test_a_dp_statistics_site_sends_neither_enhance_reply(kind: str) -> None:
    guard = EgressGuard(require_private_statistics=True)
    if kind == "enhance-evaluate":
        message, reply = _evaluate_request(), _evaluate_reply()
    else:
        message, reply = _components_request(), _components_reply()

    error = _refusal(message, reply, guard)

    assert error.codes == ["dp-statistics-required"]


# -- train in phase enhance ------------------------------------------------


def _train_request(method: str) -> Message:
    arrays = initial_enhancer_arrays(method, SETTINGS, 0)
    content = RecordDict(
        {
            "arrays": arrays_to_record(arrays),
            "config": _enhance_config(enhancer=method, seed=0),
        }
    )
    return request("train", content)


def _train_reply(arrays: dict[str, np.ndarray], **metrics: float) -> RecordDict:
    values = {"num-examples": 8, "seconds": 0.4, **metrics}
    return RecordDict(
        {"arrays": arrays_to_record(arrays), "metrics": MetricRecord(values)}
    )


@pytest.mark.parametrize("method", ["gaussian", "dncnn"])
def test_a_trained_enhancer_with_the_received_arrays_passes(method: str) -> None:
    trained = {
        key: (value + 0.1).astype(value.dtype)
        for key, value in initial_enhancer_arrays(method, SETTINGS, 1).items()
    }
    reply = _train_reply(trained, **{"train-loss": 0.02, "steps": 2.0})

    screened, verdict = EgressGuard().screen(_train_request(method), reply)

    assert verdict.passed
    assert canonical_bytes(screened) == canonical_bytes(reply)


def _dncnn(**changes: np.ndarray | None) -> dict[str, np.ndarray]:
    arrays = initial_enhancer_arrays("dncnn", SETTINGS, 0)
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return arrays


@pytest.mark.parametrize(
    ("arrays", "code"),
    [
        (
            _dncnn(**{"noise.0.weight": _dncnn()["noise.0.weight"].astype(np.float64)}),
            "dtype",
        ),
        (_dncnn(**{"noise.0.bias": np.zeros(16, np.float32)}), "shape"),
        (_dncnn(**{"noise.0.bias": None}), "missing"),
        (_dncnn(**{"standard": np.ones((128, 32), np.float32)}), "extra"),
    ],
    ids=["weights-as-float64", "wider-layer", "missing-layer", "a-scan-added"],
)
def test_a_trained_enhancer_must_mirror_the_received_arrays(
    arrays: dict[str, np.ndarray], code: str
) -> None:
    error = _refusal(_train_request("dncnn"), _train_reply(arrays))

    expected = {
        "dtype": "array-dtype-mismatch",
        "shape": "array-shape-mismatch",
        "missing": "missing-array",
        "extra": "extra-array",
    }[code]
    assert error.codes == [expected]


def test_gaussian_widths_for_levels_not_sent_are_refused() -> None:
    widths = initial_enhancer_arrays("gaussian", SETTINGS, 0)
    widths["sigma-3x"] = np.array([1.2], dtype=np.float32)

    error = _refusal(_train_request("gaussian"), _train_reply(widths))

    assert error.codes == ["extra-array"]
    assert "arrays/sigma-3x" in str(error)


def test_per_scan_losses_in_a_training_reply_are_refused() -> None:
    arrays = initial_enhancer_arrays("dncnn", SETTINGS, 0)
    reply = _train_reply(arrays, **{"train-loss": [0.02, 0.03, 0.01]})  # type: ignore[arg-type]

    error = _refusal(_train_request("dncnn"), reply)

    assert error.codes == ["per-patient-values"]
