"""Phase ``validate`` on hand-made replies: site tables, pooled ROC, DeLong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Error, Message, RecordDict
from phase_grid import ScriptedGrid, config_of, content, study_run

from fedbone.config.privacy import DpSettings, DpStatisticsSettings
from fedbone.config.study import StudyConfig
from fedbone.validation.histograms import ScoreHistograms, score_histograms
from fedbone.validation.pooled_delong import paired_component_sums
from fedbone.validation.pooled_roc import pooled_roc
from fedbone.validation.study_results import ValidationResults
from server.phases.validate import run_validate

SITES = {1: ("A", "train"), 2: ("B", "train"), 3: ("X", "validate-only")}
MODELS = {
    "federated": {"w": np.zeros(2, np.float32)},
    "local-A": {"w": np.ones(2, np.float32)},
}
PAIR = "federated-vs-local-A"


class _ScoringSites:
    """Each site holds labels and both models' scores for 40 patients."""

    def __init__(self, failing_components: tuple[int, ...] = ()) -> None:
        self.failing_components = failing_components
        self.labels: dict[int, np.ndarray] = {}
        self.scores: dict[int, dict[str, np.ndarray]] = {}
        for node in SITES:
            rng = np.random.default_rng(node)
            labels = rng.integers(0, 2, 40)
            self.labels[node] = labels
            self.scores[node] = {
                "federated": np.clip(0.3 * labels + 0.7 * rng.random(40), 0, 1),
                "local-A": rng.random(40),
            }

    def histograms(self, node: int, model: str) -> ScoreHistograms:
        return score_histograms(self.labels[node], self.scores[node][model], bins=1000)

    def validate(self, message: Message) -> RecordDict:
        node = message.metadata.dst_node_id
        metrics: dict[str, dict[str, float]] = {}
        for model in MODELS:
            metrics[f"metrics-{model}"] = {"auc": 0.5 + node / 10, "n": 40}
            metrics[f"histograms-{model}"] = self.histograms(node, model).to_dict()
        metrics[f"paired-{PAIR}"] = {"p-value": node / 10}
        return content(metrics=metrics)

    def paired_components(self, message: Message) -> RecordDict | Error:
        node = message.metadata.dst_node_id
        if node in self.failing_components:
            return Error(code=3, reason="SiteTaskError")
        records = message.content.metric_records
        pooled = {
            model: ScoreHistograms.from_dict(dict(records[f"pooled-{model}"]))
            for model in MODELS
        }
        sums = paired_component_sums(
            self.labels[node],
            self.scores[node]["federated"],
            self.scores[node]["local-A"],
            pooled["federated"],
            pooled["local-A"],
        )
        return content(metrics={f"components-{PAIR}": sums.to_dict()})


def _grid(sites: _ScoringSites) -> ScriptedGrid:
    return ScriptedGrid(
        {
            "query.validate": sites.validate,
            "query.paired_components": sites.paired_components,
        }
    )


def test_every_site_scores_every_model_and_the_roc_is_pooled(tmp_path: Path) -> None:
    sites = _ScoringSites()
    grid = _grid(sites)
    run = study_run(tmp_path, grid, SITES, models=dict(MODELS))

    run_validate(run)

    results = run.validation_results
    assert isinstance(results, ValidationResults)
    request = grid.sent[0]
    assert list(config_of(request)["pairs"]) == ["federated|local-A"]
    assert set(request.content.array_records) == {"model-federated", "model-local-A"}
    assert [(r["site"], r["model"]) for r in results.per_site][:2] == [
        ("A", "federated"),
        ("A", "local-A"),
    ]
    assert results.per_site[2]["auc"] == pytest.approx(0.7)
    assert [(r["site"], r["p-value"]) for r in results.site_pairs] == [
        ("A", pytest.approx(0.1)),
        ("B", pytest.approx(0.2)),
        ("X", pytest.approx(0.3)),
    ]
    everyone = pooled_roc([sites.histograms(n, "federated") for n in SITES])
    assert results.pooled["federated"].auc == pytest.approx(everyone.auc)
    assert results.pooled["federated"].n_positive == sum(
        int(labels.sum()) for labels in sites.labels.values()
    )
    external = sites.histograms(3, "federated")
    assert results.pooled_external["federated"].auc == pytest.approx(
        pooled_roc([external]).auc
    )
    assert grid.sent_to("query.paired_components") == [1, 2, 3, 3]
    (comparison,) = results.pooled_pairs
    difference = results.pooled["federated"].auc - results.pooled["local-A"].auc
    assert comparison["model_a"] == "federated"
    assert comparison["test"].difference == pytest.approx(difference)
    assert results.dp_statistics is None


def test_pooled_delong_is_skipped_when_a_site_misses_the_second_exchange(
    tmp_path: Path,
) -> None:
    grid = _grid(_ScoringSites(failing_components=(2,)))
    run = study_run(tmp_path, grid, SITES, models=dict(MODELS))

    run_validate(run)

    assert run.validation_results is not None
    assert run.validation_results.pooled_pairs == []
    assert len(run.validation_results.pooled_pairs_external) == 1


def test_under_dp_statistics_only_noisy_histograms_are_used(tmp_path: Path) -> None:
    sites = _ScoringSites()

    def noisy(message: Message) -> RecordDict:
        node = message.metadata.dst_node_id
        metrics: dict[str, dict[str, object]] = {
            f"noisy-histograms-{model}": sites.histograms(node, model).to_dict()
            for model in MODELS
        }
        metrics["privacy"] = {
            "statistics-epsilon": 0.5,
            "epsilon-spent": 1.5,
            "delta-spent": 1e-6,
        }
        return content(metrics=metrics)

    grid = ScriptedGrid({"query.validate": noisy})
    study = StudyConfig(
        name="dp", dp=DpSettings(statistics=DpStatisticsSettings(epsilon=0.5))
    )
    run = study_run(tmp_path, grid, SITES, study, models=dict(MODELS))
    run.results["privacy"] = {"A": {"statistics-epsilon": 0.25}}

    run_validate(run)

    results = run.validation_results
    assert results is not None
    assert config_of(grid.sent[0])["dp-stat-epsilon"] == 0.5
    assert set(grid.kinds()) == {"query.validate"}
    own = pooled_roc([sites.histograms(1, "federated")])
    assert results.per_site[0]["auc"] == pytest.approx(own.auc)
    assert np.isnan(results.per_site[0]["sensitivity-low"])
    assert results.site_pairs == [] and results.pooled_pairs == []
    assert results.dp_statistics is not None and set(results.dp_statistics) == {
        "A",
        "B",
        "X",
    }
    privacy = json.loads((run.run_dir / "privacy.json").read_text())
    assert privacy["A"] == {
        "statistics-epsilon": 0.75,
        "epsilon-total": 1.5,
        "delta-total": 1e-6,
    }
