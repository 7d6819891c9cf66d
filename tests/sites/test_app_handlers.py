"""Every ClientApp handler, called directly on hand-made messages: no Grid, no network.

Handlers whose work is cheap run against a real site on a tiny cache; the
generative and outcome handlers, whose work has its own tests, run against a
stand-in site that records the decoded request and returns a canned result,
so what is checked here is the adapter: decoding and the reply's records.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from federation_messages import context, request
from flwr.app import ConfigRecord, Context, Message, RecordDict
from tiny_caches import build_toy_cache
from tiny_study import tiny_gan_settings

import sites.app as site_app
from fedbone.config.synthetic import SynthesisSettings
from fedbone.federation.records import arrays_to_record, record_to_arrays
from fedbone.generative.audit.cross_audit import CrossAudit
from fedbone.generative.pool import pool_digest
from fedbone.generative.site_gan import SiteGanOutcome
from fedbone.generative.site_synthesis import SiteRelease
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.parameters import state_to_arrays
from fedbone.outcomes.stratified_cox import CoxDerivatives
from fedbone.privacy.errors import PrivacyError
from fedbone.site import (
    ClassifierTrainRequest,
    GanEvaluateRequest,
    GanRequest,
    OutcomesResult,
    StatisticsSpend,
)

SPEC = ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.GROUP)
GAN = tiny_gan_settings(mode="federated", steps=2)
STUDY: dict[str, Any] = {
    "architecture": "small-cnn",
    "norm": "group",
    "in-channels": 1,
    "local-epochs": 1,
    "batch-size": 8,
    "lr": 0.01,
    "weight-decay": 0.0,
    "sampling": "balanced",
    "augment": False,
    "seed": 3,
}


def _site_yaml(folder: Path, cache_dir: Path, budget: float | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.csv").write_text("scan_id\n")
    privacy = "{small_cell_threshold: 1}"
    if budget is not None:
        privacy = f"{{small_cell_threshold: 1, budget: {{epsilon: {budget}}}}}"
    path = folder / "site.yaml"
    path.write_text(
        "site: {id: vienna}\n"
        f"data: {{manifest: manifest.csv, cache_dir: {cache_dir}}}\n"
        f"privacy: {privacy}\n"
        "egress_log: logs/egress.jsonl\n"
        "device: cpu\n"
    )
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_cache(tmp_path_factory.mktemp("cache"), count=24).cache_dir


@pytest.fixture
def node(tmp_path: Path, cache_dir: Path) -> Context:
    return context(**{"site-config": str(_site_yaml(tmp_path / "site", cache_dir))})


@pytest.fixture
def budget_node(tmp_path: Path, cache_dir: Path) -> Context:
    path = _site_yaml(tmp_path / "private", cache_dir, budget=50.0)
    return context(**{"site-config": str(path)})


def _model() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    return state_to_arrays(build_classifier(SPEC))


def _message(kind: str, phase: str, records: dict[str, Any], **config: Any) -> Message:
    values = {"phase": phase, "task": "bm", "run-name": "study-1", **STUDY, **config}
    return request(kind, RecordDict({"config": ConfigRecord(values), **records}))


def _with_model(kind: str, phase: str = "train", **config: Any) -> Message:
    return _message(kind, phase, {"arrays": arrays_to_record(_model())}, **config)


def _with_models(kind: str, phase: str, **config: Any) -> Message:
    return _message(
        kind, phase, {"model-federated": arrays_to_record(_model())}, **config
    )


VALIDATION = {"split": "val", "bins": 1000, "n-bootstrap": 10, "threshold": 0.5}


def test_census_reports_identity_and_counts(node: Context) -> None:
    reply = site_app.census(_message("query.census", "census", {}), node)

    identity = reply.content.config_records["site"]
    assert identity["site-id"] == "vienna"
    assert set(identity) >= {"role", "config-sha256", "cache-hash", "canvas"}
    assert "census" in reply.content.metric_records


def test_train_returns_the_model_as_received_and_keeps_fedbn_layers(
    node: Context,
) -> None:
    sent = _model()

    reply = site_app.train(_with_model("train", fedbn=True), node)

    arrays = record_to_arrays(reply.content.array_records["arrays"])
    assert {k: (v.shape, v.dtype) for k, v in arrays.items()} == {
        k: (v.shape, v.dtype) for k, v in sent.items()
    }
    metrics = reply.content.metric_records["metrics"]
    assert metrics["num-examples"] > 0 and "train-loss" in metrics
    assert "fedbn-local-state" in node.state.array_records


def test_a_site_with_a_budget_refuses_non_private_training(
    budget_node: Context,
) -> None:
    with pytest.raises(PrivacyError) as caught:
        site_app.train(_with_model("train"), budget_node)

    assert caught.value.codes == ["dp-required"]


def test_private_training_reports_its_spend(budget_node: Context) -> None:
    message = _with_model(
        "train", **{"dp-noise-multiplier": 1.0, "dp-clipping": "hooks"}
    )

    reply = site_app.train(message, budget_node)

    metrics = reply.content.metric_records["metrics"]
    assert metrics["dp-epsilon"] > 0 and "train-loss" not in metrics


def test_evaluate_scores_the_model_on_the_validation_split(node: Context) -> None:
    reply = site_app.evaluate(_with_model("evaluate"), node)

    metrics = reply.content.metric_records["metrics"]
    assert set(metrics) == {"num-examples", "val-loss", "val-auc"}


def test_validate_replies_with_one_record_per_model(node: Context) -> None:
    reply = site_app.validate(
        _with_models("query.validate", "validate", **VALIDATION), node
    )

    assert set(reply.content.metric_records) == {
        "metrics-federated",
        "histograms-federated",
    }


def test_private_validation_replies_with_noisy_histograms_only(
    budget_node: Context,
) -> None:
    message = _with_models(
        "query.validate", "validate", **VALIDATION, **{"dp-stat-epsilon": 1.0}
    )

    reply = site_app.validate(message, budget_node)

    assert set(reply.content.metric_records) == {
        "noisy-histograms-federated",
        "privacy",
    }
    assert reply.content.metric_records["privacy"]["epsilon-spent"] > 0


def test_paired_components_reply_per_pair(node: Context) -> None:
    # Prepare: this site's own histograms stand for the pooled ones
    models = {f"model-{n}": arrays_to_record(_model()) for n in ("a", "b")}
    validated = site_app.validate(
        _message("query.validate", "validate", models, **VALIDATION), node
    )
    pooled = {
        f"pooled-{n}": validated.content.metric_records[f"histograms-{n}"]
        for n in ("a", "b")
    }
    message = _message(
        "query.paired_components",
        "validate",
        {**models, **pooled},
        split="val",
        pairs=["a|b"],
    )

    # Execute
    reply = site_app.paired(message, node)

    # Assert
    assert len(reply.content.metric_records) == 1


def test_received_synthetic_pool_is_stored_and_acknowledged(node: Context) -> None:
    images = np.random.default_rng(0).random((3, 32, 16)).astype(np.float32)
    class_ids = np.array([0, 1, 1])
    digest = pool_digest(images, class_ids)
    pool = arrays_to_record({"images": images, "class-ids": class_ids})
    message = _message(
        "query.receive_synthetic",
        "synthesize",
        {"synthetic": pool},
        **{"pool-sha256": digest},
    )

    reply = site_app.receive_synthetic(message, node)

    stored = reply.content.metric_records["stored"]
    assert (stored["n-received"], stored["n-stored"]) == (3, 3)
    assert reply.content.config_records["pool"]["pool-sha256"] == digest


class _StandInSite:
    """Records the request a handler decoded; returns a canned result."""

    site_id = "vienna"
    work_dir = Path("work")

    def __init__(self, result: Any) -> None:
        self.result = result
        self.requests: list[Any] = []

    def __getattr__(self, capability: str) -> Any:
        def work(*args: Any) -> Any:
            self.requests.append(args)
            return self.result

        return work


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(result: Any) -> _StandInSite:
        site = _StandInSite(result)
        monkeypatch.setattr(site_app, "site_for", lambda message, context: site)
        return site

    return install


def _gan_config() -> dict[str, Any]:
    settings = {
        k: list(v) if isinstance(v, tuple) else v for k, v in asdict(GAN).items()
    }
    return {"gan-settings": json.dumps(settings, sort_keys=True)}


def test_train_in_the_gan_phase_is_a_federated_gan_round(stand_in: Any) -> None:
    from fedbone.classifier.rounds import RoundResult

    site = stand_in(RoundResult({"g.weight": np.zeros(2)}, {"steps": 2.0}, None))

    reply = site_app.train(_with_model("train", "gan", **_gan_config()), context())

    ((decoded, arrays),) = site.requests
    assert isinstance(decoded, GanRequest) and decoded.gan == GAN
    assert set(arrays) == set(_model())
    assert set(reply.content.array_records["arrays"]) == {"g.weight"}
    assert reply.content.metric_records["metrics"]["steps"] == 2.0


def test_classifier_training_is_decoded_with_its_study_settings(stand_in: Any) -> None:
    from fedbone.classifier.rounds import RoundResult

    site = stand_in(RoundResult({}, {}, None))

    site_app.train(_with_model("train", **{"synthetic-ratio": 0.5}), context())

    ((decoded, _),) = site.requests
    assert isinstance(decoded, ClassifierTrainRequest)
    assert (decoded.synthetic_ratio, decoded.dp, decoded.classifier) == (
        0.5,
        None,
        SPEC,
    )


def test_evaluate_in_the_gan_phase_scores_the_global_gan(stand_in: Any) -> None:
    site = stand_in({"fd": 1.5, "num-examples": 4})

    reply = site_app.evaluate(
        _with_model("evaluate", "gan", **_gan_config()), context()
    )

    ((decoded, _),) = site.requests
    assert decoded == GanEvaluateRequest(gan=GAN, run_name="study-1", seed=3)
    assert reply.content.metric_records["metrics"]["fd"] == 1.5


def test_gan_train_replies_with_figures_and_provenance(stand_in: Any) -> None:
    stand_in(SiteGanOutcome({"best-fd": 2.0}, {"checkpoint-sha256": "ab"}))

    reply = site_app.gan_train(
        _message("query.gan_train", "gan", {}, **_gan_config()), context()
    )

    assert reply.content.metric_records["metrics"]["best-fd"] == 2.0
    assert dict(reply.content.config_records["provenance"]) == {
        "site-id": "vienna",
        "checkpoint-sha256": "ab",
    }


def test_synthesize_passes_the_federated_generator_and_replies_with_images(
    stand_in: Any,
) -> None:
    images = np.zeros((2, 4, 4), dtype=np.float16)
    site = stand_in(SiteRelease(images, np.array([0, 1]), {"n-released": 2}, {}))
    settings = json.dumps(asdict(SynthesisSettings(n_per_class=2)), sort_keys=True)
    message = _message(
        "query.synthesize",
        "synthesize",
        {"generator": arrays_to_record({"g.weight": np.ones(3)})},
        **_gan_config(),
        **{
            "synthesis-settings": settings,
            "generator-sha256": "cafe",
            "generator-round": 2,
        },
    )

    reply = site_app.synthesize(message, context())

    ((decoded,),) = site.requests
    assert (decoded.generator.sha256, decoded.generator.round_number) == ("cafe", 2)
    released = record_to_arrays(reply.content.array_records["synthetic"])
    assert released["images"].shape == (2, 4, 4)
    assert reply.content.config_records["provenance"]["site-id"] == "vienna"
    assert reply.content.metric_records["audit"]["n-released"] == 2


def test_umap_replies_with_the_density_grids(stand_in: Any) -> None:
    class View:
        def to_record(self) -> dict[str, Any]:
            return {"bins": 2, "grid-real": [0, 1, 2, 3]}

    stand_in(View())

    reply = site_app.umap(
        _message("query.umap", "synthesize", {}, **_gan_config()), context()
    )

    assert reply.content.metric_records["umap"]["grid-real"] == [0, 1, 2, 3]


def test_cross_audit_replies_with_a_verdict_per_image(stand_in: Any) -> None:
    site = stand_in(CrossAudit(np.array([1, 0], dtype=np.uint8), {"n-blocked": 1}))
    images = arrays_to_record(
        {"images": np.zeros((2, 4, 4), dtype=np.float32), "class-ids": np.zeros(2)}
    )
    config = {"released-by": "A", "release-signature": "ab" * 64}

    reply = site_app.cross_audit(
        _message("query.cross_audit", "synthesize", {"synthetic": images}, **config),
        context(),
    )

    ((decoded,),) = site.requests
    assert decoded.images.shape == (2, 4, 4)
    assert (decoded.released_by, decoded.signature) == ("A", "ab" * 64)
    assert set(reply.content) == {"verdicts"}  # verdict bits only
    verdicts = record_to_arrays(reply.content.array_records["verdicts"])
    np.testing.assert_array_equal(verdicts["passed"], [1, 0])


OUTCOMES = {
    "endpoints": ["death"],
    "split": "test",
    "threshold": 0.5,
    "resolution-days": 30.0,
    "horizon-days": 365.0,
    "ties": "efron",
}


def test_outcomes_reply_with_their_status_record(stand_in: Any) -> None:
    site = stand_in(OutcomesResult({}, {}, None))

    reply = site_app.outcomes(
        _with_models("query.outcomes", "outcomes", **OUTCOMES), context()
    )

    ((decoded,),) = site.requests
    assert decoded.endpoints == ("death",) and decoded.dp is None
    assert set(reply.content.config_records) == {"outcome-status"}
    assert "privacy" not in reply.content.metric_records


def test_private_outcomes_reply_with_what_the_site_spent(stand_in: Any) -> None:
    stand_in(OutcomesResult({}, {}, StatisticsSpend(0.5, 1.5, 1e-6)))
    message = _with_models(
        "query.outcomes", "outcomes", **OUTCOMES, **{"dp-stat-epsilon": 0.5}
    )

    reply = site_app.outcomes(message, context())

    assert dict(reply.content.metric_records["privacy"]) == {
        "statistics-epsilon": 0.5,
        "epsilon-spent": 1.5,
        "delta-spent": 1e-6,
    }


def test_outcome_cox_replies_with_the_strata_derivatives(stand_in: Any) -> None:
    derivatives = CoxDerivatives(-3.0, [0.5], [[2.0]], 10, 4, "efron")
    site = stand_in(derivatives)
    message = _message(
        "query.outcome_cox",
        "outcomes",
        {},
        endpoint="death",
        **{"cox-model": "crude", "beta": [0.1], "ties": "efron"},
    )

    reply = site_app.outcome_cox(message, context())

    ((decoded,),) = site.requests
    assert (decoded.endpoint, decoded.cox_model, decoded.beta) == (
        "death",
        "crude",
        [0.1],
    )
    record = reply.content.metric_records["cox-derivatives"]
    assert (record["log-likelihood"], record["hessian"]) == (-3.0, [2.0])
