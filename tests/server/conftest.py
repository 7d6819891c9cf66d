from collections.abc import Iterator

import pytest
from flwr.supercore.task_identity import TaskIdentity


@pytest.fixture(autouse=True)
def server_task_identity() -> Iterator[None]:
    """Messages built by strategies need the run they belong to, as on a server."""
    identity = ("_run_id", "_node_id", "_task_id")
    previous = [getattr(TaskIdentity, name) for name in identity]
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    for name, value in zip(identity, previous, strict=True):
        setattr(TaskIdentity, name, value)
