"""A real site on a tiny cache, and a curious centre's messages to its ClientApp.

The adversarial tests attack through ``sites.app.app``: the real ClientApp with
its mods (egress guard first, replay store second), exactly as the SuperNode
calls it. A request the site refuses raises
:class:`~fedbone.federation.egress.guard.SiteTaskError` (what the centre sees
is an error reply naming only the problem codes) and leaves one ``error``
line in the site's egress log; a reply the guard refuses raises
:class:`~fedbone.federation.egress.guard.EgressRefused` and logs ``refused``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from federation_messages import context, request
from flwr.app import ConfigRecord, Context, Message, RecordDict

import sites.app as site_app
from fedbone.classifier.local import predict
from fedbone.data.cache import CacheRecord, CacheWriter, SiteCache, install_cache
from fedbone.data.spec import PreprocessSpec
from fedbone.federation.records import arrays_to_record
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.parameters import load_arrays, state_to_arrays
from fedbone.outcomes.cohort import first_scans

SPEC = PreprocessSpec(spacing_mm=8.0, canvas_height=32, canvas_width=16)
CLASSIFIER = ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.GROUP)
STUDY: dict[str, Any] = {
    "architecture": "small-cnn",
    "norm": "group",
    "in-channels": 1,
    "local-epochs": 1,
    "batch-size": 8,
    "lr": 0.01,
    "weight-decay": 0.0,
    "sampling": "balanced",
    "augment": False,
    "seed": 3,
}
VALIDATION = {"split": "test", "bins": 1000, "n-bootstrap": 10, "threshold": 0.5}
OUTCOMES = {
    "endpoints": ["death"],
    "split": "test",
    "resolution-days": 91.0,
    "horizon-days": 1820.0,
    "ties": "efron",
    "threshold": 0.5,
}


def write_cohort_cache(
    folder: Path, n_patients: int = 40, seed: int = 5, split: str = "test"
) -> Path:
    """A cache of one ``split`` scan per patient, half positive, all with follow-up."""
    rng = np.random.default_rng(seed)
    writer = CacheWriter(folder / ".partial", n_patients, SPEC.output_shape)
    for row in range(n_patients):
        record = CacheRecord(
            scan_id=f"s{row}",
            patient_id=f"P{row}",
            split=split,
            label_bm=row % 2,
            label_ca=None,
            perugini_grade=None,
            age=float(50 + row % 30),
            sex="M" if row % 3 else "F",
            study_date="20200101",
            tracer=None,
            scanner=None,
            endpoints={"death": (float(100 + 37 * row), row % 3 == 0)},
            scan_file=f"s{row}.dcm",
            row_number=row + 2,
        )
        image = rng.random(SPEC.output_shape, dtype=np.float32)
        image += 0.5 * (row % 2) * np.linspace(0, 1, SPEC.output_shape[-1])
        writer.append(image.astype(np.float32), record)
    writer.finish({"spec": dataclasses.asdict(SPEC)})
    install_cache(folder / ".partial", folder / "cache")
    return folder / "cache"


def write_site(
    folder: Path,
    cache_dir: Path,
    *,
    privacy: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
) -> Path:
    """Write a site YAML over ``cache_dir``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.csv").write_text("scan_id\n")
    settings = {
        "site": {"id": "hospital"},
        "data": {"manifest": "manifest.csv", "cache_dir": str(cache_dir)},
        "privacy": {"small_cell_threshold": 5, **(privacy or {})},
        "policy": policy or {},
        "egress_log": "logs/egress.jsonl",
        "work_dir": "work",
        "device": "cpu",
    }
    path = folder / "site.yaml"
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


def node(site_yaml: Path) -> Context:
    """The SuperNode context of the site."""
    return context(**{"site-config": str(site_yaml)})


def model(seed: int = 0) -> dict[str, np.ndarray]:
    """A small CNN's state, as the centre would send it."""
    torch.manual_seed(seed)
    return state_to_arrays(build_classifier(CLASSIFIER))


def scores(cache_dir: Path, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The model's scores of the outcome cohort's patients (what the site sees)."""
    cache = SiteCache.open(cache_dir)
    network = build_classifier(CLASSIFIER)
    load_arrays(network, arrays)
    return predict(network, cache, first_scans(cache, "test"), device="cpu")


def message(
    kind: str, phase: str, records: dict[str, Any] | None = None, **config: Any
) -> Message:
    """A message from the centre: the study settings plus ``config``."""
    values = {"phase": phase, "task": "bm", "run-name": "study-1", **STUDY, **config}
    content = RecordDict({"config": ConfigRecord(values), **(records or {})})
    return request(kind, content)


def validate_message(arrays: dict[str, np.ndarray], **config: Any) -> Message:
    """``query.validate`` of one model (``federated``)."""
    records = {"model-federated": arrays_to_record(arrays)}
    return message("query.validate", "validate", records, **{**VALIDATION, **config})


def outcomes_message(arrays: dict[str, np.ndarray], **config: Any) -> Message:
    """``query.outcomes`` of one model."""
    records = {"model-federated": arrays_to_record(arrays)}
    return message("query.outcomes", "outcomes", records, **{**OUTCOMES, **config})


def send(message_: Message, site_yaml: Path) -> Message:
    """Deliver ``message_`` to the site's real ClientApp, mods and all."""
    return site_app.app(message_, node(site_yaml))


def egress_entries(site_yaml: Path) -> list[dict[str, Any]]:
    """The site's egress log, oldest first."""
    path = site_yaml.parent / "logs" / "egress.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
