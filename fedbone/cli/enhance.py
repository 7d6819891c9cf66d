"""``fedbone enhance``: turn a site's fast scans into standard-looking DICOM.

A site runs it on its own fast (low-count) whole-body scans with an enhancer
the study trained (``<work_dir>/enhance/<run>/<method>.enhancer.npz``, kept
after phase enhance). Each scan is written as a new DICOM series of the same
patient and study, marked as derived and naming the enhancer's sha256 (see
:mod:`fedbone.enhance.dicom_enhance`). A folder is enhanced file by file: the
files that cannot be are listed with their reasons and the command exits 1;
settings that rule out every file (a foreign speed, a wrong sha256) exit 2
before any file is read.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from fedbone.enhance.dicom_enhance import EnhancedScan, RefusedFile

__all__ = ["add_enhance_parser", "parse_speed", "run_enhance"]


def parse_speed(text: str) -> float:
    """Read a speed given as ``2``, ``2.5`` or ``2x``.

    Raises
    ------
    argparse.ArgumentTypeError
        For anything that is not a finite number above 0.
    """
    raw = text.strip().lower().removesuffix("x")
    try:
        speed = float(raw)
    except ValueError:
        speed = math.nan
    if not (math.isfinite(speed) and speed > 0):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a speed; give standard counts over fast counts "
            "as a number above 0, such as 2 or 2x"
        )
    return speed


def add_enhance_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``enhance`` to the ``fedbone`` subcommands."""
    p = sub.add_parser(
        "enhance",
        help="enhance fast whole-body scans (DICOM) with a trained enhancer",
        description=(
            "Enhance a fast whole-body NM scan, or every *.dcm of a folder, "
            "with an enhancer file the study trained, and write each as a new "
            "DICOM series of the same patient and study (DERIVED\\SECONDARY, "
            "naming the method, the enhancer's sha256 and the speed). Refused: "
            "a speed the enhancer was not trained for and scans whose pixels "
            "are more than 10% coarser than the enhancer's. In a folder, a "
            "file that cannot be enhanced is listed with its reasons and the "
            "others are written (exit status 1)."
        ),
    )
    p.add_argument("input", type=Path, help="a DICOM file or a folder of *.dcm")
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        metavar="FILE",
        help="the enhancer file (<work_dir>/enhance/<run>/<method>.enhancer.npz)",
    )
    p.add_argument(
        "--sha256",
        metavar="HEX",
        help="the enhancer file's expected sha256 (checked before it is read)",
    )
    p.add_argument(
        "--speed",
        type=parse_speed,
        required=True,
        metavar="K",
        help="standard counts over fast counts of the scans, e.g. 2 or 2x",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="PATH",
        help="output file (or existing folder) for a file; output folder for a folder",
    )
    p.add_argument(
        "--default-view",
        choices=["anterior", "posterior"],
        help="view for single-view files that do not say (as in the site config)",
    )
    p.add_argument(
        "--recursive", action="store_true", help="also enhance the subfolders"
    )
    p.set_defaults(func=run_enhance)


def _written_line(result: EnhancedScan) -> str:
    views = "+".join(view.value for view in result.views)
    clipped = (
        f", {result.clipped_pixels} pixels clipped at 65535"
        if result.clipped_pixels
        else ""
    )
    return (
        f"wrote {result.output} ({views}, {result.spacing_mm:g} mm, speed "
        f"{result.speed:g}x, {result.fast_counts:,.0f} -> "
        f"{result.standard_counts:,.0f} counts{clipped})"
    )


def _refused_lines(result: RefusedFile) -> list[str]:
    return [f"refused {result.path}:", *(f"  - {p}" for p in result.problems)]


def run_enhance(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Enhance ``args.input`` (a file or a folder); return the exit status.

    Parameters
    ----------
    args
        ``input``, ``model``, ``sha256``, ``speed``, ``out``,
        ``default_view`` and ``recursive`` as parsed.
    out
        Where to print (standard output by default).

    Returns
    -------
    int
        0 when every file was written, 1 when a file of a folder was refused.
        Typed errors (a refused file, a wrong sha256) propagate to ``main``,
        which prints them and exits 2.
    """
    from fedbone.data.scan import View
    from fedbone.enhance.dicom_enhance import (
        EnhancedScan,
        enhance_dicom,
        enhance_dicom_folder,
    )
    from fedbone.enhance.model_file import load_enhancer
    from fedbone.models.weights import file_sha256

    stream = sys.stdout if out is None else out
    model = load_enhancer(args.model, sha256=args.sha256)
    sha256 = args.sha256.strip().lower() if args.sha256 else file_sha256(args.model)
    default_view = View(args.default_view) if args.default_view else None
    method = model.spec.method
    if not args.input.is_dir():
        target = args.out / args.input.name if args.out.is_dir() else args.out
        result = enhance_dicom(
            args.input,
            model,
            speed=args.speed,
            model_sha256=sha256,
            out=target,
            default_view=default_view,
        )
        print(_written_line(result), file=stream)
        print(f"enhanced 1 scan with {method} (sha256 {sha256[:12]})", file=stream)
        return 0

    def report(result: EnhancedScan | RefusedFile) -> None:
        lines = (
            [_written_line(result)]
            if isinstance(result, EnhancedScan)
            else _refused_lines(result)
        )
        stream.writelines(line + "\n" for line in lines)
        stream.flush()

    outcome = enhance_dicom_folder(
        args.input,
        model,
        speed=args.speed,
        model_sha256=sha256,
        out=args.out,
        default_view=default_view,
        recursive=args.recursive,
        report=report,
    )
    total = len(outcome.written) + len(outcome.refused)
    print(
        f"enhanced {len(outcome.written)} of {total} scans with {method} "
        f"(sha256 {sha256[:12]}) into {args.out}; {len(outcome.refused)} refused",
        file=stream,
    )
    return 1 if outcome.refused else 0
