"""Phase ``census``: find who is in the federation and check it is consistent."""

from __future__ import annotations

import logging
import time

from flwr.app import RecordDict
from flwr.serverapp import Grid

from fedbone.federation.study_messages import config_str, metric_ints
from server.study_run import SiteInfo, StudyError, StudyRun

__all__ = ["run_census", "wait_for_nodes"]

logger = logging.getLogger(__name__)

#: How long the census waits for the expected sites to connect.
CONNECT_TIMEOUT_S = 300.0


def wait_for_nodes(
    grid: Grid,
    expected: int,
    *,
    timeout_s: float = CONNECT_TIMEOUT_S,
    poll_s: float = 0.2,
) -> list[int]:
    """Return the connected node ids once ``expected`` are there or time is up.

    The ServerApp can start before the nodes have registered (the simulation
    runtime registers them in another thread; hospitals connect when they
    connect), so asking once would find an empty or partial federation.

    Parameters
    ----------
    grid
        Flower's grid.
    expected
        How many sites the study expects.
    timeout_s
        How long to wait for them.
    poll_s
        Seconds between two looks at the connected nodes.
    """
    deadline = time.monotonic() + timeout_s
    nodes = list(grid.get_node_ids())
    while len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(poll_s)
        nodes = list(grid.get_node_ids())
    if len(nodes) < expected:
        logger.warning(
            "census: %d of %d expected sites connected within %.0f s; going on "
            "with those",
            len(nodes),
            expected,
            timeout_s,
        )
    return nodes


def run_census(run: StudyRun) -> None:
    """Ask every connected site for its census and check the federation.

    Raises
    ------
    StudyError
        When sites preprocessed their scans differently, two nodes claim the
        same site id, or fewer train sites answered than the study needs.
    """
    if run.sim_site_configs is not None:
        expected = len(run.sim_site_configs)
    else:
        expected = run.study.training.min_train_sites
    nodes = wait_for_nodes(
        run.grid, expected, timeout_s=run.study.training.census_timeout_s
    )
    errors_before = len(run.results.get("site-errors", []))
    replies = run.query("census", nodes, RecordDict({"config": run.config("census")}))
    refusals = run.results.get("site-errors", [])[errors_before:]
    for reply in replies:
        site = reply.content.config_records["site"]
        counts = reply.content.metric_records["census"]
        run.sites[reply.metadata.src_node_id] = SiteInfo(
            node_id=reply.metadata.src_node_id,
            site_id=config_str(site, "site-id"),
            role=config_str(site, "role"),
            counts=metric_ints(counts),
            spec_fingerprint=config_str(site, "spec-fingerprint"),
            cache_hash=config_str(site, "cache-hash"),
            config_sha256=config_str(site, "config-sha256"),
            canvas=str(site.get("canvas", "")),
        )
    _check_federation(run, [e["reason"] for e in refusals])
    run.write_json(
        "census.json",
        [
            {
                "site": s.site_id,
                "role": s.role,
                "counts": s.counts,
                "spec-fingerprint": s.spec_fingerprint,
                "cache-hash": s.cache_hash,
            }
            for s in sorted(run.sites.values(), key=lambda s: s.site_id)
        ],
    )
    for info in sorted(run.sites.values(), key=lambda s: s.site_id):
        logger.info(
            "census: site %s (%s): %d train / %d val / %d test scans",
            info.site_id,
            info.role,
            info.counts.get("n-train", 0),
            info.counts.get("n-val", 0),
            info.counts.get("n-test", 0),
        )


def _check_federation(run: StudyRun, refusals: list[str]) -> None:
    """Raise naming every problem, and every site's refusal, if any is found.

    A refusal names its site (a refusing site has no census id yet) and why,
    e.g. ``site 'B' refused query.census ...: [study-not-approved] ...``.
    """
    problems = []
    if not run.sites:
        problems.append("no site answered the census")
    ids = [s.site_id for s in run.sites.values()]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        problems.append(f"several nodes claim site ids {duplicates}")
    fingerprints = {s.spec_fingerprint for s in run.sites.values()}
    if len(fingerprints) > 1:
        by_site = ", ".join(
            f"{s.site_id}={s.spec_fingerprint}" for s in run.sites.values()
        )
        problems.append(
            "sites preprocess scans differently (spec fingerprints "
            f"{by_site}); give every site the same preprocessing block"
        )
    needed = run.study.training.min_train_sites
    if "train" in run.study.phases and len(run.train_nodes) < needed:
        problems.append(
            f"{len(run.train_nodes)} train site(s) answered; the study needs "
            f"{needed} (training.min_train_sites)"
        )
    if problems:
        problems += [f"a site refused the census: {reason}" for reason in refusals]
        raise StudyError("the federation is not ready:\n  - " + "\n  - ".join(problems))
