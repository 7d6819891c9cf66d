"""Finding 5: ``run-name`` from the centre used as a path at the site.

``../..`` as the run name would put the received pool, the replay store and
the outcome cohort outside the site's work folder. Every request's run name
must be a safe folder name; the replay store is not touched for any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from adversary import (
    egress_entries,
    message,
    model,
    outcomes_message,
    send,
    write_cohort_cache,
    write_site,
)

from fedbone.federation.egress.guard import SiteTaskError
from fedbone.federation.records import arrays_to_record
from fedbone.generative.pool import pool_digest
from fedbone.safe_names import UnsafeName, run_folder

ESCAPES = ["../..", "..", "a/../../b", "/etc", ".hidden", "", "x" * 200]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cohort_cache(tmp_path_factory.mktemp("cohort"), n_patients=12)


def _files_outside(root: Path, work: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_relative_to(work)]


@pytest.mark.parametrize("run_name", ["../..", "a/../../b", "/tmp/elsewhere"])
def test_a_pool_sent_with_an_escaping_run_name_is_refused(
    tmp_path: Path, cache_dir: Path, run_name: str
) -> None:
    # Prepare
    site = write_site(tmp_path / "deep" / "site", cache_dir)
    before = set(_files_outside(tmp_path, tmp_path / "deep" / "site" / "work"))
    images = np.zeros((2, 32, 16), dtype=np.float32)
    class_ids = np.array([0, 1])
    pool = {"synthetic": arrays_to_record({"images": images, "class-ids": class_ids})}
    attack = message(
        "query.receive_synthetic",
        "synthesize",
        pool,
        **{"run-name": run_name, "pool-sha256": pool_digest(images, class_ids)},
    )

    # Execute
    with pytest.raises(SiteTaskError, match="unsafe-name"):
        send(attack, site)

    # Assert: nothing written outside the site's folder (where its log and
    # secret live) nor in its work folder; the refusal is logged
    after = set(_files_outside(tmp_path, tmp_path / "deep" / "site" / "work"))
    assert all(p.is_relative_to(tmp_path / "deep" / "site") for p in after - before)
    assert not (tmp_path / "deep" / "site" / "work").exists()
    assert not (tmp_path / "synthetic").exists()
    assert egress_entries(site)[-1]["verdict"] == "error"
    assert "unsafe-name" in egress_entries(site)[-1]["reason"]


def test_outcomes_with_an_escaping_run_name_write_no_cohort_or_reply(
    tmp_path: Path, cache_dir: Path
) -> None:
    # Prepare
    site = write_site(tmp_path / "deep" / "site", cache_dir)

    # Execute
    with pytest.raises(SiteTaskError, match="unsafe-name"):
        send(outcomes_message(model(), **{"run-name": "../../.."}), site)

    # Assert: no cohort file, no replay store anywhere
    assert not list(tmp_path.rglob("outcome-cohort.npz"))
    assert not list(tmp_path.rglob("*.reply"))


@pytest.mark.parametrize("name", ESCAPES)
def test_run_folders_refuse_every_escaping_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeName):
        run_folder(tmp_path / "work", "synthetic", name)


def test_an_ordinary_run_name_still_works(tmp_path: Path) -> None:
    folder = run_folder(tmp_path / "work", "gan", "demo-bm-20261206-101500")

    assert folder == tmp_path / "work" / "gan" / "demo-bm-20261206-101500"
