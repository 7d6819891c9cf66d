"""The cross-validated ensemble through Flower's simulation runtime (tiny sites)."""

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_study import write_tiny_study

from fedbone.classifier.folds import is_ensemble, unpack_ensemble
from fedbone.config.study import load_study_config
from server.simulation import simulate_study

pytestmark = [pytest.mark.integration]


def test_the_study_trains_fold_models_and_validates_their_ensemble(
    tmp_path: Path,
) -> None:
    # Prepare: 2 folds, up to 3 rounds each, stopping one round after the best
    path = write_tiny_study(
        tmp_path,
        "cv",
        ["census", "train", "validate", "report"],
        min_scans=40,
        training={"rounds": 3},
        cross_validation={"folds": 2, "early_stopping_rounds": 1},
        validation={"n_bootstrap": 50},
    )

    # Execute
    outcome = simulate_study(load_study_config(path))

    # Assert: each fold model's rounds were scored on its held-out fold only
    run_dir = outcome.run_dir
    results = json.loads((run_dir / "results.json").read_text())
    rounds = json.loads((run_dir / "rounds.json").read_text())
    assert set(results["pooled"]) == {"federated", "cv-ensemble"}
    folds = {row["model"]: row for row in results["fold_models"]}
    assert set(folds) == {"cv-1", "cv-2"}
    for name, row in folds.items():
        evaluated = [
            r for r in rounds if r["model"] == name and r["kind"] == "evaluate"
        ]
        assert {r["round"] for r in evaluated} == set(range(1, row["rounds-run"] + 1))
        assert 1 <= row["kept-round"] <= row["rounds-run"] <= 3
        assert row["held-out-loss"] == min(row["losses"].values())
    # the two folds partition each train site's development scans
    for site in ("A", "B"):
        held_out = [
            next(
                r["num-examples"]
                for r in rounds
                if r["model"] == name and r["kind"] == "evaluate" and r["site"] == site
            )
            for name in ("cv-1", "cv-2")
        ]
        trained = [
            next(
                r["num-examples"]
                for r in rounds
                if r["model"] == name and r["kind"] == "train" and r["site"] == site
            )
            for name in ("cv-1", "cv-2")
        ]
        assert held_out[0] == trained[1] and held_out[1] == trained[0]
    with np.load(run_dir / "models" / "cv-ensemble.npz") as stored:
        arrays = {key: stored[key] for key in stored.files}
    assert is_ensemble(arrays) and len(unpack_ensemble(arrays)) == 2
    report = (run_dir / "report.html").read_text()
    assert "Cross-validated ensemble (fold models)" in report
