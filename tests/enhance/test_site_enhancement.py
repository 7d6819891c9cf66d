"""A site's phase ``enhance`` on a tiny phantom site with real 2x scans.

Training rounds return what the centre sent, trained (Gaussian: one filter
width per level); the evaluation returns per-image-set sums and histograms
only, keeps the per-scan scores, the examples and the trained enhancers in the
site's run folder, and later answers the DeLong component exchange from them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fast_scan_sites import FAST_SCANS, build_fast_scan_site, tiny_enhance_settings
from federation_messages import config, request
from flwr.app import MetricRecord, RecordDict

from fedbone.classifier.rounds import RoundResult
from fedbone.classifier.runtime import torch_threads
from fedbone.config.enhance import EnhanceSettings
from fedbone.data.cache import SiteCache
from fedbone.enhance.model_file import load_enhancer
from fedbone.enhance.site_enhance import EnhanceEvaluation, SiteEnhancement
from fedbone.enhance.specs import initial_enhancer_arrays
from fedbone.federation.egress.guard import EgressGuard
from fedbone.federation.egress.reply_rules import RequestSnapshot
from fedbone.federation.records import arrays_to_record, canonical_bytes
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.parameters import state_to_arrays
from fedbone.validation.histograms import ScoreHistograms
from fedbone.validation.pooled_roc import paired_component_sums

SETTINGS = tiny_enhance_settings()
CLASSIFIER = ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.GROUP)
RUN = "run-1"
BINS = 1000
#: Site B (12 scans, seed 3): 8 train scans, 3 of them ca-positive; 2 val scans.
TRAIN_SCANS, POSITIVES, NEGATIVES, VAL_SCANS = 8, 3, 5, 2
LEVELS = ("2x", "2x-real")
IMAGE_SETS = ("fast", "gaussian", "dncnn")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[SiteCache, Path]:
    folder = tmp_path_factory.mktemp("site-b")
    return build_fast_scan_site(folder), folder / FAST_SCANS


def _enhancement(
    site: tuple[SiteCache, Path], work_dir: Path, min_class: int = 1
) -> SiteEnhancement:
    return SiteEnhancement(
        site_id="B",
        work_dir=work_dir,
        fast_manifest=site[1],
        device="cpu",
        min_class=min_class,
    )


def _train(
    enhancement: SiteEnhancement,
    cache: SiteCache,
    method: str,
    arrays: dict[str, np.ndarray] | None = None,
    settings: EnhanceSettings = SETTINGS,
) -> RoundResult:
    return enhancement.train_round(
        cache,
        arrays or initial_enhancer_arrays(method, settings, 0),
        method=method,
        settings=settings,
        run_name=RUN,
        seed=0,
    )


def _classifier() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    return state_to_arrays(build_classifier(CLASSIFIER))


class Evaluated:
    """A site that trained both enhancers and evaluated them (once)."""

    def __init__(self, site: tuple[SiteCache, Path], work_dir: Path) -> None:
        self.cache = site[0]
        self.work_dir = work_dir
        self.enhancement = _enhancement(site, work_dir)
        self.enhancers = {
            method: _train(self.enhancement, self.cache, method).arrays
            for method in ("gaussian", "dncnn")
        }
        self.request = EnhanceEvaluation(
            task="ca",
            run_name=RUN,
            enhance=SETTINGS,
            enhancers=self.enhancers,
            classifier=CLASSIFIER,
            model=_classifier(),
            split="train",
            bins=BINS,
            seed=0,
        )
        self.records = self.enhancement.evaluate(self.cache, self.request)
        self.folder = work_dir / "enhance" / RUN


@pytest.fixture(scope="module")
def evaluated(
    site: tuple[SiteCache, Path], tmp_path_factory: pytest.TempPathFactory
) -> Evaluated:
    # module fixtures run outside conftest's one-thread fixture; OpenMP threads
    # spinning on a busy 2-core runner made this setup ten times slower
    with torch_threads(1):
        return Evaluated(site, tmp_path_factory.mktemp("work"))


# -- training rounds -------------------------------------------------------------


def test_a_gaussian_round_fits_one_width_per_level(
    site: tuple[SiteCache, Path], tmp_path: Path
) -> None:
    # Prepare
    settings = tiny_enhance_settings(levels=("2x", "3x"))

    # Execute
    result = _train(_enhancement(site, tmp_path), site[0], "gaussian", None, settings)

    # Assert
    assert set(result.arrays) == {"sigma-2x", "sigma-3x"}
    for width in result.arrays.values():
        assert width.shape == (1,) and width.dtype == np.float32
        assert math.isfinite(float(width[0])) and width[0] > 0
    assert result.metrics["num-examples"] == TRAIN_SCANS


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_dncnn_round_returns_the_received_keys_shapes_and_dtypes(
    site: tuple[SiteCache, Path], tmp_path: Path, dtype: type
) -> None:
    # Prepare: an aggregated model may come back in another float dtype
    sent = {
        key: value.astype(dtype)
        for key, value in initial_enhancer_arrays("dncnn", SETTINGS, 0).items()
    }

    # Execute
    result = _train(_enhancement(site, tmp_path), site[0], "dncnn", sent)

    # Assert
    assert {k: (v.shape, v.dtype) for k, v in result.arrays.items()} == {
        k: (v.shape, v.dtype) for k, v in sent.items()
    }
    assert not np.array_equal(result.arrays["noise.0.weight"], sent["noise.0.weight"])
    assert result.metrics["num-examples"] == TRAIN_SCANS
    assert math.isfinite(result.metrics["train-loss"])
    train = request(
        "train",
        RecordDict({"arrays": arrays_to_record(sent), "config": config("enhance")}),
    )
    reply = RecordDict(
        {
            "arrays": arrays_to_record(result.arrays),
            "metrics": MetricRecord(result.metrics),
        }
    )
    _, verdict = EgressGuard().screen(train, reply)
    assert verdict.passed


def test_a_round_is_scored_on_the_validation_pairs(
    evaluated: Evaluated,
) -> None:
    scores = evaluated.enhancement.evaluate_round(
        evaluated.cache,
        evaluated.enhancers["dncnn"],
        method="dncnn",
        settings=SETTINGS,
        seed=0,
    )

    assert set(scores) == {"num-examples", "val-loss", "val-psnr"}
    assert scores["num-examples"] == VAL_SCANS
    assert math.isfinite(scores["val-loss"]) and math.isfinite(scores["val-psnr"])


# -- the evaluation ----------------------------------------------------------------


def test_the_evaluation_names_every_image_set_of_every_level(
    evaluated: Evaluated,
) -> None:
    expected = set()
    for level in LEVELS:
        expected |= {f"metrics-standard-{level}", f"histograms-standard-{level}"}
        for image_set in IMAGE_SETS:
            expected |= {
                f"{kind}-{image_set}-{level}"
                for kind in ("metrics", "agreement", "histograms")
            }

    assert set(evaluated.records) == expected


def test_the_evaluation_releases_sums_and_histograms_only(
    evaluated: Evaluated,
) -> None:
    for name, record in evaluated.records.items():
        for key, value in record.items():
            if name.startswith("histograms-"):
                assert isinstance(value, list) and len(value) == BINS
                assert all(type(count) is int and count >= 0 for count in value)
            else:
                assert type(value) in (int, float), f"{name}/{key}"
        if name.startswith("histograms-"):
            counts = evaluated.records[name.replace("histograms-", "metrics-", 1)]
            assert sum(record["positives"]) == counts["n-pos"] == POSITIVES
            assert sum(record["negatives"]) == counts["n-neg"] == NEGATIVES
        if name.startswith("agreement-"):
            assert record["n"] == record["n-pos"] == POSITIVES


def test_the_evaluation_passes_the_egress_guard_unchanged(
    evaluated: Evaluated,
) -> None:
    request = RequestSnapshot(
        "query.enhance_evaluate", 1, RUN, "enhance", {}, frozenset()
    )
    reply = RecordDict(
        {name: MetricRecord(values) for name, values in evaluated.records.items()}
    )

    screened, verdict = EgressGuard(small_cell_threshold=1).screen(request, reply)

    assert verdict.suppressed == ()
    assert canonical_bytes(screened) == canonical_bytes(reply)


def test_quality_sums_are_of_the_scans_evaluated(evaluated: Evaluated) -> None:
    for name, record in evaluated.records.items():
        if not name.startswith("metrics-") or "standard" in name:
            continue
        n = record["n"]
        assert n == record["n-pos"] + record["n-neg"] == TRAIN_SCANS
        for measure in ("psnr", "ssim", "ms-ssim", "perceptual"):
            total, squares = record[f"sum-{measure}"], record[f"sumsq-{measure}"]
            assert math.isfinite(total) and squares >= total**2 / n - 1e-9
        assert math.isfinite(record["fd"]) and record["fd"] >= 0


def test_per_scan_scores_and_examples_stay_in_the_run_folder(
    evaluated: Evaluated,
) -> None:
    stored = np.load(evaluated.folder / "scores.npz")

    for level in LEVELS:
        assert stored[f"labels-{level}"].tolist().count(1) == POSITIVES
        for image_set in ("standard", *IMAGE_SETS):
            scores = stored[f"scores-{image_set}-{level}"]
            assert scores.shape == (TRAIN_SCANS,)
            assert ((scores >= 0) & (scores <= 1)).all()
    examples = sorted((evaluated.folder / "examples").glob("*.png"))
    assert len(examples) == SETTINGS.examples * len(LEVELS)
    assert (evaluated.folder / "examples" / "README.txt").is_file()


def test_the_trained_enhancers_are_installed_for_use_at_the_site(
    evaluated: Evaluated,
) -> None:
    installed = sorted(p.name for p in evaluated.folder.glob("*.enhancer.npz"))

    model = load_enhancer(evaluated.folder / "dncnn.enhancer.npz")

    assert installed == ["dncnn.enhancer.npz"]  # the Gaussian needs no file
    assert (model.spec.method, model.spec.width) == ("dncnn", SETTINGS.width)
    assert model.spec.blocks == SETTINGS.dncnn_depth
    assert model.levels == ("2x",) and model.speeds == (2.0, 2.0)
    assert model.canvas == evaluated.cache.spec.output_shape
    assert model.spacing_mm == evaluated.cache.spec.spacing_mm
    assert model.study == RUN
    sent = evaluated.enhancers["dncnn"]
    assert set(model.arrays) == set(sent)
    for key, value in sent.items():
        np.testing.assert_array_equal(model.arrays[key], value)


def test_a_level_with_a_small_class_is_not_evaluated(
    site: tuple[SiteCache, Path], evaluated: Evaluated
) -> None:
    # Prepare: a site that wants 5 scans of each class (3 positives here)
    enhancement = _enhancement(site, evaluated.work_dir, min_class=POSITIVES + 1)
    request = dataclasses.replace(evaluated.request, run_name="run-2")

    # Execute
    records = enhancement.evaluate(site[0], request)

    # Assert
    assert records == {}
    stored = np.load(evaluated.work_dir / "enhance" / "run-2" / "scores.npz")
    assert list(stored) == []


# -- the DeLong component exchange ---------------------------------------------


def _pooled(evaluated: Evaluated) -> dict[str, ScoreHistograms]:
    """The centre's pooled histograms: this site's own, as the only site."""
    return {
        name.removeprefix("histograms-"): ScoreHistograms.from_dict(values)
        for name, values in evaluated.records.items()
        if name.startswith("histograms-")
    }


def test_components_are_the_sums_of_the_stored_scores(evaluated: Evaluated) -> None:
    # Prepare
    pooled = _pooled(evaluated)
    pairs = [
        (f"{m}-{level}", f"standard-{level}") for level in LEVELS for m in IMAGE_SETS
    ]

    # Execute
    records = evaluated.enhancement.components(run_name=RUN, pooled=pooled, pairs=pairs)

    # Assert
    assert set(records) == {f"components-{a}-vs-{b}" for a, b in pairs}
    stored = np.load(evaluated.folder / "scores.npz")
    for a, b in pairs:
        level = b.removeprefix("standard-")
        expected = paired_component_sums(
            stored[f"labels-{level}"],
            stored[f"scores-{a}"],
            stored[f"scores-{b}"],
            pooled[a],
            pooled[b],
        )
        assert records[f"components-{a}-vs-{b}"] == expected.to_dict()
        assert all(not isinstance(v, list) for v in expected.to_dict().values())


def test_components_skip_pairs_the_site_did_not_evaluate(
    evaluated: Evaluated,
) -> None:
    pooled = _pooled(evaluated)
    pairs = [("dncnn-3x", "standard-3x"), ("dncnn-2x", "standard-2x")]

    records = evaluated.enhancement.components(
        run_name=RUN,
        pooled={k: v for k, v in pooled.items() if k != "standard-2x"},
        pairs=pairs,
    )

    assert records == {}


@pytest.mark.parametrize(("real", "levels"), [(False, 3), (True, 4)])
def test_real_pairs_join_the_training_pairs_only_when_asked(
    site: tuple[SiteCache, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    real: bool,
    levels: int,
) -> None:
    # Prepare: record what the network would be trained on
    seen: dict[str, int] = {}

    def capture(spec, arrays, inputs, targets, **kwargs):  # type: ignore[no-untyped-def]
        seen["pairs"] = len(inputs)
        return RoundResult(dict(arrays), {"train-loss": 0.0}, None)

    monkeypatch.setattr("fedbone.enhance.site_enhance.train_enhancer", capture)
    settings = dataclasses.replace(
        SETTINGS, levels=("2x", "3x", "300k"), train_on_real_pairs=real
    )
    cache = site[0]
    n_train = len(cache.indices("train"))

    # Execute
    _train(_enhancement(site, tmp_path), cache, "dncnn", settings=settings)

    # Assert: three thinned levels of every training scan, plus the real 2x
    # acquisitions of those scans when asked
    assert seen["pairs"] == levels * n_train


def _scripted_encoder(path: Path) -> str:
    """Save a tiny TorchScript feature network; return its sha256."""
    from fedbone.models.weights import file_sha256

    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()
    )
    torch.jit.save(torch.jit.script(network), str(path))
    return file_sha256(path)


def test_a_site_approved_torchscript_file_gives_the_perceptual_loss(
    site: tuple[SiteCache, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the study names the file by sha256; the site lists the file
    from fedbone.enhance.perceptual import TorchScriptPerceptual

    sha256 = _scripted_encoder(tmp_path / "vgg.pt")
    asked: list[str] = []

    def approved(wanted: str) -> Path:
        asked.append(wanted)
        return tmp_path / "vgg.pt"

    used: dict[str, object] = {}

    def capture(spec, arrays, inputs, targets, *, perceptual, **kwargs):  # type: ignore[no-untyped-def]
        used["perceptual"] = perceptual
        used["features"] = perceptual(torch.from_numpy(inputs[:2, None, :32, :16]))
        return RoundResult(dict(arrays), {"train-loss": 0.0}, None)

    monkeypatch.setattr("fedbone.enhance.site_enhance.train_enhancer", capture)
    enhancement = _enhancement(site, tmp_path / "work")
    enhancement.encoder_file = approved
    settings = dataclasses.replace(SETTINGS, perceptual_encoder_sha256=sha256)

    # Execute
    _train(enhancement, site[0], "rrdbnet", settings=settings)

    # Assert
    assert asked == [sha256]
    assert isinstance(used["perceptual"], TorchScriptPerceptual)
    (features,) = used["features"]  # type: ignore[misc]
    assert features.shape == (2, 16)


def test_a_perceptual_file_the_site_did_not_list_is_refused(
    site: tuple[SiteCache, Path], tmp_path: Path
) -> None:
    # Prepare: a site whose policy lists another file
    from fedbone.errors import Problem
    from fedbone.site.policy import PolicyRefused

    def refuse(wanted: str) -> Path:
        raise PolicyRefused("site B", [Problem("encoder-not-approved", wanted)])

    enhancement = _enhancement(site, tmp_path / "work")
    enhancement.encoder_file = refuse
    settings = dataclasses.replace(SETTINGS, perceptual_encoder_sha256="a" * 64)

    # Execute, Assert: refused before any training
    with pytest.raises(PolicyRefused, match="encoder-not-approved"):
        _train(enhancement, site[0], "rrdbnet", settings=settings)
