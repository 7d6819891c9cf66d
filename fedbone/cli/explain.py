"""``fedbone explain``: Grad-CAM overlays of a site's own scans, kept at the site.

A site runs it with the study's model file (e.g. the run's
``models/federated.npz``) to see where the classifier looked on its scans.
The overlays and an ``index.html`` go to ``<work_dir>/explain/<model>/`` (or
``--out``); nothing is sent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

__all__ = ["add_explain_parser", "run_explain"]


def add_explain_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``explain`` to the ``fedbone`` subcommands."""
    p = sub.add_parser(
        "explain",
        help="Grad-CAM overlays of this site's scans (site-local, never sent)",
        description=(
            "Write Grad-CAM overlays (positive class, MONAI GradCAM on the last "
            "convolution) of the site's own scans into a site-local folder, "
            "with an index.html."
        ),
    )
    p.add_argument("config", type=Path, help="the site's site.yaml")
    p.add_argument("--model", type=Path, required=True, help="model arrays (.npz)")
    p.add_argument("--sha256", help="the model file's expected sha256")
    p.add_argument("--architecture", default="small-cnn")
    p.add_argument("--norm", default="batch")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--task", choices=("bm", "ca"), default="bm")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument(
        "--out", type=Path, help="folder (default <work_dir>/explain/<model>)"
    )
    p.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Write the overlays; return the exit status (typed errors raise)."""
    import numpy as np

    from fedbone.config.site import load_site_config
    from fedbone.data.cache import SiteCache
    from fedbone.errors import Problem
    from fedbone.explain.site_overlays import write_site_overlays
    from fedbone.models import ClassifierSpec
    from fedbone.models.weights import file_sha256
    from fedbone.safe_names import check_safe_name
    from fedbone.validation.errors import EvaluationError

    stream = sys.stdout if out is None else out
    config = load_site_config(args.config)
    if args.sha256 and file_sha256(args.model) != args.sha256.lower():
        raise EvaluationError(
            str(args.model),
            [Problem("sha256-mismatch", "the model file's sha256 differs; not loaded")],
        )
    with np.load(args.model, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    spec = ClassifierSpec(
        architecture=args.architecture, norm=args.norm, in_channels=args.in_channels
    )
    name = check_safe_name(args.model.stem, "model file name")
    target = args.out or config.work_dir / "explain" / name
    cache = SiteCache.open(config.data.cache_dir)
    written = write_site_overlays(
        cache,
        spec,
        arrays,
        target,
        task=args.task,
        split=args.split,
        limit=args.limit,
    )
    stream.write(f"wrote {len(written)} overlay(s) and index.html to {target}\n")
    return 0
