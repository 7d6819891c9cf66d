"""``fedbone explain``: Grad-CAM overlays of a site's scans, site-local."""

from pathlib import Path

import numpy as np
import pytest
import torch
from adversary import write_site
from tiny_caches import build_labelled_cache

from fedbone.cli.main import main
from fedbone.errors import ProblemsError
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.parameters import state_to_arrays
from fedbone.models.weights import file_sha256


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path]:
    cache = build_labelled_cache(tmp_path / "data", count=40)
    site_yaml = write_site(tmp_path / "site", cache.cache_dir)
    torch.manual_seed(0)
    model = build_classifier(
        ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.BATCH)
    )
    model_file = tmp_path / "federated.npz"
    np.savez(model_file, allow_pickle=False, **state_to_arrays(model))
    return site_yaml, model_file


def test_overlays_and_an_index_go_to_the_sites_work_folder(
    site: tuple[Path, Path],
) -> None:
    site_yaml, model_file = site

    status = main(
        [
            "explain",
            str(site_yaml),
            "--model",
            str(model_file),
            "--sha256",
            file_sha256(model_file),
            "--split",
            "train",
            "--limit",
            "3",
        ]
    )

    folder = site_yaml.parent / "work" / "explain" / "federated"
    assert status == 0
    assert len(list(folder.glob("*.png"))) == 3
    index = (folder / "index.html").read_text()
    assert "never sent" in index and index.count("<img") == 3


def test_a_model_file_with_another_sha256_is_not_loaded(
    site: tuple[Path, Path],
) -> None:
    site_yaml, model_file = site

    with pytest.raises(ProblemsError, match="sha256-mismatch"):
        from argparse import Namespace

        from fedbone.cli.explain import run_explain

        run_explain(
            Namespace(
                config=site_yaml,
                model=model_file,
                sha256="0" * 64,
                architecture="small-cnn",
                norm="batch",
                in_channels=1,
                task="bm",
                split="train",
                limit=2,
                out=None,
            )
        )
