"""Phase ``gan``: conditional GANs trained where the scans are.

``local`` mode: each GAN site trains its own generator on its own scans, with
checkpoints and model selection by Fréchet distance on its held-out real scans;
only the selection figures and the checkpoint's sha256 come back (the
generator stays at the site, which synthesises and audits in phase
``synthesize``). Federated averaging of generator and discriminator is not
available yet; the study config refuses it.
"""

from __future__ import annotations

import logging

from flwr.app import RecordDict

from fedbone.federation.kinds import PHASE_GAN
from fedbone.federation.study_messages import metric_floats
from fedbone.federation.synthetic_messages import GAN_SETTINGS, settings_json
from server.phases.train import train_config
from server.study import StudyError, StudyRun

__all__ = ["gan_nodes", "run_gan"]

logger = logging.getLogger(__name__)


def gan_nodes(run: StudyRun) -> list[int]:
    """Nodes that train a GAN: ``gan.sites``, or every train site."""
    sites = run.study.gan.sites
    if not sites:
        return run.train_nodes
    return run.nodes_of(sites, what="gan.sites")


def run_gan(run: StudyRun) -> None:
    """Train the configured GANs; record each site's selected checkpoint."""
    settings = run.study.gan
    nodes = gan_nodes(run)
    config = train_config(run, PHASE_GAN, {GAN_SETTINGS: settings_json(settings)})
    replies = run.query("gan_train", nodes, RecordDict({"config": config}))
    results = {}
    for reply in replies:
        site = run.site_of(reply.metadata.src_node_id)
        metrics = metric_floats(reply.content.metric_records["metrics"])
        provenance = {
            key: str(value)
            for key, value in reply.content.config_records["provenance"].items()
        }
        run.generators[site] = provenance
        results[site] = {"metrics": metrics, "provenance": provenance}
        logger.info(
            "GAN at %s: best FD %.4g at step %d (checkpoint %s)",
            site,
            metrics.get("best-fd", float("nan")),
            int(metrics.get("best-step", -1)),
            provenance.get("checkpoint-sha256", "?")[:12],
        )
    run.results["gan"] = {"mode": settings.mode, "sites": results}
    run.write_json("gan.json", run.results["gan"])
    if not run.generators:
        raise StudyError("phase gan: no site trained a GAN (see site-errors)")
