"""An ensemble at validation: mean probability for the ROC, majority vote for calls."""

from pathlib import Path

import numpy as np
import pytest
from adversary import CLASSIFIER, model, scores, write_cohort_cache

from fedbone.classifier.folds import pack_ensemble
from fedbone.data.cache import SiteCache
from fedbone.validation.metrics import binary_metrics
from fedbone.validation.site import score_models, validate_models


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cohort_cache(tmp_path_factory.mktemp("cohort"), n_patients=30)


def test_the_ensemble_scores_its_members_mean_and_calls_by_their_vote(
    cache_dir: Path,
) -> None:
    # Prepare: three members whose calls disagree on some scans
    members = [model(seed) for seed in (1, 2, 3)]
    each = np.stack([scores(cache_dir, m) for m in members])
    threshold = float(np.median(each))
    cache = SiteCache.open(cache_dir)
    labels = np.array([r.label_bm for r in cache.index])
    vote = ((each >= threshold).sum(axis=0) >= 2).astype(np.float64)

    # Execute
    _, scored = score_models(
        cache, "bm", CLASSIFIER, {"cv": pack_ensemble(members)}, "test"
    )
    records = validate_models(
        cache,
        "bm",
        CLASSIFIER,
        {"cv": pack_ensemble(members)},
        split="test",
        bins=1000,
        n_bootstrap=10,
        threshold=threshold,
        pairs=[],
    )

    # Assert
    np.testing.assert_allclose(scored["cv"], each.mean(axis=0), rtol=1e-6)
    by_mean = binary_metrics(labels, each.mean(axis=0), threshold=threshold)
    by_vote = binary_metrics(labels, vote, threshold=0.5)
    metrics = records["metrics-cv"]
    assert metrics["auc"] == pytest.approx(by_mean.auc.value)
    assert metrics["sensitivity"] == pytest.approx(by_vote.sensitivity.value)
    assert metrics["specificity"] == pytest.approx(by_vote.specificity.value)
