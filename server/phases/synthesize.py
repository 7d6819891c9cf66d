"""Phase ``synthesize``: audited synthetic images pooled and redistributed.

Each generator site generates, curates with its own classifier and audits its
images against its own training scans; only released images (the egress guard
checks each against the site's release register) come back, with labels and
an audit summary. A federated generator is first sent to its sites (checked
against its digest there), and each site's releases are cross-audited by the
other GAN sites before anything is pooled (:mod:`server.phases.cross_audit`).
The server pools them with provenance, removes duplicates,
writes them as PNG and DICOM marked synthetic, and sends the pool to the sites
that train with it.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict

from fedbone.federation.kinds import PHASE_SYNTHESIZE, SYNTHETIC_RECORD
from fedbone.federation.records import arrays_to_record
from fedbone.federation.study_messages import (
    GAN_SETTINGS,
    SYNTHESIS_SETTINGS,
    metric_ints,
    settings_json,
)
from fedbone.generative.arrays import arrays_digest
from fedbone.generative.pool import SyntheticPool
from fedbone.generative.pool_assembly import (
    ReleasedBatch,
    SynthesisResults,
    assemble_pool,
)
from server.phases.cross_audit import cross_audit
from server.study_run import StudyError, StudyRun

__all__ = ["recipient_nodes", "run_synthesize"]

logger = logging.getLogger(__name__)


def recipient_nodes(run: StudyRun) -> list[int]:
    """Nodes that receive the pool: ``synthesis.recipients``, or train sites."""
    recipients = run.study.synthesis.recipients
    if not recipients:
        return run.train_nodes
    return run.nodes_of(recipients, what="synthesis.recipients")


def _audit_values(reply_audit: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in reply_audit.items():
        values[key] = list(value) if isinstance(value, list) else value
    return values


def run_synthesize(run: StudyRun) -> None:
    """Collect released images from every generator site; pool; redistribute."""
    if not run.generators:
        raise StudyError("phase synthesize needs generators: put phase gan before it")
    nodes = run.nodes_of(sorted(run.generators), what="the generator sites")
    config = run.config(
        PHASE_SYNTHESIZE,
        {
            SYNTHESIS_SETTINGS: settings_json(run.study.synthesis),
            "seed": run.study.seed,
        },
    )
    replies = run.query("synthesize", nodes, _synthesize_request(run, config))
    releases = [_release_of(run, reply) for reply in replies]
    cross = cross_audit(run, nodes, releases) if run.federated_generator else None
    assembly = assemble_pool(
        releases, run.generators, cross.keep if cross is not None else None
    )
    pool = assembly.pool
    results = SynthesisResults(audits=assembly.audits, pool_size=len(pool))
    if cross is not None:
        results.cross_audits = cross.audits
    run.synthesis_results = results
    if not len(pool):
        run.write_json("synthesis.json", results.to_json())
        raise StudyError("phase synthesize: no site released any synthetic image")
    pool.save(run.run_dir / "synthetic", spacing_mm=assembly.spacing_mm)
    run.pool = pool
    results.batches = pool.batches
    results.pool_sha256 = pool.digest()
    results.deliveries = _redistribute(run, pool)
    run.write_json("synthesis.json", results.to_json())
    _umap(run, nodes)


def _synthesize_request(run: StudyRun, config: ConfigRecord) -> RecordDict:
    """Return the synthesize request (with the generator, for a federated GAN)."""
    if run.federated_generator is None:
        return RecordDict({"config": config})
    number, arrays = run.federated_generator
    config["generator-sha256"] = arrays_digest(arrays)
    config["generator-round"] = number
    config[GAN_SETTINGS] = settings_json(run.study.gan)
    return RecordDict({"config": config, "generator": arrays_to_record(arrays)})


def _release_of(run: StudyRun, reply: Message) -> ReleasedBatch:
    record = reply.content.array_records[SYNTHETIC_RECORD]
    return ReleasedBatch(
        site=run.site_of(reply.metadata.src_node_id),
        images=record["images"].numpy(),
        class_ids=record["class-ids"].numpy(),
        provenance=dict(reply.content.config_records["provenance"]),
        audit=_audit_values(reply.content.metric_records["audit"]),
    )


def _umap(run: StudyRun, nodes: list[int]) -> None:
    """Ask generator sites for UMAP density grids of real vs released images."""
    config = run.config(
        PHASE_SYNTHESIZE,
        {GAN_SETTINGS: settings_json(run.study.gan), "seed": run.study.seed},
    )
    grids: dict[str, Any] = {}
    for reply in run.query("umap", nodes, RecordDict({"config": config})):
        site = run.site_of(reply.metadata.src_node_id)
        grids[site] = {
            key: list(value) if isinstance(value, list) else value
            for key, value in reply.content.metric_records["umap"].items()
        }
    run.results["umap"] = grids
    run.write_json("umap.json", grids)


def _redistribute(run: StudyRun, pool: SyntheticPool) -> dict[str, int]:
    """Send the pool to the recipient sites; return how many each stored."""
    images, class_ids = pool.arrays()
    digest = pool.digest()
    content = RecordDict(
        {
            "config": run.config(PHASE_SYNTHESIZE, {"pool-sha256": digest}),
            SYNTHETIC_RECORD: arrays_to_record(
                {"images": images, "class-ids": class_ids}
            ),
        }
    )
    delivered: dict[str, int] = {}
    for reply in run.query("receive_synthetic", recipient_nodes(run), content):
        site = run.site_of(reply.metadata.src_node_id)
        echoed = str(reply.content.config_records["pool"]["pool-sha256"])
        stored = metric_ints(reply.content.metric_records["stored"])
        if echoed != digest:
            logger.warning("%s stored a different pool (%s); ignored", site, echoed)
            continue
        delivered[site] = stored["n-stored"]
    missing = sorted({run.site_of(n) for n in recipient_nodes(run)} - set(delivered))
    if missing:
        logger.warning("pool not delivered to %s", ", ".join(missing))
    return delivered
