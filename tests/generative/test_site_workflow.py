"""A site's generative workflow end to end on a tiny cache: GAN, synthesis, pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_caches import build_labelled_cache
from tiny_study import ONE_EPOCH, SMALL_CNN, tiny_gan_settings

from fedbone.classifier.errors import TrainingError
from fedbone.classifier.synthetic_mix import MixedCache
from fedbone.config.site import AuditThresholds
from fedbone.config.synthetic import SynthesisSettings
from fedbone.generative.pool import pool_digest
from fedbone.generative.release_register import ReleaseRegister
from fedbone.generative.site_gan import (
    SELECTION_FILE,
    gan_state_dir,
    recorded_site_models,
    train_site_generator,
)
from fedbone.generative.site_synthesis import (
    mixed_training_view,
    store_received_pool,
    synthesize_at_site,
)

GAN = tiny_gan_settings(steps=4, checkpoint_every=2)
CLASSIFIER = SMALL_CNN
TRAIN = ONE_EPOCH


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    folder = tmp_path_factory.mktemp("site")
    cache = build_labelled_cache(folder)
    work = folder / "work"
    train_site_generator(
        cache,
        "bm",
        GAN,
        CLASSIFIER,
        TRAIN,
        work_dir=work,
        run_name="run-1",
        seed=0,
        device="cpu",
    )
    return cache, work


def test_gan_phase_leaves_a_selection_with_hashes_and_returns_figures(
    tmp_path: Path,
) -> None:
    # Prepare
    cache = build_labelled_cache(tmp_path)

    # Execute
    outcome = train_site_generator(
        cache,
        "bm",
        GAN,
        CLASSIFIER,
        TRAIN,
        work_dir=tmp_path / "work",
        run_name="r",
        seed=0,
        device="cpu",
    )

    # Assert
    state = gan_state_dir(tmp_path / "work", "r")
    assert (state / SELECTION_FILE).is_file()
    assert outcome.metrics["n-checkpoints"] == 2
    assert np.isfinite(outcome.metrics["best-fd"])
    assert len(outcome.provenance["checkpoint-sha256"]) == 64
    assert all(isinstance(v, float) for v in outcome.metrics.values())


def test_synthesis_registers_exactly_the_released_images(site: tuple) -> None:
    # Prepare
    cache, work = site
    register = ReleaseRegister(work / "register.jsonl")

    # Execute
    release = synthesize_at_site(
        cache,
        "bm",
        SynthesisSettings(n_per_class=4),
        CLASSIFIER,
        AuditThresholds(),
        work_dir=work,
        run_name="run-1",
        register=register,
        seed=1,
        device="cpu",
    )

    # Assert
    assert release.images.dtype == np.float16
    assert len(release.images) == release.summary["n-released"]
    assert len(register.unreleased(release.images)) == 0
    assert release.summary["n-generated"] >= 16
    assert all(release.summary[f"n-released-class-{c}"] <= 4 for c in range(4))
    models = recorded_site_models(gan_state_dir(work, "run-1"))
    assert models is not None
    assert release.summary["curation-val-auc"] == pytest.approx(
        models.curation_val_auc, nan_ok=True
    )
    assert "nearest-mse-histogram-edges" not in release.summary
    assert release.provenance["spacing-mm"] == "8"


def test_synthesis_refuses_a_checkpoint_changed_after_selection(site: tuple) -> None:
    # Prepare
    cache, work = site
    state = gan_state_dir(work, "run-1")
    (state / "curation-classifier.pt").write_bytes(b"tampered")

    # Execute / Assert
    with pytest.raises(TrainingError, match="sha256-mismatch"):
        synthesize_at_site(
            cache,
            "bm",
            SynthesisSettings(n_per_class=2),
            CLASSIFIER,
            AuditThresholds(),
            work_dir=work,
            run_name="run-1",
            register=ReleaseRegister(work / "r.jsonl"),
            seed=1,
            device="cpu",
        )


def test_a_received_pool_is_checked_stored_and_mixed_in(site: tuple) -> None:
    # Prepare
    cache, work = site
    rng = np.random.default_rng(0)
    images = rng.random((40, 64, 32)).astype(np.float16)
    class_ids = np.arange(40, dtype=np.int64) % 4

    # Execute
    stored = store_received_pool(
        images,
        class_ids,
        expected_sha256=pool_digest(images, class_ids),
        work_dir=work,
        run_name="run-1",
    )
    view = mixed_training_view(
        cache,
        "bm",
        ratio=2,
        synthetic_only=False,
        work_dir=work,
        run_name="run-1",
        seed=0,
    )
    plain = mixed_training_view(
        cache,
        "bm",
        ratio=0,
        synthetic_only=False,
        work_dir=work,
        run_name="run-1",
        seed=0,
    )

    # Assert
    assert stored == 40
    assert isinstance(view, MixedCache)
    assert len(view.indices("train")) > len(cache.indices("train"))
    assert plain is cache


def test_a_corrupted_pool_is_refused(tmp_path: Path) -> None:
    # Prepare
    images = np.zeros((2, 64, 32), np.float16)
    class_ids = np.zeros(2, np.int64)

    # Execute / Assert
    with pytest.raises(TrainingError, match="pool-corrupted"):
        store_received_pool(
            images,
            class_ids,
            expected_sha256="0" * 64,
            work_dir=tmp_path,
            run_name="r",
        )
