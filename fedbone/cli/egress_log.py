"""``fedbone site egress-log``: print and verify what left this hospital.

Meant for a hospital's IT or data-protection officer: it reads the site config
to find the egress log and the site secret, prints one row per outgoing reply
and a summary, and exits 1 when the log does not verify: a malformed line, a
broken hash chain (a line edited, deleted, inserted or moved), a MAC not made
with the site's secret, a head that does not match (a cut-off or deleted log),
or a site secret that cannot be read (see
:mod:`fedbone.federation.egress.log_audit`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from fedbone.errors import Problem

__all__ = ["add_egress_log_parser", "run_egress_log"]

_COLUMNS = ("time", "run", "phase", "kind", "bytes", "sha256", "verdict")


def add_egress_log_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``egress-log`` to the ``fedbone site`` subcommands."""
    p = sub.add_parser(
        "egress-log",
        help="print and verify the site's egress log (what left this hospital)",
        description=(
            "Print every reply this site sent, refused or failed (time, run, "
            "phase, kind, bytes, sha256, verdict) and a summary, and verify the "
            "log: every line well formed, verdicts known, times in order, hash "
            "chain, MACs (with the site secret) and head intact. Exits 1 if "
            "verification fails."
        ),
    )
    p.add_argument("--config", type=Path, required=True, help="site YAML")
    p.add_argument("--run", help="only this run (its name or id)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--tail", type=int, metavar="N", help="show only the last N entries")
    p.set_defaults(func=run_egress_log)


def run_egress_log(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the egress log named by ``args.config``; 1 if it does not verify.

    The log is verified with the site's secret (``privacy.secret``); a secret
    that is missing or unreadable is itself a problem.
    """
    from fedbone.config.site import load_site_config
    from fedbone.federation.egress.log_audit import EgressSummary, audit_egress_log
    from fedbone.security.errors import PkiError
    from fedbone.security.site_secret import SiteSecret, load_site_secret

    stream = sys.stdout if out is None else out
    config = load_site_config(args.config)
    path = config.egress_log
    secret: SiteSecret | None = None
    problems: list[Problem] = []
    try:
        secret = load_site_secret(config.secret_file)
    except PkiError as error:
        problems += error.problems
    audit = audit_egress_log(path, secret)
    entries = audit.entries
    problems += audit.problems
    if args.run is not None:
        entries = [e for e in entries if args.run in (e.run_name, str(e.run_id))]
    summary = EgressSummary.of(entries)
    shown = entries[-args.tail :] if args.tail else entries
    if args.json:
        document = {
            "log": str(path),
            "entries": [e.to_json() for e in shown],
            "summary": summary.to_json(),
            "verified": not problems,
            "keyed": audit.keyed,
            "problems": [
                {"code": p.code, "message": p.message, "where": p.where}
                for p in problems
            ],
        }
        stream.write(json.dumps(document, indent=2) + "\n")
        return 1 if problems else 0
    rows = [
        (
            e.time.isoformat(timespec="seconds"),
            e.run_name or str(e.run_id),
            e.phase,
            e.kind,
            str(e.n_bytes),
            e.sha256[:12],
            e.verdict,
        )
        for e in shown
    ]
    _write_table(stream, rows)
    stream.write(
        f"\n{path}: {summary.entries} entries, {summary.bytes_sent} bytes sent "
        f"({summary.bytes_total} logged)\n"
    )
    for title, counts in (
        ("verdict", summary.by_verdict),
        ("kind", summary.by_kind),
        ("phase", summary.by_phase),
        ("run", summary.by_run),
    ):
        listed = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        stream.write(f"  by {title}: {listed or '-'}\n")
    if problems:
        stream.write(f"NOT VERIFIED: {len(problems)} problem(s)\n")
        stream.writelines(f"  - {p}\n" for p in problems)
        return 1
    stream.write(
        "verified: every line well formed, times in order, hash chain, MACs "
        "(site secret) and head intact\n"
    )
    return 0


def _write_table(stream: TextIO, rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max([len(name), *(len(row[i]) for row in rows)])
        for i, name in enumerate(_COLUMNS)
    ]
    for row in [_COLUMNS, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        stream.write("  ".join(cells).rstrip() + "\n")
