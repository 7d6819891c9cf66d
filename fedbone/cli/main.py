"""The ``fedbone`` command.

Subcommands stay thin: parse arguments, call the library, report. Heavy imports
happen inside each command so ``fedbone --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from fedbone import __version__
from fedbone.cli.deployment import add_server_parser, add_site_parser
from fedbone.cli.enhance import add_enhance_parser
from fedbone.cli.explain import add_explain_parser
from fedbone.cli.pki import add_pki_parser
from fedbone.cli.reader_study import add_reader_study_parser
from fedbone.errors import FedboneError

__all__ = ["build_parser", "main"]

COMMANDS_GROUP = "fedbone.commands"
"""Entry-point group of subcommands other installed packages add (``simulate``,
from the ``server`` package: fedbone itself never imports ``server``)."""

logger = logging.getLogger("fedbone")

PHANTOM_SITES = ["A", "B", "C", "D", "E", "F"]


def _add_phantom(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write phantom whole-body bone scans as NM DICOM, with a manifest",
        description=(
            "Write realistic phantom cohorts (two-frame NM DICOM, Poisson counts) "
            "replicating the site profiles A-F of Haberl et al., one folder per "
            "site with dicom/, manifest.csv, previews/ and site.yaml."
        ),
    )
    p.add_argument("--out", type=Path, required=True, help="parent folder")
    p.add_argument(
        "--site",
        action="append",
        choices=PHANTOM_SITES,
        help="site profile (repeatable; default: all of A-F)",
    )
    p.add_argument("--scale", type=float, default=0.01, help="fraction of real size")
    p.add_argument("--min-scans", type=int, default=20, help="floor per site")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes")
    p.add_argument(
        "--outcomes",
        action="store_true",
        default=None,
        help="simulate follow-up at every site (default: only where the "
        "profile has outcomes, i.e. D)",
    )
    p.add_argument("--previews", type=int, default=4, help="PNG previews per site")
    p.add_argument(
        "--profile",
        choices=["cpu", "paper"],
        default="paper",
        help="preprocessing written into each site.yaml",
    )
    p.set_defaults(func=_cmd_phantom)


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="validate a site's manifest, preprocess every scan, write the cache",
        description=(
            "Validate the manifest against the files (all errors reported "
            "together), read and preprocess every scan, and write the site cache. "
            "A bad scan is quarantined with its reason; the rest proceeds."
        ),
    )
    p.add_argument("--config", type=Path, required=True, help="site YAML")
    p.add_argument("--force", action="store_true", help="rebuild a valid cache")
    p.add_argument("--workers", type=int, help="override data.workers")
    p.set_defaults(func=_cmd_prepare)


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="show what a DICOM file holds, as fedbone reads it",
        description=(
            "Read a DICOM file the way prepare does and print its views, spacing, "
            "counts and metadata, or every problem that keeps it out."
        ),
    )
    p.add_argument("path", type=Path)
    p.add_argument(
        "--default-view",
        choices=["anterior", "posterior"],
        help="view for single-view files that do not say (as in the site config)",
    )
    p.add_argument("--png", type=Path, help="write the views side by side as PNG")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_inspect)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``fedbone`` command."""
    parser = argparse.ArgumentParser(
        prog="fedbone",
        description=(
            "Federated multi-centre training for bone scintigraphy: no raw scan "
            "leaves its hospital."
        ),
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_phantom(sub)
    _add_prepare(sub)
    _add_inspect(sub)
    add_enhance_parser(sub)
    add_explain_parser(sub)
    add_reader_study_parser(sub)
    add_pki_parser(sub)
    add_server_parser(sub)
    add_site_parser(sub)
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        entry.load()(sub)
    return parser


def _cmd_phantom(args: argparse.Namespace) -> int:
    from fedbone.config.profiles import profile_spec
    from fedbone.simulation.phantom_sites import write_phantom_federation

    sites = write_phantom_federation(
        args.out,
        sites=args.site or PHANTOM_SITES,
        spec=profile_spec(args.profile),
        scale=args.scale,
        min_scans=args.min_scans,
        seed=args.seed,
        workers=args.workers,
        outcomes=args.outcomes,
        previews=args.previews,
        progress=_show_progress(),
    )
    for site in sites:
        logger.info(
            "site %s: %d scans; config %s", site.site_id, site.n_scans, site.config_path
        )
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from fedbone.config.site import load_site_config
    from fedbone.data.prepare import prepare_site_cache

    config = load_site_config(args.config)
    report = prepare_site_cache(
        config.data.manifest,
        config.data.cache_dir,
        config.preprocessing,
        default_view=config.data.default_view,
        workers=args.workers or config.data.workers,
        force=args.force,
        progress=_show_progress(),
    )
    _log_prepare_report(config.site_id, report)
    return 0


def _log_prepare_report(site_id: str, report: Any) -> None:
    verb = "reused" if report.reused else "prepared"
    logger.info(
        "site %s: %s %d of %d scans (%d quarantined) in %.1f s -> %s",
        site_id,
        verb,
        report.n_cached,
        report.n_rows,
        report.n_quarantined,
        report.elapsed_s,
        report.cache_dir,
    )
    for entry in report.quarantine:
        logger.warning("site %s: quarantined %s", site_id, entry)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from fedbone.data.dicom_read import read_nm_scan
    from fedbone.data.inspect import describe_scan, write_views_png
    from fedbone.data.scan import View

    default_view = View(args.default_view) if args.default_view else None
    scan = read_nm_scan(args.path, default_view=default_view)
    description = describe_scan(scan)
    if args.json:
        sys.stdout.write(json.dumps(description, indent=2, default=str) + "\n")
    else:
        for key, value in description.items():
            sys.stdout.write(f"{key:>24}: {value}\n")
    if args.png:
        write_views_png(scan, args.png)
        logger.info("wrote %s", args.png)
    return 0


def _show_progress() -> bool:
    return sys.stderr.isatty()


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    if verbose > 1:
        level = logging.DEBUG
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    # Flower logs through its own handler; do not print its lines twice.
    logging.getLogger("flwr").propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fedbone`` command; return the process exit code.

    Typed fedbone errors (bad config, bad manifest, unreadable DICOM) are shown
    with every problem listed and exit with status 2, without a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args))
    except FedboneError as exc:
        logger.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
