"""Phase ``enhance``: a curious centre's requests to the site's real ClientApp.

Every setting of phase ``enhance`` is the centre's choice. The site checks
the ``enhance-settings`` block against the study's bounds as if it were its
own YAML, refuses escaping run names, histogram bins above its policy and, at
a site with a privacy budget, enhancer training (there is no DP-SGD for
enhancers), all before any work. An allowed evaluation leaves only per-image
set aggregates; the per-scan scores stay in the site's run folder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from adversary import (
    egress_entries,
    message,
    model,
    send,
    write_cohort_cache,
    write_site,
)
from fast_scan_sites import FAST_SCANS, build_fast_scan_site, tiny_enhance_settings
from flwr.app import Message, MetricRecord

from fedbone.data.cache import SiteCache
from fedbone.enhance.specs import initial_enhancer_arrays
from fedbone.federation.egress.guard import SiteTaskError
from fedbone.federation.records import arrays_to_record
from fedbone.federation.study_messages import enhance_settings_json

SETTINGS = tiny_enhance_settings()
EVALUATION = {"split": "test", "bins": 1000}
KINDS = ("train", "evaluate", "query.enhance_evaluate")


def _settings_json(**changes: Any) -> str:
    return json.dumps({**asdict(SETTINGS), **changes})


def _enhance_message(kind: str, settings: str | None = None, **config: Any) -> Message:
    """A phase-enhance message of ``kind`` with the tiny study's settings."""
    values = {"enhance-settings": settings or enhance_settings_json(SETTINGS)}
    if kind in ("train", "evaluate"):
        arrays = initial_enhancer_arrays("dncnn", SETTINGS, 0)
        records = {"arrays": arrays_to_record(arrays)}
        values["enhancer"] = "dncnn"
    else:
        records = {
            "model-federated": arrays_to_record(model()),
            "enhancer-gaussian": arrays_to_record(
                initial_enhancer_arrays("gaussian", SETTINGS, 0)
            ),
        }
        values |= EVALUATION
    return message(kind, "enhance", records, **{**values, **config})


def _components_message(**config: Any) -> Message:
    pooled = {
        f"pooled-{name}": MetricRecord(
            {"positives": [1] + [0] * 999, "negatives": [0] * 1000}
        )
        for name in ("fast-2x", "standard-2x")
    }
    return message(
        "query.enhance_components",
        "enhance",
        pooled,
        **{"pairs": ["fast-2x|standard-2x"], **config},
    )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cohort_cache(tmp_path_factory.mktemp("cohort"), n_patients=12)


def write_fast_scan_site(
    folder: Path, cache: SiteCache, fast_manifest: Path, **site: Any
) -> Path:
    """Write a site YAML over a phantom cache that lists its fast scans."""
    path = write_site(folder, cache.cache_dir, **site)
    settings = json.loads(path.read_text())
    settings["data"]["fast_manifest"] = str(fast_manifest)
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


def _did_no_work(site_yaml: Path) -> bool:
    return not (site_yaml.parent / "work" / "enhance").exists()


# -- the settings block ------------------------------------------------------


