"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium.

The service runs as a subprocess (``python -m service serve``) on the test database; the browser
logs in, chats in the simulator, watches the message arrive in live traffic, and opens the survey
page to check that the charts drew something. Screenshots go to ``test-artifacts/``.

Nothing is downloaded: Chromium and chromedriver come from Debian (``make test`` installs
``chromium chromium-driver``), and Selenium Manager is switched off.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.db import connect
from service.store import owners
from tests.dashboard_fixtures import OWNER, PASSWORD

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def server(service_process: str, settings: Any, io_loop: Any) -> str:
    """The service as a subprocess on the test database, with the owner ``boss``.

    The owner is created with a client that lives only as long as that call: this synchronous
    test must not leave an idle event-loop client behind (its heartbeat times out while the loop
    does not run, and its teardown then fails or leaks a socket into the next test).
    """

    async def create_owner() -> None:
        client, database = connect(settings)
        try:
            await owners.create(database, OWNER, PASSWORD)
        finally:
            await client.close()

    io_loop.run_sync(create_owner)
    return service_process


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), (
        "Debian's chromium and chromium-driver are needed: apt-get install chromium chromium-driver"
    )
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        "--lang=zh-CN",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait_for(driver: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def problems(driver: Any) -> list[str]:
    """Errors the page logged: script errors, CSP violations, failed requests."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon" not in entry["message"]
    ]


CANVAS_PIXELS = """
const canvas = document.querySelector(arguments[0] + ' canvas');
if (!canvas || !canvas.width || !canvas.height) return 0;
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let painted = 0;
for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted++;
return painted;
"""


def test_owner_logs_in_chats_in_the_simulator_and_sees_live_traffic_and_charts(
    server: str, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    # Log in.
    driver.get(server + "/")
    wait_for(driver, lambda d: "/dashboard/login" in d.current_url)
    shot(driver, "01-login")
    driver.find_element(By.ID, "name").send_keys(OWNER)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-submit").click()
    wait_for(driver, lambda d: d.current_url.rstrip("/").endswith("/dashboard"))
    wait_for(
        driver,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, "[data-feed-status]")
            .get_attribute("class")
            .endswith("live")
        ),
    )
    assert driver.execute_script(CANVAS_PIXELS, "#traffic-chart") > 0
    shot(driver, "02-overview")

    # Live traffic in this tab, the simulator in a second one.
    driver.get(server + "/dashboard/live")
    wait_for(
        driver,
        lambda d: (
            "live" in d.find_element(By.CSS_SELECTOR, "[data-feed-status]").get_attribute("class")
        ),
    )
    live_tab = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.get(server + "/dashboard/simulator")
    user = driver.find_element(By.ID, "sim-user")
    user.clear()
    user.send_keys("browser")
    driver.find_element(By.ID, "sim-text").click()  # the change event picks the user
    assert driver.find_element(By.ID, "sim-mode").get_attribute("value") == "aes"
    text = driver.find_element(By.ID, "sim-text")
    text.send_keys("爆肝度调查")
    driver.find_element(By.ID, "sim-send").click()
    reply = wait_for(
        driver,
        lambda d: [
            e for e in d.find_elements(By.CSS_SELECTOR, ".bubble.out") if "第 1/10 题" in e.text
        ],
    )
    assert "爆肝度调查" in reply[0].text
    for answer in ["2", "3"]:
        text.send_keys(answer)
        driver.find_element(By.ID, "sim-send").click()
        position = "第 2/10 题" if answer == "2" else "第 3/10 题"
        wait_for(
            driver,
            lambda d, p=position: [
                e for e in d.find_elements(By.CSS_SELECTOR, ".bubble.out") if p in e.text
            ],
        )
    assert "<Encrypt>" in driver.find_element(By.ID, "exchange-response").text
    shot(driver, "03-simulator")

    # The messages appeared in the live traffic tab, as they happened.
    driver.switch_to.window(live_tab)
    rows = wait_for(
        driver,
        lambda d: [
            r
            for r in d.find_elements(By.CSS_SELECTOR, "#feed tr")
            if "sim-browser" in r.text and "爆肝度调查" in r.text
        ],
    )
    assert "第 1/10 题" in rows[0].text
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#feed tr")) >= 3)
    # Pause holds new rows back.
    driver.find_element(By.ID, "pause").click()
    assert driver.find_element(By.ID, "pause").text == "继续"
    shot(driver, "04-live-traffic")

    # The survey page draws its charts (test users included: the simulator's answers).
    driver.get(server + "/dashboard/surveys/baogan")
    wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "main").get_attribute("data-loaded"))
    checkbox = driver.find_element(By.ID, "include-test")
    if not checkbox.is_selected():
        checkbox.click()
    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, '[data-stat="started"]').text == "1")
    for chart in (
        "#chart-funnel",
        "#chart-scores",
        "#chart-bands",
        "#chart-time",
        "#questions .card:first-child .chart",
    ):
        wait_for(driver, lambda d, c=chart: d.execute_script(CANVAS_PIXELS, c) > 0)
    first_question = driver.find_element(By.CSS_SELECTOR, "#questions .card")
    assert "最近一个月" in first_question.text
    shot(driver, "05-survey")

    # Users list shows the progress; English works in the browser too.
    driver.get(server + "/dashboard/users?lang=en")
    row = wait_for(
        driver,
        lambda d: [
            r for r in d.find_elements(By.CSS_SELECTOR, "#rows tr") if "sim-browser" in r.text
        ],
    )
    assert "Question 3 of 10" in row[0].text
    shot(driver, "06-users-en")
    driver.get(server + "/dashboard/messages?lang=zh")
    wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) >= 3)
    shot(driver, "07-messages")

    assert problems(driver) == []


def test_owner_writes_tries_and_publishes_a_survey_on_a_phone(server: str, browser: Any) -> None:
    """At 390 px: a new survey in the editor, a typed mistake shown at its line, fixed, tried
    in the simulator, published, and answered."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions

    driver = browser
    driver.set_window_size(390, 844)
    driver.get(server + "/dashboard/login")
    driver.find_element(By.ID, "name").send_keys(OWNER)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-submit").click()
    wait_for(driver, lambda d: d.current_url.rstrip("/").endswith("/dashboard"))

    driver.get(server + "/dashboard/survey-editor/pets")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#issues .ok"))  # 没有错误
    assert "没有错误" in driver.find_element(By.ID, "issues").text
    width = driver.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, width  # nothing sticks out sideways on a phone

    shot(driver, "08-editor-new-survey")

    # Type a mistake at the end of the text: an unknown key.
    content = driver.find_element(By.CSS_SELECTOR, ".cm-content")
    driver.find_element(By.CSS_SELECTOR, ".cm-line").click()  # the first line: in view
    content.send_keys(Keys.CONTROL, Keys.END)
    content.send_keys(Keys.ENTER, "colour: red")
    issue = wait_for(
        driver,
        lambda d: [
            e for e in d.find_elements(By.CSS_SELECTOR, "#issues .issue") if "colour" in e.text
        ],
    )[0]
    lines = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".cm-line")]
    mistake_line = next(i for i, text in enumerate(lines, 1) if "colour: red" in text)
    assert issue.get_attribute("data-line") == str(mistake_line)
    assert f"第 {mistake_line} 行" in issue.text and "unknown key 'colour'" in issue.text
    assert driver.find_elements(By.CSS_SELECTOR, ".cm-lint-marker-error")  # marked at the line
    shot(driver, "09-editor-mistake")

    # Remove it again; the draft is valid.
    content.send_keys(Keys.BACKSPACE * len("colour: red"))
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#issues .ok"))

    # Try it in the simulator (as a test user), then publish it.
    driver.find_element(By.ID, "try-draft").click()
    wait_for(driver, lambda d: "/dashboard/simulator" in d.current_url)
    # simulator.js fills the box once it has loaded: wait for that, not just for the element.
    wait_for(driver, lambda d: d.find_element(By.ID, "sim-text").get_attribute("value") == "pets")
    driver.find_element(By.ID, "sim-send").click()
    wait_for(
        driver,
        lambda d: [
            e for e in d.find_elements(By.CSS_SELECTOR, ".bubble.out") if "第 1/2 题" in e.text
        ],
    )
    shot(driver, "10-simulator-draft")

    driver.get(server + "/dashboard/survey-editor/pets")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#issues .ok"))
    driver.find_element(By.ID, "publish").click()
    alert = wait_for(driver, expected_conditions.alert_is_present())
    assert "第 1 版" in alert.text
    alert.accept()
    wait_for(driver, lambda d: "已发布第 1 版" in d.find_element(By.ID, "editor-status").text)
    wait_for(driver, lambda d: "v1" in d.find_element(By.ID, "versions").text)
    shot(driver, "11-editor-published")
    assert problems(driver) == []
