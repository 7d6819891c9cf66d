"""Two readers click through the reading page in headless Chromium.

Debian's chromium and its chromedriver run the page; Selenium is pointed at
both, so Selenium Manager never looks for (or downloads) a browser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from fedbone.reader_study.answers import AnswerStore
from fedbone.reader_study.kit import load_key
from fedbone.reader_study.results import write_results
from fedbone.reader_study.web import ReaderStudyServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, "
    "/usr/bin/chromedriver): apt-get install chromium chromium-driver",
)

Clicked = dict[str, tuple[str, str]]


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(
        service=Service(executable_path=str(CHROMEDRIVER)), options=options
    )
    yield driver
    driver.quit()


def _wait(
    driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], bool]
) -> None:
    WebDriverWait(driver, 10, poll_frequency=0.02).until(condition)


def _start(driver: webdriver.Chrome, url: str, reader: str) -> None:
    driver.get(url)
    driver.find_element(By.ID, "reader-name").send_keys(reader)
    driver.find_element(By.ID, "start").click()


def _read_all(
    driver: webdriver.Chrome,
    url: str,
    reader: str,
    choose: Callable[[str], tuple[str, str]],
    total: int,
) -> Clicked:
    """Answer every image with ``choose(item)``; return what was clicked."""
    _start(driver, url, reader)
    clicked: Clicked = {}
    for position in range(1, total + 1):
        shown = f"{position} of {total}"
        _wait(
            driver, lambda d, text=shown: d.find_element(By.ID, "progress").text == text
        )
        source = driver.find_element(By.ID, "scan").get_attribute("src") or ""
        item = source.rsplit("/", 1)[-1].removesuffix(".png")
        call, finding = choose(item)
        driver.find_element(By.ID, f"call-{call}").click()
        driver.find_element(By.ID, f"finding-{finding}").click()
        driver.find_element(By.ID, "next").click()
        clicked[item] = (call, finding)
    _wait(driver, lambda d: d.find_element(By.ID, "done").is_displayed())
    return clicked


def test_two_readers_click_through_and_their_answers_are_scored(
    served: ReaderStudyServer, browser: webdriver.Chrome
) -> None:
    key = load_key(served.set_dir)
    total = len(served.item_ids)

    def truth(item: str) -> tuple[str, str]:
        finding = "positive" if key[item]["label"] else "negative"
        return key[item]["source"], finding

    def by_label(item: str) -> tuple[str, str]:
        return ("synthetic" if key[item]["label"] else "real"), "positive"

    ana = _read_all(browser, served.url, "ana", truth, total)
    ben = _read_all(browser, served.url, "ben", by_label, total)

    store = AnswerStore(served.set_dir)
    for reader, clicked in (("ana", ana), ("ben", ben)):
        stored = store.answers(reader)
        assert list(stored) == list(served.item_ids)
        assert {i: (a.call, a.finding) for i, a in stored.items()} == clicked
    results = write_results(served.set_dir)
    scores = {score.reader: score for score in results.readers}
    assert scores["ana"].detection.accuracy.value == 1.0
    assert scores["ben"].detection.accuracy.value == 0.5
    assert results.pooled.detection.accuracy.value == 12 / 16
    # Calls: the real negatives and synthetic positives agree, the rest split;
    # P = 1/2 and chance 1/2, so kappa 0. Findings: chance 5/8, kappa -1/3.
    assert results.kappa_call == pytest.approx(0.0, abs=1e-12)
    assert results.kappa_finding == pytest.approx(-1 / 3, abs=1e-12)
    assert results.incomplete == {}

    _start(browser, served.url, "ana")
    _wait(browser, lambda d: d.find_element(By.ID, "done").is_displayed())