BAD_SETTINGS = {
    "a-billion-steps": ({"steps_per_epoch": 10**9}, "out-of-range", "steps_per_epoch"),
    "huge-patches": ({"patch_height": 10**6}, "out-of-range", "patch_height"),
    "unknown-key": ({"upload_scans": True}, "unknown-key", "upload_scans"),
    "slower-than-standard": ({"levels": ["0.5x"]}, "invalid-value", "levels"),
    "a-path-as-level": ({"levels": ["../../x"]}, "invalid-value", "levels"),
    "unknown-method": ({"methods": ["identity"]}, "invalid-choice", "methods"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("attack", sorted(BAD_SETTINGS))
def test_settings_out_of_bounds_are_refused_naming_the_setting(
    tmp_path: Path, cache_dir: Path, kind: str, attack: str
) -> None:
    # Prepare
    change, code, setting = BAD_SETTINGS[attack]
    site = write_site(tmp_path / "site", cache_dir)

    # Execute
    with pytest.raises(SiteTaskError, match=code):
        send(_enhance_message(kind, _settings_json(**change)), site)

    # Assert: the centre learns the code; the site's log names the setting
    [entry] = egress_entries(site)
    assert entry["verdict"] == "error"
    assert f"enhance.{setting}" in entry["reason"]
    assert _did_no_work(site)


def test_every_bad_setting_is_listed_at_once(tmp_path: Path, cache_dir: Path) -> None:
    site = write_site(tmp_path / "site", cache_dir)
    settings = _settings_json(steps_per_epoch=10**9, rounds=0, secret_mode=1)

    with pytest.raises(SiteTaskError):
        send(_enhance_message("query.enhance_evaluate", settings), site)

    reason = egress_entries(site)[-1]["reason"]
    for setting in ("steps_per_epoch", "rounds", "secret_mode"):
        assert f"enhance.{setting}" in reason


@pytest.mark.parametrize("settings", ["not json {", '["2x"]'])
def test_a_settings_block_that_is_no_object_is_refused(
    tmp_path: Path, cache_dir: Path, settings: str
) -> None:
    site = write_site(tmp_path / "site", cache_dir)

    with pytest.raises(SiteTaskError, match="StudyMessageError"):
        send(_enhance_message("query.enhance_evaluate", settings), site)

    assert "enhance-settings" in egress_entries(site)[-1]["reason"]


# -- run names, bins, privacy -------------------------------------------------


@pytest.mark.parametrize("run_name", ["../..", "a/../../b", "/tmp/elsewhere"])
@pytest.mark.parametrize("kind", [*KINDS, "query.enhance_components"])
def test_an_escaping_run_name_is_refused(
    tmp_path: Path, cache_dir: Path, kind: str, run_name: str
) -> None:
    # Prepare
    site = write_site(tmp_path / "deep" / "site", cache_dir)
    config = {"run-name": run_name}
    attack = (
        _components_message(**config)
        if kind == "query.enhance_components"
        else _enhance_message(kind, **config)
    )

    # Execute
    with pytest.raises(SiteTaskError, match="unsafe-name"):
        send(attack, site)

    # Assert: nothing outside the site's folder, nothing in its work folder
    outside = [
        p for p in tmp_path.rglob("*") if not p.is_relative_to(tmp_path / "deep")
    ]
    assert outside == []
    assert not (tmp_path / "deep" / "site" / "work").exists()
    assert "unsafe-name" in egress_entries(site)[-1]["reason"]


@pytest.mark.parametrize(("policy", "bins"), [(None, 10**6), (1000, 2000)])
def test_histogram_bins_above_the_policy_are_refused_before_any_work(
    tmp_path: Path, cache_dir: Path, policy: int | None, bins: int
) -> None:
    limit = {} if policy is None else {"max_histogram_bins": policy}
    site = write_site(tmp_path / "site", cache_dir, policy=limit)

    with pytest.raises(SiteTaskError, match="too-many-bins"):
        send(_enhance_message("query.enhance_evaluate", bins=bins), site)

    assert "policy.max_histogram_bins" in egress_entries(site)[-1]["reason"]
    assert _did_no_work(site)


DP_ASKED = {"dp-noise-multiplier": 1.1, "dp-max-grad-norm": 1.0}


@pytest.mark.parametrize(
    ("method", "dp"),
    [("dncnn", {}), ("gaussian", {}), ("dncnn", DP_ASKED)],
    ids=["dncnn", "gaussian", "dncnn-with-dp-asked"],
)
def test_a_site_with_a_privacy_budget_refuses_enhancer_training(
    tmp_path: Path, cache_dir: Path, method: str, dp: dict[str, float]
) -> None:
    # Prepare: no DP-SGD exists for enhancers, so their weights would leak
    # (asking for DP in the config changes nothing)
    site = write_site(
        tmp_path / "site", cache_dir, privacy={"budget": {"epsilon": 20.0}}
    )
    attack = _enhance_message("train", enhancer=method, **dp)
    if method == "gaussian":
        widths = initial_enhancer_arrays("gaussian", SETTINGS, 0)
        attack.content["arrays"] = arrays_to_record(widths)

    # Execute
    with pytest.raises(SiteTaskError, match="dp-required"):
        send(attack, site)

    # Assert
    assert egress_entries(site)[-1]["verdict"] == "error"
    assert _did_no_work(site)


@pytest.mark.parametrize("kind", ["query.enhance_evaluate", "query.enhance_components"])
def test_a_dp_statistics_site_refuses_exact_enhancement_statistics(
    tmp_path: Path, cache_dir: Path, kind: str
) -> None:
    privacy = {"budget": {"epsilon": 20.0}, "require_dp_statistics": True}
    site = write_site(tmp_path / "site", cache_dir, privacy=privacy)
    attack = (
        _components_message()
        if kind == "query.enhance_components"
        else _enhance_message(kind)
    )

    with pytest.raises(SiteTaskError, match="dp-statistics-required"):
        send(attack, site)

    assert _did_no_work(site)


# -- an allowed evaluation, end to end ----------------------------------------


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[SiteCache, Path]:
    """Site C: 12 test scans, 6 ca-positive, each with a 2x acquisition."""
    folder = tmp_path_factory.mktemp("site-c")
    return build_fast_scan_site(folder, site="C", scans=12), folder / FAST_SCANS


def _evaluate(site: Path) -> Message:
    return send(_enhance_message("query.enhance_evaluate", task="ca"), site)


@pytest.fixture(scope="module")
def evaluated(
    tmp_path_factory: pytest.TempPathFactory, phantom: tuple[SiteCache, Path]
) -> tuple[Path, Message]:
    """The phantom site, and its reply to an allowed evaluation.

    One patient's fast scan is not in the site's manifest (real fast scans
    are often taken for some patients only): level ``2x-real`` holds 11 scans.
    """
    cache, fast_manifest = phantom
    lines = fast_manifest.read_text().splitlines()
    partial = fast_manifest.with_name("fast_scans_partial.csv")
    partial.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    site = write_fast_scan_site(tmp_path_factory.mktemp("c"), cache, partial)
    # The site evaluates on every core; on a busy 2-core runner OpenMP's
    # spinning threads made this four times slower than one thread.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "cpu_count", lambda: 1)
        return site, _evaluate(site)


def test_an_allowed_evaluation_sends_only_aggregates(
    evaluated: tuple[Path, Message],
) -> None:
    site, reply = evaluated

    records = reply.content.metric_records

    # sums and counts per image set, histograms that add up to the counts
    assert not reply.content.array_records and not reply.content.config_records
    assert {name.split("-")[0] for name in records} == {
        "metrics",
        "agreement",
        "histograms",
    }
    for name, record in records.items():
        for key, value in record.items():
            if name.startswith("histograms-"):
                assert isinstance(value, list) and len(value) == EVALUATION["bins"]
                assert all(isinstance(count, int) for count in value)
            else:
                assert isinstance(value, int | float), f"{name}/{key}"
                assert math.isfinite(value), f"{name}/{key}"
    counts = records["metrics-gaussian-2x"]
    histograms = records["histograms-gaussian-2x"]
    assert (counts["n-pos"], counts["n-neg"]) == (6, 6)
    assert sum(histograms["positives"]) == 6 == sum(histograms["negatives"])
    assert egress_entries(site)[-1]["verdict"] == "passed"
    assert (site.parent / "work" / "enhance" / "study-1" / "scores.npz").is_file()


def test_components_answer_for_the_stored_scores_only(
    evaluated: tuple[Path, Message],
) -> None:
    # Prepare: the centre's pooled histograms (this site's own, here)
    site, evaluation = evaluated
    records = evaluation.content.metric_records
    pooled = {
        f"pooled-{name}": records[f"histograms-{name}"]
        for name in ("gaussian-2x", "standard-2x")
    }
    pairs = ["gaussian-2x|standard-2x", "dncnn-5x|standard-5x"]

    # Execute
    reply = send(
        message("query.enhance_components", "enhance", pooled, pairs=pairs), site
    )

    # Assert: one record of sums, for the pair the site evaluated
    (name,) = reply.content.metric_records
    assert name == "components-gaussian-2x-vs-standard-2x"
    sums = reply.content.metric_records[name]
    assert (sums["n-pos"], sums["n-neg"]) == (6, 6)
    assert all(not isinstance(v, list) for v in sums.values())


def test_image_sets_of_nearly_the_same_patients_cannot_be_differenced(
    evaluated: tuple[Path, Message],
) -> None:
    _, reply = evaluated
    records = reply.content.metric_records

    def patients(name: str) -> np.ndarray:
        record = records[f"histograms-{name}"]
        return np.array(record["positives"]) + np.array(record["negatives"])

    # two released histograms of standard scans may not differ by a small
    # cell (1 to threshold - 1 patients): the difference would be those
    # patients' labels and scores; here one scan lacks its real fast scan, so
    # the site leaves the real level out rather than release both
    assert "histograms-standard-2x" in records
    if "histograms-standard-2x-real" in records:
        left_out = int((patients("standard-2x") - patients("standard-2x-real")).sum())
        assert left_out == 0 or left_out >= 5
    else:
        assert not any(name.endswith("2x-real") for name in records)


def test_pooled_histograms_finer_than_the_policy_are_refused(
    evaluated: tuple[Path, Message],
) -> None:
    # Prepare: 100,000 bins, every one holding patients (so the site's own fit)
    site, _ = evaluated
    fine = MetricRecord({"positives": [5] * 100_000, "negatives": [5] * 100_000})
    pooled = {f"pooled-{name}": fine for name in ("gaussian-2x", "standard-2x")}
    attack = message(
        "query.enhance_components",
        "enhance",
        pooled,
        pairs=["gaussian-2x|standard-2x"],
    )

    # Execute, Assert
    with pytest.raises(SiteTaskError, match="too-many-bins"):
        send(attack, site)
