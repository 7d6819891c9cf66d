"""The report's Grad-CAM section on synthetic images (no site's scan)."""

from pathlib import Path

import numpy as np
import torch

from fedbone.classifier.synthetic_mix import SyntheticSet
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.parameters import state_to_arrays
from fedbone.reporting import StudyReport, write_study_report

SPEC = ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.BATCH)


def _pool() -> SyntheticSet:
    rng = np.random.default_rng(0)
    return SyntheticSet(
        images=rng.random((8, 64, 32)).astype(np.float16),
        class_ids=np.array([0, 1, 2, 3, 2, 0, 3, 1]),
        source=np.array(["A/round-1/x"] * 8),
    )


def test_the_report_shows_grad_cam_on_synthetic_images(tmp_path: Path) -> None:
    # Prepare
    torch.manual_seed(0)
    arrays = state_to_arrays(build_classifier(SPEC))
    report = StudyReport(
        title="t",
        config={"task": "bm"},
        synthetic_pool=_pool(),
        classifier=(SPEC, arrays),
    )

    # Execute
    page = write_study_report(report, tmp_path).read_text()

    # Assert
    assert "Grad-CAM on synthetic images" in page
    assert (tmp_path / "gradcam_synthetic.png").is_file()


def test_no_pool_no_grad_cam_section(tmp_path: Path) -> None:
    torch.manual_seed(0)
    report = StudyReport(
        title="t",
        config={"task": "bm"},
        classifier=(SPEC, state_to_arrays(build_classifier(SPEC))),
    )

    page = write_study_report(report, tmp_path).read_text()

    assert "Grad-CAM" not in page
