"""A site process shows its long jobs' progress lines."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from fedbone.site.progress_log import PROGRESS_LOGGERS, show_site_progress


@pytest.fixture
def restored_levels() -> Iterator[None]:
    names = (*PROGRESS_LOGGERS, "fedbone.classifier.local")
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def test_a_bare_process_prints_progress_lines_on_its_stream(
    restored_levels: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a bare process

    show_site_progress(stream)
    show_site_progress(stream)
    logging.getLogger("fedbone.generative.progress").info("GAN step 5/10")

    assert stream.getvalue().count("GAN step 5/10") == 1


def test_other_fedbone_info_stays_quiet(
    restored_levels: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
    logging.getLogger("fedbone.classifier.local").setLevel(logging.NOTSET)

    show_site_progress(stream)
    logging.getLogger("fedbone.classifier.local").info("epoch 1")

    assert stream.getvalue() == ""


def test_a_process_with_a_handler_gets_the_lines_through_it(
    restored_levels: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = io.StringIO()
    root_handler = logging.StreamHandler(existing)
    monkeypatch.setattr(logging.getLogger(), "handlers", [root_handler])

    show_site_progress(io.StringIO())
    logging.getLogger("fedbone.generative.synthesis").info("class 2: 40/150")

    assert logging.getLogger().handlers == [root_handler]
    assert "class 2: 40/150" in existing.getvalue()
