"""A real browser: headless Debian Chromium driven by selenium against `ats dashboard` (uvicorn on 127.0.0.1)
after the demo. Loads every page, toggles 中文, reloads and checks the Chinese labels persist (also across the
periodic refresh and between pages, with the selected account), clicks "Run backfill" while the test holds the
heavy-run lock and sees the 409 message, and saves a screenshot of each page in both languages to
``$ATS_TEST_ARTIFACTS/dashboard`` (default: a pytest temp dir; the path is printed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _dash_fixtures import FAMILY, dash_db_url  # noqa: F401
from _loopback import free_port
from ats.api.i18n import EN, ZH
from conftest import ROOT

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PAGES = ("assets", "analytics", "datahub", "kb", "reports", "backtests", "events")

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason=f"Debian chromium/chromium-driver not installed ({CHROMIUM}, {CHROMEDRIVER}): "
                                       "apt-get install -y chromium chromium-driver fonts-wqy-microhei")


@pytest.fixture(scope="module")
def server(dash_db_url, tmp_path_factory):
    port = free_port()
    env = dict(os.environ, ATS_DATABASE_URL=dash_db_url, ATS_LOG_DIR=str(tmp_path_factory.mktemp("logs")))
    env.pop("ATS_DASHBOARD_TOKEN", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "services"), str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "ats.cli", "dashboard", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"ats dashboard exited: {proc.stdout.read()}")
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("ats dashboard did not listen within 30 s")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1100", "--lang=en-US"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    base = os.environ.get("ATS_TEST_ARTIFACTS")
    d = Path(base) / "dashboard" if base else tmp_path_factory.mktemp("dashboard-screenshots")
    d.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots: {d}")
    return d


def _wait(driver, cond, timeout=20.0, what="condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: cond(d), message=what)


def _text(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def _labels_are(driver, lang: str) -> None:
    """Every data-i18n element shows the label of ``lang`` (checked in the page, all at once)."""
    got = driver.execute_script(
        "return Array.from(document.querySelectorAll('[data-i18n]')).map(e => [e.getAttribute('data-i18n'), e.textContent]);")
    d = ZH if lang == "zh" else EN
    bad = [(k, t) for k, t in got if t.strip() != d[k]]
    assert got and not bad, bad[:5]


def test_every_page_in_both_languages_with_persistence_and_the_409(server, driver, shots, dash_db_url):
    from selenium.webdriver.common.by import By

    from ats.engine.runs import heavy_lock

    t0 = time.monotonic()
    driver.get(server + "/assets")
    driver.execute_script("localStorage.clear(); document.cookie = 'ats_lang=; max-age=0; path=/';")
    for page in PAGES:  # English first
        driver.get(f"{server}/{page}")
        _wait(driver, lambda d: d.find_element(By.ID, "lang-toggle").text == "中文", what=f"{page} in English")
        _labels_are(driver, "en")
        if page == "analytics":
            _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-pnl .main-svg"), what="plotly chart")
        driver.save_screenshot(str(shots / f"en_{page}.png"))

    driver.get(server + "/assets")
    driver.find_element(By.ID, "lang-toggle").click()
    _wait(driver, lambda d: d.find_element(By.ID, "nav-assets").text == "资产", what="toggle to Chinese")
    assert _text(driver, "#breaker-state") in ("正常", "减仓", "停止")
    driver.refresh()
    _wait(driver, lambda d: d.find_element(By.ID, "nav-assets").text == "资产", what="Chinese after reload")
    assert _text(driver, "#lang-toggle") == "English"
    _labels_are(driver, "zh")
    # the periodic refresh swaps the content in place and keeps the language
    driver.execute_script("window.atsRefresh();")
    _wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed"), what="refresh")
    _labels_are(driver, "zh")
    assert "组合市值" in driver.find_element(By.ID, "content").text

    # the selected account persists: pick 'family', then the Analytics link and a bare /assets keep it
    driver.find_element(By.CSS_SELECTOR, f'a.acct-tab[data-account="{FAMILY}"]').click()
    _wait(driver, lambda d: "account=family" in d.current_url, what="account tab")
    assert driver.find_elements(By.CSS_SELECTOR, "span.badge.owned")  # the family replay ends holding positions
    driver.save_screenshot(str(shots / "zh_assets_family.png"))
    driver.get(server + "/assets")
    _wait(driver, lambda d: "account=family" in d.current_url, what="stored account restored")
    driver.find_element(By.ID, "nav-analytics").click()
    _wait(driver, lambda d: "/analytics" in d.current_url and "account=family" in d.current_url, what="nav keeps account")
    driver.execute_script("localStorage.setItem('ats_account', 'default');")

    for page in PAGES:
        driver.get(f"{server}/{page}")
        _wait(driver, lambda d: d.find_element(By.ID, "lang-toggle").text == "English", what=f"{page} in Chinese")
        _labels_are(driver, "zh")
        if page == "analytics":
            _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-pnl .main-svg"), what="plotly chart")
            assert "组合每小时盈亏" in driver.find_element(By.ID, "chart-pnl").text  # chart title follows the language
        driver.save_screenshot(str(shots / f"zh_{page}.png"))

    # Run backfill while a heavy run holds the lock: the page shows the 409 and who holds it
    driver.get(server + "/datahub")
    with heavy_lock(dash_db_url, what="replay (browser test)"):
        driver.find_element(By.CSS_SELECTOR, "button.backfill").click()
        _wait(driver, lambda d: "409" in d.find_element(By.ID, "backfill-msg").text, what="409 message")
    msg = _text(driver, "#backfill-msg")
    assert "忙碌" in msg and "ats-heavy:replay (browser test)" in msg
    driver.save_screenshot(str(shots / "zh_datahub_409.png"))
    driver.find_element(By.ID, "lang-toggle").click()
    _wait(driver, lambda d: "Busy: another heavy run holds the lock" in d.find_element(By.ID, "backfill-msg").text,
          what="409 message in English")
    driver.save_screenshot(str(shots / "en_datahub_409.png"))
    print(f"browser walk: {time.monotonic() - t0:.1f} s")
    assert len(list(shots.glob("*.png"))) >= 2 * len(PAGES) + 3
