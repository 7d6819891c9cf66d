"""Generator sites answering the synthesize phase's queries, for phase tests."""

from __future__ import annotations

import numpy as np
from flwr.app import Error, Message, RecordDict
from phase_grid import Answer, content

from fedbone.federation.kinds import SYNTHETIC_RECORD
from fedbone.generative.pool import pool_digest


def released_images(node: int, count: int = 3) -> np.ndarray:
    """Distinct images (no two near-duplicates) a site releases."""
    rng = np.random.default_rng(node)
    return rng.random((count, 8, 4)).astype(np.float16)


class GeneratorSites:
    """Each node releases three images; recipients echo the pool's digest.

    ``blocked[(auditor, released_by)]`` lists the images the auditor blocks in
    a cross-audit; an auditor in ``failing`` cannot answer.
    """

    def __init__(
        self,
        blocked: dict[tuple[int, int], list[int]] | None = None,
        failing: tuple[int, ...] = (),
    ) -> None:
        self.blocked = blocked or {}
        self.failing = failing
        self.site_of = {1: "A", 2: "B"}

    def synthesize(self, message: Message) -> RecordDict:
        node = message.metadata.dst_node_id
        return content(
            arrays={
                SYNTHETIC_RECORD: {
                    "images": released_images(node),
                    "class-ids": np.array([0, 1, 2], dtype=np.int64),
                }
            },
            configs={
                "provenance": {"checkpoint-sha256": f"ckpt-{node}", "spacing-mm": 2.0}
            },
            metrics={"audit": {"n-generated": 5, "n-blocked": 2, "histogram": [1, 2]}},
        )

    def cross_audit(self, message: Message) -> RecordDict | Error:
        auditor = message.metadata.dst_node_id
        if auditor in self.failing:
            return Error(code=3, reason="SiteTaskError")
        released_by = message.content.config_records["config"]["released-by"]
        by_node = {site: node for node, site in self.site_of.items()}
        passed = np.ones(3, dtype=np.int64)
        passed[self.blocked.get((auditor, by_node[str(released_by)]), [])] = 0
        return content(
            arrays={"verdicts": {"passed": passed}},
            metrics={"audit": {"n-checked": 3}},
        )

    def receive_synthetic(self, message: Message) -> RecordDict:
        record = message.content.array_records[SYNTHETIC_RECORD]
        images, class_ids = record["images"].numpy(), record["class-ids"].numpy()
        return content(
            configs={"pool": {"pool-sha256": pool_digest(images, class_ids)}},
            metrics={"stored": {"n-stored": len(images)}},
        )

    def umap(self, message: Message) -> RecordDict:
        return content(metrics={"umap": {"density": [1.0, 2.0], "n": 3}})

    def answers(self) -> dict[str, Answer]:
        return {
            "query.synthesize": self.synthesize,
            "query.cross_audit": self.cross_audit,
            "query.receive_synthetic": self.receive_synthetic,
            "query.umap": self.umap,
        }
