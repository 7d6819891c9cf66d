"""A site's part in a federated GAN: rounds, evaluation, install, cross-audit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tiny_caches import build_labelled_cache
from tiny_study import ONE_EPOCH, SMALL_CNN, tiny_gan_settings

from fedbone.classifier.errors import TrainingError
from fedbone.config.site import AuditThresholds
from fedbone.config.synthetic import SynthesisSettings
from fedbone.data.cache import SiteCache
from fedbone.generative.arrays import arrays_digest, trainer_arrays
from fedbone.generative.audit.cross_audit import cross_audit_at_site
from fedbone.generative.federated_gan import (
    FEDERATED_TRAINER_FILE,
    FederatedGanRound,
    evaluate_federated_gan,
    federated_gan_round,
    install_federated_generator,
)
from fedbone.generative.release_register import ReleaseRegister
from fedbone.generative.site_gan import gan_state_dir, gan_trainer_for
from fedbone.generative.site_synthesis import synthesize_at_site

GAN = tiny_gan_settings(mode="federated", steps=4, rounds=2)
CLASSIFIER = SMALL_CNN
TRAIN = ONE_EPOCH


def _global(cache: SiteCache) -> dict[str, np.ndarray]:
    height, width = cache.images.shape[1:]
    return trainer_arrays(gan_trainer_for(GAN, height, width, seed=0, device="cpu"))


def _round(
    cache: SiteCache, work: Path, arrays: dict[str, np.ndarray]
) -> FederatedGanRound:
    return federated_gan_round(
        cache,
        "bm",
        GAN,
        CLASSIFIER,
        TRAIN,
        arrays,
        work_dir=work,
        run_name="fed",
        seed=5,
        device="cpu",
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[SiteCache, Path, dict]:
    folder = tmp_path_factory.mktemp("fedsite")
    cache = build_labelled_cache(folder)
    work = folder / "work"
    first = _round(cache, work, _global(cache))
    second = _round(cache, work, first.arrays)
    return cache, work, {"first": first, "second": second}


def test_rounds_resume_the_sites_own_state_and_return_weights(trained: tuple) -> None:
    cache, work, rounds = trained

    first, second = rounds["first"], rounds["second"]

    assert (gan_state_dir(work, "fed") / FEDERATED_TRAINER_FILE).is_file()
    assert first.metrics["steps"] == 2 and second.metrics["steps"] == 4
    assert first.metrics["num-examples"] == second.metrics["n-real"] > 0
    assert set(second.arrays) == set(_global(cache))
    assert arrays_digest(first.arrays) != arrays_digest(second.arrays)


def test_evaluation_scores_the_global_generator_on_held_out_scans(
    trained: tuple,
) -> None:
    cache, work, rounds = trained

    metrics = evaluate_federated_gan(
        cache,
        GAN,
        rounds["second"].arrays,
        work_dir=work,
        run_name="fed",
        seed=0,
        device="cpu",
    )

    assert set(metrics) == {"num-examples", "fd", "kid", "precision", "recall"}
    assert np.isfinite(metrics["fd"]) and metrics["num-examples"] >= 4


def test_a_generator_that_is_not_the_announced_one_is_refused(trained: tuple) -> None:
    cache, work, rounds = trained

    with pytest.raises(TrainingError, match="generator-digest-mismatch"):
        install_federated_generator(
            cache,
            GAN,
            rounds["second"].arrays,
            expected_sha256=arrays_digest(rounds["first"].arrays),
            round_number=2,
            work_dir=work,
            run_name="fed",
            device="cpu",
        )


def test_the_installed_generator_synthesises_like_a_local_one(trained: tuple) -> None:
    cache, work, rounds = trained
    arrays = rounds["second"].arrays
    install_federated_generator(
        cache,
        GAN,
        arrays,
        expected_sha256=arrays_digest(arrays),
        round_number=2,
        work_dir=work,
        run_name="fed",
        device="cpu",
    )

    release = synthesize_at_site(
        cache,
        "bm",
        SynthesisSettings(n_per_class=3, max_attempts=1),
        CLASSIFIER,
        AuditThresholds(),
        work_dir=work,
        run_name="fed",
        register=ReleaseRegister(work / "register.jsonl"),
        seed=1,
        device="cpu",
    )

    assert release.summary["n-generated"] == 12


def test_cross_audit_blocks_copies_of_this_sites_scans(trained: tuple) -> None:
    cache, _, _ = trained
    train_rows = cache.indices("train")[:3]
    copies = np.asarray(cache.images[train_rows], dtype=np.float32)
    rng = np.random.default_rng(0)
    novel = rng.random((3, *cache.images.shape[1:])).astype(np.float32)

    result = cross_audit_at_site(
        cache,
        np.concatenate([copies, novel]),
        replace(AuditThresholds(), feature_space=False),
        device="cpu",
    )

    assert result.passed.dtype == np.uint8
    np.testing.assert_array_equal(result.passed, [0, 0, 0, 1, 1, 1])
    assert result.summary["n-blocked"] == 3
