"""The site's memory of the outcome groupings it released: no differencing.

The centre chooses the model and the threshold of ``query.outcomes``. Two
requests whose groupings differ by one patient would each pass every
small-cell rule, yet the difference of their Kaplan-Meier counts is that
patient's follow-up and event. So the site keeps, in its work folder, every
grouping it released (the predicted-positive bits of its cohort, which never
leave) and before releasing a new one checks, per endpoint, against every
earlier grouping of the same cohort:

- a grouping identical to an earlier one is released again (nothing new);
- one that differs from an earlier one in fewer than ``min_difference``
  patients with follow-up for that endpoint is refused (``outcome-differencing``);
- at most ``max_releases`` distinct groupings are released per cohort and
  endpoint (``outcome-release-limit``), which bounds what any combination of
  them can single out.

A cohort is identified by the site's cache and the split; a re-prepared cache
is a new cohort (documented in ``docs/threat-model.md``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedbone.errors import Problem
from fedbone.file_lock import exclusive_lock
from fedbone.outcomes.cohort import OutcomeCohort
from fedbone.privacy.errors import PrivacyError

__all__ = ["OutcomeReleaseLog", "cohort_key"]


def cohort_key(cache_hash: str, split: str) -> str:
    """Identify an outcome cohort: the site's cache content and the split."""
    return hashlib.sha256(f"{cache_hash}|{split}".encode()).hexdigest()[:32]


def _bits(values: npt.NDArray[np.int64]) -> str:
    return np.packbits(values.astype(np.uint8)).tobytes().hex()


def _unbits(text: str, n: int) -> npt.NDArray[np.bool_]:
    packed = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
    return np.unpackbits(packed)[:n].astype(bool)


@dataclass(frozen=True)
class _Release:
    endpoint: str
    n_patients: int
    grouping: str


class OutcomeReleaseLog:
    """Append-only JSON lines of released outcome groupings (site-local only).

    Parameters
    ----------
    path
        The log file in the site's work folder.
    max_releases
        Most distinct groupings per cohort and endpoint.
    min_difference
        Fewest patients (with follow-up) in which two groupings must differ.
    """

    def __init__(self, path: Path, *, max_releases: int, min_difference: int) -> None:
        self.path = Path(path)
        self.max_releases = max_releases
        self.min_difference = max(2, min_difference)

    def _releases(self, cohort: str) -> list[_Release]:
        if not self.path.exists():
            return []
        releases = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            if entry.get("cohort") == cohort:
                releases.append(
                    _Release(
                        str(entry["endpoint"]),
                        int(entry["n-patients"]),
                        str(entry["grouping"]),
                    )
                )
        return releases

    def _locked(self) -> AbstractContextManager[None]:
        return exclusive_lock(self.path.with_name(self.path.name + ".lock"))

    def admit(
        self,
        cohort: str,
        outcomes: OutcomeCohort,
        endpoints: Sequence[str],
        *,
        run: str,
    ) -> None:
        """Record the grouping about to be released, or refuse it.

        Parameters
        ----------
        cohort
            :func:`cohort_key` of the cohort.
        outcomes
            The scored cohort whose groups are about to be released.
        endpoints
            The endpoints whose aggregates the reply will carry.
        run
            The run asking (for the site's own record).

        Raises
        ------
        PrivacyError
            ``outcome-differencing`` or ``outcome-release-limit``; nothing is
            recorded then, and nothing of the cohort may leave.
        """
        grouping = _bits(outcomes.predicted)
        n = outcomes.n_patients
        with self._locked():
            earlier = self._releases(cohort)
            problems: list[Problem] = []
            new: list[str] = []
            for endpoint in endpoints:
                followed = np.isfinite(outcomes.times.get(endpoint, np.full(n, np.nan)))
                same = [r for r in earlier if r.endpoint == endpoint]
                if any(r.grouping == grouping and r.n_patients == n for r in same):
                    continue
                problems += self._problems(endpoint, same, outcomes, followed)
                new.append(endpoint)
            if problems:
                raise PrivacyError("outcome release", problems)
            self._append(cohort, run, grouping, n, new)

    def _problems(
        self,
        endpoint: str,
        same: list[_Release],
        outcomes: OutcomeCohort,
        followed: npt.NDArray[np.bool_],
    ) -> list[Problem]:
        mine = outcomes.predicted.astype(bool)
        for release in same:
            if release.n_patients != outcomes.n_patients:
                continue
            theirs = _unbits(release.grouping, release.n_patients)
            moved = int(np.count_nonzero((mine != theirs) & followed))
            if moved < self.min_difference:
                return [
                    Problem(
                        "outcome-differencing",
                        f"these groups differ from groups this site already "
                        f"released for {endpoint!r} in fewer than "
                        f"{self.min_difference} patients; their difference would "
                        "single those patients out",
                        endpoint,
                    )
                ]
        distinct = {r.grouping for r in same}
        if len(distinct) >= self.max_releases:
            return [
                Problem(
                    "outcome-release-limit",
                    f"this site has released {len(distinct)} different groupings "
                    f"of this cohort for {endpoint!r}, its policy's most "
                    "(policy.max_outcome_releases)",
                    endpoint,
                )
            ]
        return []

    def _append(
        self, cohort: str, run: str, grouping: str, n: int, endpoints: list[str]
    ) -> None:
        time = datetime.now(UTC).isoformat(timespec="seconds")
        lines = "".join(
            json.dumps(
                {
                    "time": time,
                    "run": run,
                    "cohort": cohort,
                    "endpoint": endpoint,
                    "n-patients": n,
                    "grouping": grouping,
                }
            )
            + "\n"
            for endpoint in endpoints
        )
        if not lines:
            return
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, lines.encode("utf-8"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
