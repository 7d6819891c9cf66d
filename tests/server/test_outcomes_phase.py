"""The outcomes phase over a grid of in-memory sites: exact, guarded, explained.

The grid answers each request the way ``sites/app.py`` does (same library
calls, same records) and runs every reply through the egress rules, so the
server's results can be compared with lifelines on the pooled records.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
from flwr.app import Message, Metadata, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test

from fedbone.config.outcomes import OutcomeSettings
from fedbone.config.study import StudyConfig
from fedbone.errors import Problem
from fedbone.federation.egress.reply_rules import RequestSnapshot, reply_problems
from fedbone.federation.outcome_messages import (
    COX_DERIVATIVES_RECORD,
    OutcomeRequest,
    derivatives_record,
    outcome_reply,
)
from fedbone.federation.study_messages import config_floats, config_str
from fedbone.outcomes.cohort import OutcomeCohort
from fedbone.outcomes.planted import plan_outcome_cohorts
from fedbone.outcomes.release import cohort_derivatives, group_labels, outcome_release
from fedbone.outcomes.survival_grid import TimeGrid
from server.phases.outcomes import run_outcomes
from server.study_run import SiteInfo, StudyError, StudyRun

MIN_PATIENTS = 5
RESOLUTION = 91.0


class CohortGrid:
    """Sites holding scored outcome cohorts; replies are screened by the guard."""

    def __init__(self, cohorts: dict[int, OutcomeCohort]) -> None:
        self.cohorts = cohorts
        self.problems: list[Problem] = []
        self.kinds: list[str] = []

    def _answer(self, message: Message) -> RecordDict:
        node = message.metadata.dst_node_id
        config = message.content.config_records["config"]
        cohort = self.cohorts[node]
        if message.metadata.message_type == "query.outcomes":
            request = OutcomeRequest.from_config(config)
            releases = outcome_release(
                cohort,
                request.endpoints,
                TimeGrid(request.resolution_days, request.horizon_days),
                min_patients=MIN_PATIENTS,
                ties=request.ties,
            )
            return RecordDict(dict(outcome_reply(releases)))
        derivatives = cohort_derivatives(
            cohort,
            config_str(config, "endpoint"),
            config_str(config, "cox-model"),
            config_floats(config, "beta"),
            ties=config_str(config, "ties"),
            min_patients=MIN_PATIENTS,
        )
        return RecordDict({COX_DERIVATIVES_RECORD: derivatives_record(derivatives)})

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for message in messages:
            content = self._answer(message)
            self.kinds.append(message.metadata.message_type)
            self.problems += reply_problems(
                RequestSnapshot.of(message),
                content,
                min_histogram_bins=1000,
                small_cell_threshold=MIN_PATIENTS,
            )
            metadata = Metadata(
                run_id=1,
                message_id="reply",
                src_node_id=message.metadata.dst_node_id,
                dst_node_id=0,
                reply_to_message_id="",
                group_id="",
                created_at=time.time(),
                ttl=60.0,
                message_type=message.metadata.message_type,
            )
            replies.append(Message(content=content, metadata=metadata))
        return replies


def _cohort(site: str, seed: int) -> OutcomeCohort:
    (planned,) = plan_outcome_cohorts("bm", [site], seed=seed, scale=0.2, min_scans=60)
    return OutcomeCohort(
        predicted=planned.group.astype(np.int64),
        age=planned.age.astype(np.float64),
        male=planned.male.astype(np.float64),
        times={"death": planned.time_days["death"].astype(np.float64)},
        events={"death": planned.event["death"].astype(np.float64)},
    )


def _tiny(cohort: OutcomeCohort, n: int) -> OutcomeCohort:
    """The first ``n`` patients of a cohort (too few positives to release)."""
    negatives = np.flatnonzero(cohort.predicted == 0)[: n - 2]
    positives = np.flatnonzero(cohort.predicted == 1)[:2]
    keep = np.sort(np.concatenate([negatives, positives]))
    return OutcomeCohort(
        predicted=cohort.predicted[keep],
        age=cohort.age[keep],
        male=cohort.male[keep],
        times={"death": cohort.times["death"][keep]},
        events={"death": cohort.events["death"][keep]},
    )


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[StudyRun, CohortGrid, dict[str, OutcomeCohort]]:
    cohorts = {
        "A": _cohort("A", 0),
        "B": _tiny(_cohort("A", 5), 40),
        "D": _cohort("D", 0),
    }
    nodes = {1: "A", 2: "B", 3: "D"}
    grid = CohortGrid({node: cohorts[site] for node, site in nodes.items()})
    study = StudyConfig(
        name="outcomes",
        phases=("census", "train", "outcomes"),
        outcomes=OutcomeSettings(resolution_days=RESOLUTION),
    )
    run = StudyRun(
        study=study,
        grid=cast(Grid, grid),
        run_dir=tmp_path_factory.mktemp("run"),
        sites={
            node: SiteInfo(node, site, "train", {}, "", "", "")
            for node, site in nodes.items()
        },
        models={"federated": {"w": np.zeros(1, dtype=np.float32)}},
    )

    # The module-scoped run needs the server's identity before the per-test
    # fixture of conftest.py sets it.
    previous = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        run_outcomes(run)
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = previous

    return run, grid, cohorts


def _pooled(cohorts: dict[str, OutcomeCohort], sites: list[str], model: str) -> Any:
    frames = []
    for site in sites:
        t, d, x = cohorts[site].records("death", model)
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
        frame["time"], frame["event"], frame["site"] = t, d, site
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_every_reply_passed_the_egress_rules(
    finished: tuple[StudyRun, CohortGrid, dict[str, OutcomeCohort]],
) -> None:
    _, grid, _ = finished

    assert grid.problems == []
    assert grid.kinds.count("query.outcomes") == 3
    assert grid.kinds.count("query.outcome_cox") >= 4  # Newton rounds, 2 strata


def test_a_site_with_a_small_group_is_left_out_and_says_why(
    finished: tuple[StudyRun, CohortGrid, dict[str, OutcomeCohort]],
) -> None:
    run, _, _ = finished

    status = {
        (row["site"], row["part"]): row["status"]
        for row in run.results["outcomes"]["site-status"]
    }
    death = run.results["outcomes"]["endpoints"]["death"]

    assert status[("B", "counts")] == "small-group"
    assert status[("B", "crude-stratum")] == "small-group"
    assert status[("A", "counts")] == "included"
    assert death["sites"] == ["A", "D"]
    assert death["cox"]["crude"]["sites"] == ["A", "D"]


@pytest.mark.parametrize("model", ["crude", "adjusted"])
def test_stratified_cox_equals_lifelines_on_the_pooled_records(
    finished: tuple[StudyRun, CohortGrid, dict[str, OutcomeCohort]], model: str
) -> None:
    run, _, cohorts = finished
    pooled = _pooled(cohorts, ["A", "D"], model)
    reference = CoxPHFitter().fit(
        pooled,
        "time",
        "event",
        strata=["site"],
        fit_options={"precision": 1e-12, "step_size": 0.5},
    )

    federated = run.results["outcomes"]["endpoints"]["death"]["cox"][model]
    coefficients = [row["coef"] for row in federated["coefficients"]]

    np.testing.assert_allclose(coefficients, reference.params_.to_numpy(), atol=1e-6)
    assert federated["converged"]
    assert federated["n-patients"] == len(pooled)


def test_kaplan_meier_and_logrank_equal_lifelines_on_rounded_records(
    finished: tuple[StudyRun, CohortGrid, dict[str, OutcomeCohort]],
) -> None:
    run, _, cohorts = finished
    grid = TimeGrid(RESOLUTION, 3650.0)
    pooled = _pooled(cohorts, ["A", "D"], "crude")
    intervals, events = grid.round_records(pooled["time"], pooled["event"])
    times = intervals * RESOLUTION
    groups = group_labels(pooled["x0"].to_numpy())
    death = run.results["outcomes"]["endpoints"]["death"]

    positive = groups == "positive"
    reference = KaplanMeierFitter().fit(times[positive], events[positive])
    expected = reference.survival_function_at_times(death["km"]["time-days"])
    test = logrank_test(
        times[positive], times[~positive], events[positive], events[~positive]
    )

    np.testing.assert_allclose(
        death["km"]["positive"]["survival"], expected.to_numpy(), atol=1e-9
    )
    assert death["logrank"]["statistic"] == pytest.approx(test.test_statistic, abs=1e-9)
    assert death["groups"]["positive"]["n-patients"] == int(positive.sum())


def test_planted_hazard_ratio_is_inside_the_adjusted_interval(
    finished: tuple[StudyRun, CohortGrid, dict[str, OutcomeCohort]],
) -> None:
    run, _, _ = finished

    adjusted = run.results["outcomes"]["endpoints"]["death"]["cox"]["adjusted"]
    predicted = adjusted["coefficients"][0]

    assert predicted["covariate"] == "predicted-positive"
    assert predicted["hr-low"] <= 3.76 <= predicted["hr-high"]
    assert (Path(run.run_dir) / "outcomes.json").is_file()


def test_a_model_the_study_did_not_train_is_refused(tmp_path: Path) -> None:
    study = StudyConfig(
        name="outcomes",
        phases=("census", "train", "outcomes"),
        outcomes=OutcomeSettings(model="pooled"),
    )
    run = StudyRun(
        study=study,
        grid=cast(Grid, CohortGrid({})),
        run_dir=tmp_path,
        models={"federated": {}},
    )

    with pytest.raises(StudyError, match=r"outcomes\.model is 'pooled'"):
        run_outcomes(run)
