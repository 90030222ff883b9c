"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromedriver (never a downloaded browser or driver: both paths are given, so
Selenium Manager does not run), against a proxy with ``--protocol http`` in front of the
``http_server`` fixture.

Each control is used as a person would (keys on a slider, typing in a field, a click) and
checked on the proxy and with real ``requests`` calls through it. The test of the page under
traffic also writes the screenshot of the documentation, ``docs/_static/dashboard.png``.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import requests

from control import ControlledProxy
from servers import require_binary, require_module
from support import ProxyThread, wait_until
from vaurien.api import ControlServer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "_static" / "dashboard.png"
TOKEN = "a-token-of-the-browser-tests"
CARD = 'section.proxy[data-proxy="default"]'

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError:  # the browser fixture says so: a skip, or a failure under CI
    webdriver = By = Keys = None
    NoSuchElementException = StaleElementReferenceException = None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium with a fresh profile; its console is read with ``get_log``."""
    require_module("selenium")
    require_binary("chromium")
    require_binary("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",  # as root, Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    yield driver
    driver.quit()


class Site:
    """A proxy with ``--protocol http`` and its control API, in a hub thread of its own."""

    def __init__(self, backend: str) -> None:
        self.thread = ProxyThread(backend=backend, protocol="http").start()
        self.controlled = ControlledProxy(self.thread)
        self.url = self.controlled.url
        self.proxy = self.thread.proxy
        host, port = self.thread.address
        self.target = f"http://{host}:{port}/"

    def get(self, path: str = "/") -> requests.Response:
        """One request through the proxy, on a connection of its own."""
        url = self.target + path.lstrip("/")
        return requests.get(url, timeout=10, headers={"Connection": "close"})

    def stop(self) -> None:
        self.controlled.stop()
        self.thread.stop()


@pytest.fixture(scope="module")
def site(http_server):
    made = Site(http_server.address)
    yield made
    made.stop()


@pytest.fixture
def page(browser, site):
    """The dashboard, loaded afresh and live, in front of a proxy with no chaos."""
    site.controlled.client().set_behavior("dummy")
    site.controlled.client().clear_rules()
    if not site.proxy.enabled:
        site.controlled.client().set_enabled(True)
    browser.get(site.url + "/")
    wait_until(lambda: live(browser), what="the dashboard live")
    wait_until(lambda: len(rows(browser)) == len(site.proxy.config.behaviors.names()))
    return browser


class Traffic:
    """Requests through the proxy from a few threads until stopped; their statuses."""

    def __init__(self, site: Site, threads: int = 2) -> None:
        self.site = site
        self.stopped = threading.Event()
        self.statuses: list[int] = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.statuses.append(self.site.get().status_code)
            except requests.RequestException:
                self.statuses.append(0)
            self.stopped.wait(0.02)

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(30)


def live(browser) -> bool:
    cards = browser.find_elements(By.CSS_SELECTOR, CARD)
    status = browser.find_element(By.ID, "status").text
    return bool(cards) and status.startswith("live")


def card(browser):
    return browser.find_element(By.CSS_SELECTOR, CARD)


def rows(browser) -> list:
    return card(browser).find_elements(By.CSS_SELECTOR, ".mix tbody tr")


def row(browser, behavior: str):
    return card(browser).find_element(By.CSS_SELECTOR, f'tr[data-behavior="{behavior}"]')


def figure(browser, name: str) -> str:
    return card(browser).find_element(By.CSS_SELECTOR, f'[data-figure="{name}"]').text


def shown_spec(browser) -> str:
    return card(browser).find_element(By.CSS_SELECTOR, ".spec").text


def cells(box, row: str) -> list[str] | None:
    """The texts of the cells of ``row`` (a selector) in ``box``; None while it is not there."""
    try:
        found = box.find_element(By.CSS_SELECTOR, row)
        return [cell.text for cell in found.find_elements(By.TAG_NAME, "td")]
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def scenario_box(browser):
    return card(browser).find_element(By.CSS_SELECTOR, ".scenario")


def option_field(browser, field: str):
    """The input of ``behavior.option``, its group opened."""
    behavior = field.split(".")[0]
    group = card(browser).find_element(By.CSS_SELECTOR, f'details[data-behavior="{behavior}"]')
    if group.get_attribute("open") is None:
        group.find_element(By.TAG_NAME, "summary").click()
    return group.find_element(By.CSS_SELECTOR, f'[name="{field}"]')


def error_of(browser, field: str) -> str:
    return card(browser).find_element(By.CSS_SELECTOR, f'[data-error="{field}"]').text


def chart_pixels(browser, chart: str) -> int:
    """How many pixels of a chart are drawn."""
    return browser.execute_script(
        "const canvas = arguments[0];"
        "const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);"
        "let drawn = 0;"
        "for (let i = 3; i < pixels.data.length; i += 4) if (pixels.data[i]) drawn += 1;"
        "return drawn;",
        card(browser).find_element(By.CSS_SELECTOR, f'[data-chart="{chart}"]'),
    )


# -- the tests ---------------------------------------------------------------------------------


def test_the_page_loads_with_no_console_errors(page, site):
    assert page.title == "Vaurien dashboard"
    host, port = site.thread.address
    assert card(page).find_element(By.CSS_SELECTOR, ".listen").text == f"{host}:{port}"
    assert card(page).find_element(By.CSS_SELECTOR, ".protocol").text == "http"
    assert card(page).find_element(By.CSS_SELECTOR, ".state").text == "enabled"
    assert shown_spec(page) == "dummy"
    problems = [entry for entry in page.get_log("browser") if entry["level"] != "INFO"]
    assert problems == []


def test_the_proxys_real_figures_move_under_traffic(page, site):
    before = int(figure(page, "total_connections"))
    with Traffic(site) as traffic:
        wait_until(lambda: int(figure(page, "total_connections")) >= before + 10)
        rate = card(page).find_element(By.CSS_SELECTOR, '[data-rate="events_to_backend"]')
        wait_until(lambda: rate.text not in ("–", "0"), what="events per second shown")
        wait_until(lambda: chart_pixels(page, "bytes") > 100, what="the bytes chart drawn")
    shown = int(figure(page, "total_connections"))
    assert before + 10 <= shown <= site.proxy.stats()["total_connections"]
    assert set(traffic.statuses) == {200}
    picks = int(row(page, "dummy").find_element(By.CSS_SELECTOR, ".picks").text)
    assert 0 < picks <= site.proxy.applied["dummy"]


def test_the_error_slider_at_100_fails_the_next_request_and_back_at_0_passes_it(page, site):
    assert site.get().status_code == 200
    slider = row(page, "error").find_element(By.CSS_SELECTOR, 'input[type="range"]')
    slider.send_keys(Keys.END)  # as a person would: the slider to its end
    wait_until(lambda: shown_spec(page) == "error", what="the page showing error in force")
    assert str(site.proxy.behavior) == "error"
    assert 500 <= site.get().status_code <= 503  # the http protocol's error answer
    slider.send_keys(Keys.HOME)
    wait_until(lambda: shown_spec(page) == "dummy", what="the page showing dummy in force")
    assert site.get().status_code == 200


def test_the_percents_stay_valid(page, site):
    number = row(page, "delay").find_element(By.CSS_SELECTOR, 'input[type="number"]')
    number.clear()
    number.send_keys("70", Keys.TAB)
    wait_until(lambda: shown_spec(page) == "70:delay,30:dummy")
    number = row(page, "error").find_element(By.CSS_SELECTOR, 'input[type="number"]')
    number.clear()
    number.send_keys("50", Keys.TAB)  # only 30 are left
    wait_until(lambda: shown_spec(page) == "70:delay,30:error")
    assert number.get_attribute("value") == "30"
    rest = row(page, "dummy").find_element(By.CSS_SELECTOR, 'input[type="number"]')
    assert rest.get_attribute("value") == "0"
    card(page).find_element(By.CSS_SELECTOR, ".reset").click()  # no chaos
    wait_until(lambda: shown_spec(page) == "dummy")
    assert rest.get_attribute("value") == "100"


def test_a_bad_option_value_shows_the_apis_message_next_to_its_field(page, site):
    number = row(page, "delay").find_element(By.CSS_SELECTOR, 'input[type="number"]')
    number.clear()
    number.send_keys("10", Keys.TAB)
    wait_until(lambda: shown_spec(page) == "10:delay,90:dummy")
    body = {"name": "10:delay", "options": {"delay": {"sleep": "-1"}}}
    refused = requests.put(site.url + "/behavior", json=body, timeout=10).json()
    message = refused["errors"][0]["description"]
    assert message == "sleep: expected a number of at least 0, got -1.0"
    sleep = option_field(page, "delay.sleep")
    sleep.clear()
    sleep.send_keys("-1", Keys.TAB)
    wait_until(lambda: error_of(page, "delay.sleep") == message, what="the API's message shown")
    assert site.proxy.mix.behaviors["delay"].settings["sleep"] == 1.0  # nothing changed
    sleep = option_field(page, "delay.sleep")
    sleep.clear()
    sleep.send_keys("0.01", Keys.TAB)
    wait_until(lambda: site.proxy.mix.behaviors["delay"].settings["sleep"] == 0.01)
    assert error_of(page, "delay.sleep") == ""
    assert str(site.proxy.behavior) == "10:delay,90:dummy"


def test_disable_and_enable(page, site):
    address = site.thread.address
    toggle = card(page).find_element(By.CSS_SELECTOR, ".toggle")
    assert toggle.text == "Disable"
    toggle.click()
    state = card(page).find_element(By.CSS_SELECTOR, ".state")
    wait_until(lambda: state.text == "disabled", what="the page showing the proxy disabled")
    assert not site.proxy.enabled
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10)
    assert toggle.text == "Enable"
    toggle.click()
    wait_until(lambda: state.text == "enabled", what="the page showing the proxy enabled")
    assert site.get().status_code == 200


def test_rules_the_scenarios_step_and_the_faults_requests_are_shown(page, site):
    client = site.controlled.client()
    rules, scenario = card(page).find_element(By.CSS_SELECTOR, ".rules"), scenario_box(page)
    assert not rules.is_displayed() and not scenario.is_displayed()  # none: nothing shown
    client.set_rules(["broken: path=/broken => 100:error"])
    client.set_scenario("2req 100:dummy; 1000req 100:error")
    assert [site.get("/broken").status_code >= 500 for _ in range(2)] == [True, True]
    assert [site.get().status_code for _ in range(2)] == [200, 200]
    assert site.get().status_code >= 500  # the scenario's second step
    # The tables are made again at each sample: each look reads them afresh.
    wait_until(
        lambda: cells(rules, 'tr[data-rule="broken"]') == ["path=/broken", "error", "2"],
        what="the rule and its 2 picks",
    )
    state = scenario.find_element(By.CSS_SELECTOR, ".scenario-state")
    wait_until(lambda: state.text == "step 2 of 2, 999 req left", what="the step in force")
    assert cells(scenario, "tr.current") == ["1000req 100:error", "1"]
    assert cells(scenario, 'tr[data-step="1"]') == ["2req 100:dummy", "2"]
    # The feed names the requests the faults hit, and their sessions.
    feed = page.find_element(By.ID, "faults")
    wait_until(lambda: len(feed.find_elements(By.CSS_SELECTOR, "li")) >= 3)
    lines = [line.text for line in feed.find_elements(By.CSS_SELECTOR, "li")[:3]]
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"error on GET /, session {site.proxy.total_sessions} · default",
        f"error on GET /broken, session {site.proxy.total_sessions - 3} · default",
        f"error on GET /broken, session {site.proxy.total_sessions - 4} · default",
    ]
    card(page).find_element(By.CSS_SELECTOR, ".reset").click()  # no chaos: rules too
    wait_until(lambda: not rules.is_displayed() and not scenario.is_displayed())
    assert site.proxy.chaos.rules() == [] and site.proxy.chaos.scenario() == {"scenario": None}
    assert site.get("/broken").status_code < 500


def test_a_page_left_lets_its_stream_go(page, site):
    watch = site.controlled.server.app.dashboard.watch
    # The page before this one (the fixture reloads it) is let go as soon as a write fails.
    wait_until(lambda: site.thread.call(lambda: watch.watchers) == 1)
    page.get("about:blank")  # the page may stay in the back-forward cache: it closes its stream
    wait_until(lambda: site.thread.call(lambda: (watch.watchers, watch.running)) == (0, False))
    page.back()
    wait_until(lambda: site.thread.call(lambda: watch.watchers) == 1, what="the stream back")
    wait_until(lambda: live(page), what="the dashboard live again")


def test_the_token_is_enforced(browser, site):
    guarded = site.thread.call(
        lambda: ControlServer(site.proxy, "127.0.0.1", 0, token=TOKEN).start()
    )
    url = f"http://127.0.0.1:{guarded.address[1]}"
    try:
        # Plain HTTP: reading needs no token, a change does.
        assert requests.get(url + "/enabled", timeout=10).json() == {"enabled": True}
        response = requests.put(url + "/enabled", json={"enabled": False}, timeout=10)
        assert response.status_code == 401
        browser.get(url + "/")
        wait_until(lambda: live(browser), what="the dashboard live")
        form = browser.find_element(By.ID, "token-form")
        assert not form.is_displayed()
        toggle = card(browser).find_element(By.CSS_SELECTOR, ".toggle")
        toggle.click()
        message = card(browser).find_element(By.CSS_SELECTOR, ".card-error")
        wait_until(lambda: "needs its token" in message.text, what="the 401 shown")
        assert site.proxy.enabled
        assert form.is_displayed()
        browser.find_element(By.ID, "token").send_keys(TOKEN, Keys.ENTER)
        wait_until(lambda: not form.is_displayed())
        toggle.click()
        wait_until(lambda: not site.proxy.enabled, what="the proxy disabled with the token")
        assert message.text == ""
        # A link may carry the token after '#': the page takes it and drops it from the URL.
        browser.execute_script("sessionStorage.clear()")  # where the page kept the token
        browser.get("about:blank")
        browser.get(f"{url}/#token={TOKEN}")
        wait_until(lambda: live(browser), what="the dashboard live")
        assert browser.current_url == url + "/"
        card(browser).find_element(By.CSS_SELECTOR, ".toggle").click()
        wait_until(lambda: site.proxy.enabled, what="the proxy enabled with the token")
    finally:
        site.thread.call(guarded.stop)


def test_a_screenshot_of_the_page_under_traffic_for_the_docs(page, site):
    client = site.controlled.client()
    client.set_behavior("15:delay,10:error", sleep=0.05)
    with Traffic(site, threads=3):
        wait_until(
            lambda: page.execute_script("return (state.history.get('default') || []).length") >= 15,
            what="fifteen seconds of charts",
        )
        wait_until(lambda: len(page.find_elements(By.CSS_SELECTOR, "#faults li")) >= 8)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert page.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG")
