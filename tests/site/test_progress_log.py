"""A site process shows its long jobs' progress on stderr, once."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from fedbone.site.progress_log import PROGRESS_LOGGERS, show_site_progress


@pytest.fixture
def bare_logging() -> Iterator[None]:
    saved = {
        name: (
            list(logging.getLogger(name).handlers),
            logging.getLogger(name).level,
            logging.getLogger(name).propagate,
        )
        for name in PROGRESS_LOGGERS
    }
    for name in PROGRESS_LOGGERS:
        logging.getLogger(name).handlers = []
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.level, logger.propagate = handlers, level, propagate


def test_progress_lines_reach_the_stream_once(
    bare_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a bare process

    show_site_progress(stream)
    show_site_progress(stream)
    logging.getLogger("fedbone.generative.progress").info("GAN step 5/10")

    assert stream.getvalue().count("GAN step 5/10") == 1


def test_other_fedbone_info_stays_quiet(
    bare_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(logging.getLogger(), "handlers", [])

    show_site_progress(stream)
    logging.getLogger("fedbone.classifier.local").info("epoch 1")

    assert stream.getvalue() == ""


def test_a_configured_process_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(logging.getLogger(), "handlers", [logging.NullHandler()])
    before = list(logging.getLogger(PROGRESS_LOGGERS[0]).handlers)

    show_site_progress(stream)

    assert logging.getLogger(PROGRESS_LOGGERS[0]).handlers == before
