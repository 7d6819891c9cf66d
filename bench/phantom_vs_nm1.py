"""Side-by-side look at a real whole-body bone scan and phantom scans.

Run with ``.venv/bin/python bench/phantom_vs_nm1.py [--seed N]``. Writes
``bench/results/phantom_vs_nm1.png``: the NEMA NM1 anterior scan (pydicom-data)
| phantom anterior | phantom posterior | a metastasis-positive phantom | a
Perugini grade 3 phantom (anterior views unless stated), each clipped at its
99.5th percentile as in preprocessing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pydicom
from pydicom.data import get_testdata_file

from fedbone.data.phantom.profiles import SITE_PROFILES
from fedbone.data.phantom.synthesize import synthesize_views
from fedbone.data.scan import View

RESULTS = Path(__file__).resolve().parent / "results"


def clipped(counts: np.ndarray) -> np.ndarray:
    top = max(float(np.percentile(counts, 99.5)), 1.0)
    return np.clip(counts.astype(np.float32) / top, 0.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    nm1 = pydicom.dcmread(get_testdata_file("JPEG-LL.dcm"))
    scanner = SITE_PROFILES["A"].scanners[0]

    def render(seed: int, **kwargs: int) -> dict[View, np.ndarray]:
        rng = np.random.default_rng(seed)
        return synthesize_views(
            rng, scanner=scanner, female=False, age_years=70.0, **kwargs
        ).views

    normal = render(args.seed)
    metastatic = render(args.seed + 1, n_metastases=8)
    amyloid = render(args.seed + 2, perugini_grade=3)
    panels = [
        ("NEMA NM1 (real, anterior)", nm1.pixel_array),
        ("phantom anterior", normal[View.ANTERIOR]),
        ("phantom posterior", normal[View.POSTERIOR]),
        ("phantom BM+ (8 lesions)", metastatic[View.ANTERIOR]),
        ("phantom Perugini 3", amyloid[View.ANTERIOR]),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 10.5))
    for axis, (title, counts) in zip(axes, panels, strict=True):
        axis.imshow(clipped(counts), cmap="gray", vmin=0, vmax=1, aspect="equal")
        axis.set_title(title, fontsize=9)
        axis.set_axis_off()
    figure.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure.savefig(RESULTS / "phantom_vs_nm1.png", dpi=110)


if __name__ == "__main__":
    main()
