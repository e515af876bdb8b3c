"""cluster's HTML report opened in a real browser: Debian's headless Chromium, driven by Selenium
through Debian's chromedriver (no browser download). The page must load from disk without a
console error and hold one point per text."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import require_asset
from test_cluster import cluster, corpus  # noqa: F401  (the corpus fixture)


@pytest.fixture
def browser():
    """A headless Chromium that keeps the page's console log."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        require_asset("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    yield session
    session.quit()


def test_the_report_opens_in_a_browser_with_one_point_per_text(
    tiny_model_dir, tmp_path, corpus, browser  # noqa: F811
):
    from selenium.webdriver.support.ui import WebDriverWait

    out = tmp_path / "report"
    assert cluster(["--model", tiny_model_dir, "--input", str(corpus), "--out", str(out),
                    "--k", "3", "--labels", "topic"]) == 0  # fmt: skip
    texts = len(corpus.read_text(encoding="utf-8").splitlines())
    browser.get((out / "report.html").as_uri())
    points = WebDriverWait(browser, 60).until(
        lambda b: b.execute_script(
            "const m = document.getElementById('map');"
            "return m && m.data ? m.data.reduce((n, t) => n + t.x.length, 0) : null;"
        )
    )
    assert points == texts
    assert browser.execute_script("return document.querySelectorAll('table.cluster').length") == 3
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, json.dumps(errors, indent=1)
