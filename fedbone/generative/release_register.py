"""The site's register of synthetic images its audit released.

The audit decides which synthetic images may leave; the egress guard must not
take the handler's word for it. So the synthesis step writes the digest of
every released image to this append-only register (next to the egress log, in
the site's work folder), and the guard lets an image out only if its digest is
in the register. A handler bug or a tampered reply that slips an unaudited
image, or a real scan, into a ``query.synthesize`` reply is refused.

Digests are over the float16 pixels as sent (shape, then bytes), so exactly the
array the guard sees is what was audited.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ReleaseRegister", "image_digest", "wire_images"]


def wire_images(images: np.ndarray) -> np.ndarray:
    """Return images as they travel: ``(N, H, W)`` C-contiguous float16."""
    return np.ascontiguousarray(np.asarray(images, dtype=np.float16))


def image_digest(image: np.ndarray) -> str:
    """Return the sha256 of one image as it travels (float16, shape included)."""
    pixels = wire_images(image)
    digest = hashlib.sha256(repr(pixels.shape).encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


class ReleaseRegister:
    """Append-only JSON-lines register of released synthetic images.

    Parameters
    ----------
    path
        The register file; created on first release.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def record(
        self,
        images: np.ndarray,
        *,
        run_name: str,
        checkpoint_sha256: str,
        audit: Mapping[str, Any],
    ) -> list[str]:
        """Register ``images`` as released by an audit; return their digests.

        Parameters
        ----------
        images
            ``(N, H, W)`` released images (converted to float16 as sent).
        run_name
            The study run they were made for.
        checkpoint_sha256
            The generator checkpoint that made them.
        audit
            Scalar audit figures kept with the batch (counts, thresholds).
        """
        digests = [image_digest(image) for image in wire_images(images)]
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run-name": run_name,
            "checkpoint-sha256": checkpoint_sha256,
            "verdict": "released",
            "audit": {k: v for k, v in audit.items() if not isinstance(v, list)},
            "digests": digests,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return digests

    def released_digests(self) -> set[str]:
        """Every digest the register holds (empty when it does not exist yet)."""
        if not self.path.is_file():
            return set()
        released: set[str] = set()
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                if entry.get("verdict") == "released":
                    released.update(entry["digests"])
        return released

    def unreleased(self, images: np.ndarray) -> np.ndarray:
        """Return the positions of ``images`` the register does not hold."""
        released = self.released_digests()
        return np.array(
            [
                i
                for i, image in enumerate(wire_images(images))
                if image_digest(image) not in released
            ],
            dtype=np.int64,
        )
