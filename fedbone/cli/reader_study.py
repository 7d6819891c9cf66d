"""``fedbone reader-study``: a blinded real-vs-synthetic reading, kept at the site.

``make`` draws a randomised set of the site's real scans and the synthetic
images released at this site into ``<work_dir>/reader-study/<run>-<task>/``
(or ``--out``); ``serve`` shows it to readers on a local web page and keeps
each reader's answers in the set folder; ``score`` writes ``results.json``
and ``results.md`` beside them. Nothing is sent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

__all__ = ["add_reader_study_parser", "run_make", "run_score", "run_serve"]


def add_reader_study_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``reader-study`` (``make``, ``serve``, ``score``) to the subcommands."""
    p = sub.add_parser(
        "reader-study",
        help="blinded real-vs-synthetic reader study (site-local, never sent)",
        description=(
            "Make a blinded, randomised set of real and synthetic images, "
            "serve it to readers on a local web page, and score the answers. "
            "Everything stays in a site-local folder."
        ),
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    make = actions.add_parser("make", help="draw and write a reader set")
    make.add_argument("config", type=Path, help="the site's site.yaml")
    make.add_argument("--run-name", required=True, help="run whose release is shown")
    make.add_argument("--task", choices=("bm", "ca"), default="bm")
    make.add_argument("--n", type=int, default=50, help="images per group")
    make.add_argument("--split", choices=("train", "val", "test"), default="test")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument(
        "--allow-fewer",
        action="store_true",
        help="take every image of a short group (recorded in key.json)",
    )
    make.add_argument(
        "--out",
        type=Path,
        help="set folder (default <work_dir>/reader-study/<run-name>-<task>)",
    )
    make.set_defaults(func=run_make)

    serve = actions.add_parser("serve", help="serve the reading page")
    serve.add_argument("folder", type=Path, help="the set folder")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (readers on other machines)",
    )
    serve.set_defaults(func=run_serve)

    score = actions.add_parser("score", help="score the answers")
    score.add_argument("folder", type=Path, help="the set folder")
    score.set_defaults(func=run_score)


def run_make(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Write the set; return the exit status (typed errors raise)."""
    from fedbone.config.site import load_site_config
    from fedbone.reader_study.kit import reader_set_from_site
    from fedbone.safe_names import check_safe_name, run_folder

    stream = sys.stdout if out is None else out
    check_safe_name(args.run_name, "run-name")
    target = args.out or run_folder(
        load_site_config(args.config).work_dir,
        "reader-study",
        f"{args.run_name}-{args.task}",
    )
    made = reader_set_from_site(
        args.config,
        args.run_name,
        args.task,
        target,
        split=args.split,
        n_per_group=args.n,
        seed=args.seed,
        allow_fewer=args.allow_fewer,
    )
    counts = ", ".join(f"{n} {group}" for group, n in made.counts.items())
    stream.write(f"wrote {len(made.item_ids)} images ({counts}) to {target}\n")
    for group, available in made.short_groups.items():
        stream.write(f"note: {group} had only {available} image(s); all taken\n")
    return 0


def run_serve(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Serve the page until interrupted; return the exit status."""
    from fedbone.reader_study.web import make_server

    stream = sys.stdout if out is None else out
    server = make_server(
        args.folder, host=args.host, port=args.port, allow_remote=args.allow_remote
    )
    stream.write(
        f"reader study: {len(server.item_ids)} images at {server.url} "
        "(answers go to the set's answers/; Ctrl-C stops)\n"
    )
    stream.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        stream.write("stopped\n")
    finally:
        server.server_close()
    return 0


def run_score(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Score the set; return the exit status (typed errors raise)."""
    from fedbone.reader_study.results import RESULTS_JSON, RESULTS_MD, write_results

    stream = sys.stdout if out is None else out
    results = write_results(args.folder)
    pooled = results.pooled.detection.accuracy
    stream.write(
        f"{len(results.readers)} reader(s), pooled real/synthetic accuracy "
        f"{pooled.value:.3f} ({pooled.low:.3f}-{pooled.high:.3f}), Fleiss' kappa "
        f"{results.kappa_call:.3f}; wrote {RESULTS_JSON} and {RESULTS_MD} to "
        f"{args.folder}\n"
    )
    for reader, missing in results.incomplete.items():
        stream.write(f"note: {reader} left {missing} image(s) unanswered\n")
    return 0
