"""``fedbone reader-study make|serve|score``: the set stays in the site's folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from adversary import write_site
from tiny_caches import build_labelled_cache

from fedbone.cli.main import main
from fedbone.generative.site_gan import gan_state_dir
from fedbone.reader_study.answers import AnswerStore


def _site(tmp_path: Path) -> Path:
    cache = build_labelled_cache(tmp_path / "data", count=40)
    site_yaml = write_site(tmp_path / "site", cache.cache_dir)
    state = gan_state_dir(site_yaml.parent / "work", "run1")
    state.mkdir(parents=True)
    images = np.random.default_rng(0).uniform(0, 1, (6, 64, 32)).astype("f2")
    np.save(state / "released.npy", images)
    np.save(state / "released-classes.npy", np.array([0, 1, 2, 3, 2, 0]))
    return site_yaml


def test_make_then_score_in_the_sites_work_folder(tmp_path: Path) -> None:
    site_yaml = _site(tmp_path)

    made = main(
        [
            "reader-study",
            "make",
            str(site_yaml),
            "--run-name",
            "run1",
            "--task",
            "bm",
            "--n",
            "2",
            "--split",
            "train",
        ]
    )

    folder = site_yaml.parent / "work" / "reader-study" / "run1-bm"
    assert made == 0
    items = json.loads((folder / "items.json").read_text())["items"]
    assert len(items) == 8
    store = AnswerStore(folder)
    for item in items:
        store.record("ana", item, "real", "positive")
    assert main(["reader-study", "score", str(folder)]) == 0
    results = json.loads((folder / "results.json").read_text())
    assert results["pooled"]["call-accuracy"]["value"] == 0.5


def test_a_short_release_and_a_remote_host_are_refused(tmp_path: Path) -> None:
    site_yaml = _site(tmp_path)
    out = tmp_path / "set"

    short = main(
        [
            "reader-study",
            "make",
            str(site_yaml),
            "--run-name",
            "run1",
            "--n",
            "5",
            "--split",
            "train",
            "--out",
            str(out),
        ]
    )
    bad_run = main(
        ["reader-study", "make", str(site_yaml), "--run-name", "../up", "--n", "1"]
    )
    remote = main(["reader-study", "serve", str(out), "--host", "0.0.0.0"])

    assert (short, bad_run, remote) == (2, 2, 2)
    assert not out.exists()
