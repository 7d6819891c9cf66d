import numpy as np
from flwr.app import Message, RecordDict
from server_messages import reply
from test_study_grid import _Replying

from fedbone.federation.records import array_signature, arrays_to_record
from server.study_grid import StudyGrid

GLOBAL = {
    "w": np.zeros((3, 2), np.float32),
    "b": np.zeros((3,), np.float32),
    "steps": np.zeros((), np.int64),
}
EXPECTED = array_signature(arrays_to_record(GLOBAL))


def moved(by: float, steps: int = 10) -> dict[str, np.ndarray]:
    """The global model after a local update of size ``by`` per weight."""
    return {
        "w": np.full((3, 2), by, np.float32),
        "b": np.full((3,), -by, np.float32),
        "steps": np.array(steps, np.int64),
    }


def requests(nodes: list[int]) -> list[Message]:
    """Train requests carrying the global model, as a strategy sends them."""
    content = RecordDict({"arrays": arrays_to_record(GLOBAL)})
    return [Message(content, dst_node_id=node, message_type="train") for node in nodes]


def round_with(updates: dict[int, dict[str, np.ndarray]]) -> tuple[list[int], dict]:
    """Run one screened round; return the kept nodes and node -> reject reason."""
    grid = StudyGrid(
        _Replying([reply(node, arrays, 5) for node, arrays in updates.items()]),
        list(updates),
        expected=EXPECTED,
    )
    kept = grid.send_and_receive(requests(list(updates)))
    return (
        [r.metadata.src_node_id for r in kept],
        {r.node_id: r.reason for r in grid.rejected},
    )


def test_nan_wrong_shape_and_a_100x_norm_are_rejected_and_logged() -> None:
    nan = {**moved(0.1), "w": np.full((3, 2), np.nan, np.float32)}
    wrong_shape = {**moved(0.1), "b": np.zeros((4,), np.float32)}
    updates = {
        1: moved(0.1),
        2: moved(0.12),
        3: moved(0.09),
        4: nan,
        5: wrong_shape,
        6: moved(10.0),
    }

    kept, rejected = round_with(updates)

    assert kept == [1, 2, 3]
    assert sorted(rejected) == [4, 5, 6]
    assert "NaN" in rejected[4]
    assert "(4,)" in rejected[5]
    assert "median" in rejected[6]


def test_three_normal_updates_of_different_sizes_are_all_kept() -> None:
    updates = {1: moved(0.05, steps=3), 2: moved(0.1), 3: moved(0.4, steps=90)}

    kept, rejected = round_with(updates)

    assert kept == [1, 2, 3]
    assert rejected == {}


def test_with_two_updates_there_is_no_norm_rule() -> None:
    updates = {1: moved(0.1), 2: moved(100.0)}

    kept, rejected = round_with(updates)

    assert kept == [1, 2]
    assert rejected == {}


def test_a_norm_just_over_ten_times_the_others_is_rejected() -> None:
    updates = {1: moved(0.1), 2: moved(0.1), 3: moved(0.1), 4: moved(1.01)}

    kept, rejected = round_with(updates)

    assert kept == [1, 2, 3]
    assert list(rejected) == [4]


def test_integer_step_counters_do_not_count_towards_the_weight_norm() -> None:
    # a site with 500x the data takes 500x the steps: honest
    updates = {1: moved(0.1), 2: moved(0.1), 3: moved(0.1, steps=5_000)}

    kept, rejected = round_with(updates)

    assert kept == [1, 2, 3]
    assert rejected == {}


def test_an_absurd_step_counter_is_rejected_by_its_own_rule() -> None:
    updates = {1: moved(0.1), 2: moved(0.1), 3: moved(0.1, steps=10**15)}

    kept, rejected = round_with(updates)

    assert kept == [1, 2]
    assert "median" in rejected[3]
