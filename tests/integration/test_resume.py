"""The centre dies during a study and resumes: no round and no site's work repeated.

The first run is stopped in the middle of federated round 2, after the sites
have trained and replied but before the server checkpoints the round (as if
the centre's process had been killed). The resumed run must finish the study,
number rounds 1..3 exactly once per site, and get round 2 from the sites'
stored replies instead of training again.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tiny_study import write_tiny_study

from fedbone.config.study import load_study_config
from server.phases import train as train_phase
from server.simulation import simulate_study
from server.study_run import StudyError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = 3


def _dying_after_replies(real: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap the per-round checkpoint so the centre 'dies' in round 2."""

    def wrapped(
        run: Any, name: str, done: int, best: Any = None
    ) -> Callable[[int, Any], None]:
        checkpoint = real(run, name, done, best)

        def dying(server_round: int, arrays: Any) -> None:
            if name == "federated" and done + server_round == 2:
                raise StudyError("the centre was killed (test)")
            checkpoint(server_round, arrays)

        return dying

    return wrapped


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume")
    path = write_tiny_study(
        root,
        "resume",
        ["census", "train", "validate", "report"],
        training={"rounds": ROUNDS},
        validation={"n_bootstrap": 50},
    )
    config = load_study_config(path)
    patch = pytest.MonkeyPatch()
    patch.setattr(
        train_phase,
        "_checkpoint_each_round",
        _dying_after_replies(train_phase._checkpoint_each_round),
    )
    try:
        with pytest.raises(StudyError, match="killed"):
            simulate_study(config)
    finally:
        patch.undo()
    (run_dir,) = list((root / "runs").iterdir())

    simulate_study(config, resume_dir=run_dir)

    return run_dir, root / "sites"


def test_the_resumed_study_finishes_with_every_round_once(
    resumed: tuple[Path, Path],
) -> None:
    run_dir, _ = resumed

    rounds = json.loads((run_dir / "rounds.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())

    trained = Counter(
        (r["site"], r["round"])
        for r in rounds
        if r["model"] == "federated" and r["kind"] == "train"
    )
    assert trained == {(s, k): 1 for s in "AB" for k in range(1, ROUNDS + 1)}
    assert "federated" in results["pooled"]


def test_the_round_in_flight_came_from_the_sites_stored_replies(
    resumed: tuple[Path, Path],
) -> None:
    run_dir, sites = resumed

    replays = {
        site: [
            json.loads(line)["kind"]
            for path in (sites / f"site-{site}" / "work").rglob("replays.jsonl")
            if path.parent.name == run_dir.name
            for line in path.read_text().splitlines()
        ]
        for site in "ABC"
    }

    assert replays == {"A": ["train"], "B": ["train"], "C": []}
