import numpy as np
from server_messages import reply
from test_strategies import _TwoNodes

from fedbone.federation.records import array_signature, arrays_to_record
from server.study_grid import StudyGrid, screen_update

GLOBAL = {"w": np.zeros((3, 2), np.float32), "b": np.zeros((3,), np.float32)}
EXPECTED = array_signature(arrays_to_record(GLOBAL))


def test_a_matching_finite_update_passes() -> None:
    assert screen_update(reply(1, GLOBAL, 5).content, EXPECTED) is None


def test_updates_with_nan_wrong_shape_or_other_keys_are_rejected() -> None:
    nan = {**GLOBAL, "w": np.full((3, 2), np.nan, np.float32)}
    wrong_shape = {**GLOBAL, "b": np.zeros((4,), np.float32)}
    extra = {**GLOBAL, "image": np.zeros((256, 64), np.float32)}
    wrong_dtype = {**GLOBAL, "b": np.array(["x", "y", "z"])}

    reasons = [
        screen_update(reply(1, a, 5).content, EXPECTED)
        for a in (nan, wrong_shape, extra, wrong_dtype)
    ]

    assert reasons[0] is not None and "NaN" in reasons[0]
    assert reasons[1] is not None and "(4,)" in reasons[1]
    assert reasons[2] is not None and "image" in reasons[2]
    assert reasons[3] is not None and "not numeric" in reasons[3]


class _Replying(_TwoNodes):
    def __init__(self, replies: list) -> None:
        self.replies = replies

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        return self.replies


def test_grid_exposes_only_its_nodes_and_drops_rejected_updates() -> None:
    bad = {**GLOBAL, "w": np.full((3, 2), np.inf, np.float32)}
    seen: list = []
    grid = StudyGrid(
        _Replying([reply(11, GLOBAL, 5), reply(12, bad, 5)]),
        [12, 11, 99],
        expected=EXPECTED,
        on_replies=seen.extend,
    )

    nodes = grid.get_node_ids()
    kept = grid.send_and_receive([])

    assert nodes == [12, 11]  # 99 is not connected
    assert [r.metadata.src_node_id for r in kept] == [11]
    assert [r.node_id for r in grid.rejected] == [12]
    assert [r.metadata.src_node_id for r in seen] == [11]
