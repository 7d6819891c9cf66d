"""The state of one study run, shared by its phases.

The run keeps what phases hand each other (who the sites are, the trained
models, per-round and validation results), talks to the sites over Flower's
Grid and writes everything under its run folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedbone.config.study import StudyConfig
from fedbone.errors import FedboneError
from fedbone.generative.gan_results import GanResults
from fedbone.generative.pool import SyntheticPool
from fedbone.generative.pool_assembly import SynthesisResults
from fedbone.privacy.approvals import APPROVAL_SHA256_KEY
from fedbone.validation.study_results import ValidationResults

__all__ = ["SiteInfo", "StudyError", "StudyRun"]

logger = logging.getLogger(__name__)


#: A census cell sent as -1 (suppressed) holds fewer than the site's
#: small-cell threshold, which a site config caps at 1000.
SUPPRESSED_BOUND = 1000


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
    enhancers: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """Phase enhance's federated enhancers by method (not classifiers)."""
    generators: dict[str, dict[str, str]] = field(default_factory=dict)
    pool: SyntheticPool | None = None
    federated_generator: tuple[int, dict[str, np.ndarray]] | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    """Study-wide tables (``site-errors``, ``privacy``...) and ``outcomes``."""
    gan_results: GanResults | None = None
    synthesis_results: SynthesisResults | None = None
    validation_results: ValidationResults | None = None
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

    def max_examples(self, nodes: Iterable[int]) -> dict[int, int]:
        """Most training examples each node may report in a round.

        Its census ``n-train`` (a suppressed small cell counts as the largest
        threshold a site may set) plus the synthetic pool it may have been
        sent. A ``num-examples`` above this, which would inflate the site's
        weight in the average, rejects the update.
        """
        pool = len(self.pool) if self.pool is not None else 0
        bounds = {}
        for node in nodes:
            info = self.sites.get(node)
            if info is None or "n-train" not in info.counts:
                continue  # no census figure to bound it with
            n_train = info.counts["n-train"]
            bounds[node] = (n_train if n_train >= 0 else SUPPRESSED_BOUND) + pool
        return bounds

    def site_of(self, node_id: int) -> str:
        """Return the site id of a node (``node-<id>`` before the census)."""
        info = self.sites.get(node_id)
        return info.site_id if info else f"node-{node_id}"

    def config(
        self, phase: str, extra: Mapping[str, Any] | None = None
    ) -> ConfigRecord:
        """Return the ConfigRecord every message of ``phase`` carries.

        It names the run, its phase and the study (``study-sha256``, and
        ``study-approval-sha256``, which a site that requires approval looks
        up in its approvals list before any work).
        """
        model = self.study.model
        values: dict[str, Any] = {
            "phase": phase,
            "task": self.study.task,
            "run-name": self.run_dir.name,
            "study-sha256": self.study.sha256(),
            APPROVAL_SHA256_KEY: self.study.approval_sha256(),
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

        Error replies (a site refused or failed) are logged, kept under
        ``results["site-errors"]`` and left out.

        Parameters
        ----------
        action
            The query, e.g. ``census`` for ``query.census``.
        node_ids
            The sites' nodes to ask.
        content
            The request every node receives.
        timeout
            Seconds to wait for the replies.
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
