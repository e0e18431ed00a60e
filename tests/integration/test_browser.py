"""A person browsing a finished sweep in `selfsup ui`, with a real headless Chromium driven by
Selenium: the link the sweep prints opens its experiment on the runs table (not MLflow's GenAI
pages), the parent run's description shows the selection report and its outcome metrics, and its
plots load. Chromium and chromedriver come from the system's packages (`.ci/run` installs them)."""

import shutil
import time

import pytest

from tests.integration.test_ui import get

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)")


def browser(profile):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def until(check, what, timeout=90):
    deadline = time.time() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.time() > deadline:
            raise TimeoutError(f"the page never showed {what}")
        time.sleep(0.5)


def test_the_sweep_opens_on_its_runs_with_its_report_and_plots(finished_sweep, sweep_ui, tmp_path, monkeypatch):
    lines = finished_sweep[2]
    monkeypatch.setenv("HOME", str(tmp_path))  # Chromium and Selenium keep nothing in the real home
    monkeypatch.setenv("SE_CACHE_PATH", str(tmp_path / "selenium"))
    table = "\n".join(lines)
    link = next(line for line in table.splitlines() if line.startswith("browse: "))
    view = link.split("http://127.0.0.1:5000/", 1)[1]
    assert view.endswith("?workflowType=machine_learning")

    base, driver = sweep_ui, None
    try:
        found = get(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [view.split("/")[2].split("?")[0]]})["runs"]
        parent = next(r["info"] for r in found if r["info"]["run_name"] == "sweep-tiny")
        driver = browser(tmp_path / "chromium")
        text = lambda: driver.find_element("tag name", "body").text  # noqa: E731

        driver.get(f"{base}/{view}")
        until(lambda: "/runs" in driver.current_url and "sweep-tiny" in text(), "the runs table")
        assert "workflowType=genai" not in driver.current_url

        run_page = f"{base}/#/experiments/{parent['experiment_id']}/runs/{parent['run_id']}?workflowType=machine_learning"
        driver.get(run_page)
        until(lambda: "tiny: 3 trials, 3 finished" in text(), "the selection report as the run's description")
        until(lambda: "sweep/trials_finished" in text() and "pick/regret_points" in text(), "the sweep's outcome metrics")

        driver.get(run_page.replace("?", "/artifacts/selection_scatter.png?"))
        widths = until(lambda: [w for w in driver.execute_script("return Array.from(document.images).map(i => i.naturalWidth)") if w > 500],
                       "the selection plot")
        assert widths
    finally:
        if driver is not None:
            driver.quit()
