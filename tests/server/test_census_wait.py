from __future__ import annotations

from typing import Any, cast

from flwr.serverapp import Grid

from server.phases.census import wait_for_nodes


class LateGrid:
    """A grid whose nodes register a few polls after the ServerApp starts."""

    def __init__(self, arrivals: list[list[int]]) -> None:
        self.arrivals = arrivals
        self.polls = 0

    def get_node_ids(self) -> list[int]:
        ids = self.arrivals[min(self.polls, len(self.arrivals) - 1)]
        self.polls += 1
        return ids


def as_grid(fake: Any) -> Grid:
    return cast(Grid, fake)


def test_waits_until_the_expected_sites_have_connected() -> None:
    grid = LateGrid([[], [1], [1, 2, 3]])

    nodes = wait_for_nodes(as_grid(grid), 3, timeout_s=5, poll_s=0.001)

    assert nodes == [1, 2, 3] and grid.polls == 3


def test_goes_on_with_the_connected_sites_when_time_is_up(caplog: Any) -> None:
    grid = LateGrid([[], [7]])

    nodes = wait_for_nodes(as_grid(grid), 3, timeout_s=0.05, poll_s=0.001)

    assert nodes == [7]
    assert "1 of 3 expected sites connected" in caplog.text
