"""Run a study: the configured phases, in order, over Flower's Grid.

Each phase is a function of :class:`StudyRun` registered in
:mod:`server.phases`; adding a phase is one module and one registry line. The
run keeps what phases hand each other (who the sites are, the trained models,
per-round and validation results) and writes everything under its run folder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedbone.errors import FedboneError
from fedbone.study_config import StudyConfig
from fedbone.synthetic.pool import SyntheticPool

__all__ = ["SiteInfo", "StudyError", "StudyRun", "run_study"]

logger = logging.getLogger(__name__)


class StudyError(FedboneError):
    """The study cannot go on (inconsistent federation, too few sites...)."""


@dataclass
class SiteInfo:
    """A connected site as its census described it."""

    node_id: int
    site_id: str
    role: str
    counts: dict[str, int]
    spec_fingerprint: str
    cache_hash: str
    config_sha256: str
    canvas: str = ""


@dataclass
class StudyRun:
    """State shared by the phases of one study run."""

    study: StudyConfig
    grid: Grid
    run_dir: Path
    sim_site_configs: list[str] | None = None
    sites: dict[int, SiteInfo] = field(default_factory=dict)
    models: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    generators: dict[str, dict[str, str]] = field(default_factory=dict)
    pool: SyntheticPool | None = None
    federated_generator: tuple[int, dict[str, np.ndarray]] | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    phases_done: list[str] = field(default_factory=list)
    progress: dict[str, tuple[int, dict[str, np.ndarray]]] = field(default_factory=dict)
    """Per model in training: completed rounds and the global arrays then."""

    @property
    def train_nodes(self) -> list[int]:
        """Nodes of sites with role ``train``, in site-id order."""
        return [
            s.node_id
            for s in sorted(self.sites.values(), key=lambda s: s.site_id)
            if s.role == "train"
        ]

    @property
    def all_nodes(self) -> list[int]:
        """Every site's node, in site-id order."""
        return [s.node_id for s in sorted(self.sites.values(), key=lambda s: s.site_id)]

    def nodes_of(self, site_ids: Iterable[str], *, what: str) -> list[int]:
        """Return the nodes of ``site_ids``; raise if one is not in the study.

        Parameters
        ----------
        site_ids
            Site ids as the study config names them.
        what
            The setting that named them, for the error message.
        """
        by_site = {info.site_id: node for node, info in self.sites.items()}
        unknown = [s for s in site_ids if s not in by_site]
        if unknown:
            raise StudyError(
                f"{what} names {unknown}, which did not answer the census "
                f"(connected sites: {', '.join(sorted(by_site)) or 'none'})"
            )
        return [by_site[s] for s in site_ids]

    def site_of(self, node_id: int) -> str:
        """Return the site id of a node (``node-<id>`` before the census)."""
        info = self.sites.get(node_id)
        return info.site_id if info else f"node-{node_id}"

    def config(
        self, phase: str, extra: Mapping[str, Any] | None = None
    ) -> ConfigRecord:
        """Return the ConfigRecord every message of ``phase`` carries."""
        model = self.study.model
        values: dict[str, Any] = {
            "phase": phase,
            "task": self.study.task,
            "run-name": self.run_dir.name,
            "study-sha256": self.study.sha256(),
            "architecture": model.architecture,
            "norm": model.norm,
            "in-channels": model.in_channels,
        }
        if self.sim_site_configs is not None:
            values["sim-site-configs"] = list(self.sim_site_configs)
        values.update(extra or {})
        return ConfigRecord(values)

    def query(
        self,
        action: str,
        node_ids: Iterable[int],
        content: RecordDict,
        *,
        timeout: float = 3600,
    ) -> list[Message]:
        """Send ``query.<action>`` with ``content`` to nodes; return good replies.

        Error replies (a site refused or failed) are logged and left out.
        """
        messages = [
            Message(content=content, dst_node_id=node, message_type=f"query.{action}")
            for node in node_ids
        ]
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        good = []
        for reply in replies:
            site = self.site_of(reply.metadata.src_node_id)
            if reply.has_error():
                logger.warning("%s: %s failed: %s", site, action, reply.error.reason)
                self.results.setdefault("site-errors", []).append(
                    {"site": site, "action": action, "reason": reply.error.reason}
                )
            else:
                good.append(reply)
        return good

    def write_json(self, relative: str, data: Any) -> Path:
        """Write ``data`` as JSON under the run folder."""
        path = self.run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def run_study(
    grid: Grid,
    study: StudyConfig,
    run_dir: Path,
    *,
    sim_site_configs: list[str] | None = None,
    resume: bool = False,
) -> StudyRun:
    """Run every configured phase of ``study`` and return the run's state.

    Parameters
    ----------
    grid
        Flower's grid (simulation or deployment).
    study
        The validated study config.
    run_dir
        Folder for everything the run writes.
    sim_site_configs
        Simulation only: site YAML paths in partition order.
    resume
        Continue the run in ``run_dir`` from its checkpoint (the centre was
        restarted): completed phases and training rounds are not repeated.
    """
    from server.checkpoint import load_checkpoint, restore, save_checkpoint
    from server.phases import PHASE_FUNCTIONS

    run_dir.mkdir(parents=True, exist_ok=True)
    run = StudyRun(study, grid, run_dir, sim_site_configs)
    state = load_checkpoint(run_dir) if resume else None
    if resume and state is None:
        logger.warning("%s has no checkpoint; starting the study afresh", run_dir)
    if state is not None:
        restore(run, state)
    else:
        run.write_json("config.resolved.json", study.to_json())
    for phase in study.phases:
        # The census always runs: reconnected sites may have new node ids.
        if phase in run.phases_done and phase != "census":
            logger.info("phase %s: done before the restart; skipped", phase)
            continue
        started = time.perf_counter()
        logger.info("phase %s: starting", phase)
        PHASE_FUNCTIONS[phase](run)
        run.timings[phase] = time.perf_counter() - started
        logger.info("phase %s: done in %.1f s", phase, run.timings[phase])
        if phase not in run.phases_done:
            run.phases_done.append(phase)
        save_checkpoint(run)
    return run
