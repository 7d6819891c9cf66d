"""The cross-validated ensemble: a curious centre's fold and ensemble requests.

A fold model's round names its held-out fold (``cv-fold`` of ``cv-folds``).
Folds bound the patients per held-out loss, so a centre asking for many folds
would learn losses of a handful of patients each: the site refuses folds
smaller than its small-cell rule, before training. An ensemble travels as one
model record of ``member-<j>.*`` arrays; a site scores at most 20 members, and
the reply names only the ensemble.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from adversary import (
    egress_entries,
    message,
    model,
    send,
    validate_message,
    write_cohort_cache,
    write_site,
)

from fedbone.classifier.folds import MAX_MEMBERS, pack_ensemble
from fedbone.federation.egress.guard import SiteTaskError
from fedbone.federation.records import arrays_to_record


@pytest.fixture(scope="module")
def development(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 patients, one training scan each."""
    return write_cohort_cache(
        tmp_path_factory.mktemp("dev"), n_patients=40, split="train"
    )


@pytest.fixture(scope="module")
def test_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cohort_cache(tmp_path_factory.mktemp("test"), n_patients=24)


def _fold_round(kind: str, **config: object) -> object:
    return message(
        kind, "train", {"arrays": arrays_to_record(model())}, rounds=1, **config
    )


@pytest.mark.parametrize("kind", ["train", "evaluate"])
def test_folds_below_the_small_cell_rule_are_refused_before_training(
    tmp_path: Path, development: Path, kind: str
) -> None:
    # Prepare: 40 patients, small cells of 5: at most 8 folds
    site = write_site(tmp_path / "site", development)

    # Execute
    with pytest.raises(SiteTaskError, match="folds-too-small"):
        send(_fold_round(kind, **{"cv-fold": 0, "cv-folds": 10}), site)

    # Assert: one error line, nothing trained or sent
    [entry] = egress_entries(site)
    assert entry["verdict"] == "error" and "folds-too-small" in entry["reason"]


def test_more_folds_than_an_ensemble_may_hold_are_refused(
    tmp_path: Path, development: Path
) -> None:
    site = write_site(tmp_path / "site", development)

    with pytest.raises(SiteTaskError, match="bad-folds"):
        send(_fold_round("train", **{"cv-fold": 0, "cv-folds": 500}), site)
    with pytest.raises(SiteTaskError, match="bad-fold"):
        send(_fold_round("train", **{"cv-fold": 7, "cv-folds": 4}), site)


def test_an_allowed_fold_trains_on_the_other_folds_and_scores_the_held_out_one(
    tmp_path: Path, development: Path
) -> None:
    # Prepare
    site = write_site(tmp_path / "site", development)

    # Execute
    trained = send(_fold_round("train", **{"cv-fold": 1, "cv-folds": 4}), site)
    scored = send(_fold_round("evaluate", **{"cv-fold": 1, "cv-folds": 4}), site)

    # Assert: 30 patients train, the 10 of fold 1 are scored
    [train_metrics] = trained.content.metric_records.values()
    [evaluate_metrics] = scored.content.metric_records.values()
    assert train_metrics["num-examples"] == 30
    assert evaluate_metrics["num-examples"] == 10
    assert all(e["verdict"] == "passed" for e in egress_entries(site))


def test_an_ensemble_is_validated_as_one_model(
    tmp_path: Path, test_split: Path
) -> None:
    # Prepare
    site = write_site(tmp_path / "site", test_split)
    ensemble = pack_ensemble([model(seed) for seed in range(3)])
    request = validate_message(model())
    request.content["model-cv-ensemble"] = arrays_to_record(ensemble)

    # Execute
    reply = send(request, site)

    # Assert: the ensemble's figures, and nothing per member
    names = set(reply.content.metric_records)
    assert "metrics-cv-ensemble" in names and "metrics-federated" in names
    assert not any("member" in name for name in names)
    metrics = reply.content.metric_records["metrics-cv-ensemble"]
    assert 0.0 <= metrics["auc"] <= 1.0 and np.isfinite(metrics["sensitivity"])


def test_an_ensemble_of_too_many_members_is_refused(
    tmp_path: Path, test_split: Path
) -> None:
    site = write_site(tmp_path / "site", test_split)
    request = validate_message(model())
    request.content["model-cv-ensemble"] = arrays_to_record(
        pack_ensemble([model()] * (MAX_MEMBERS + 1))
    )

    with pytest.raises(SiteTaskError, match="too-many-members"):
        send(request, site)
    [entry] = egress_entries(site)
    assert entry["verdict"] == "error"
