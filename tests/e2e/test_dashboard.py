"""The dashboard in a real Chromium against a real loglens server.

Each test starts its own server (tmp store, free port), sends logs over HTTP and watches the
page update by itself — no reloads. The `open_dashboard` fixture fails a test on any console
error or uncaught page error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from loglens.demo import generate_logs

pytestmark = pytest.mark.e2e

METRICS = ("error_rate", "volume", "avg_response_time", "p95_response_time")
XSS = "<img src=x onerror=alert(1)>"


def post_logs(base_url: str, logs: list[dict[str, Any]], token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.post(base_url + "/api/v1/logs", json=logs, headers=headers, timeout=30)
    resp.raise_for_status()
    return resp.json()


def log(service: str, level: str = "INFO", message: str = "ok", **extra: Any) -> dict[str, Any]:
    """A minimal valid log stamped now."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    return {"timestamp": stamp + "Z", "level": level, "service": service, "message": message, **extra}


def css_color(dash: Any, var: str) -> str:
    """The computed rgb() of a CSS custom property in the page's current theme."""
    return dash.state(
        f"(() => {{ const d = document.createElement('div'); d.style.color = 'var({var})';"
        " document.body.append(d); const c = getComputedStyle(d).color; d.remove(); return c; })()"
    )


def tile(service: str) -> str:
    return f'#health .tile-svc[data-service="{service}"]'


def test_charts_render_and_update_live(live_server: Any, open_dashboard: Callable[..., Any]) -> None:
    now = time.time()
    history = list(generate_logs(300, services=("api", "db", "web"), start=now - 600, spacing_s=2.0, error_ratio=0.1))
    assert post_logs(live_server.url, history)["accepted"] == 300
    dash = open_dashboard(live_server.url)
    dash.wait_live()
    dash.wait("['error_rate','volume','avg_response_time','p95_response_time'].every(m => window.__loglens.charts[m])")
    for metric in METRICS:
        info = dash.state(f"window.__loglens.charts['{metric}']")
        assert info["points"] == 60, metric  # last hour, one point per minute
        assert info["series"] == ["api", "db", "web"], metric
        assert dash.page.locator(f"#chart-{metric} canvas").count() >= 1, metric
        assert dash.page.get_attribute(f"#chart-{metric}", "data-points") == "60"
        # hover values come from uPlot's legend: one row per service
        assert dash.page.locator(f"#chart-{metric} .u-legend .u-series").count() == 4
    # the health matrix and the log view are filled
    assert dash.page.locator("#health .tile-svc").count() == 3
    dash.wait("document.querySelectorAll('#log-rows tr.log').length === 50")
    assert dash.page.is_visible("#logs-more")  # 300 logs: paged

    # a new log shows in the charts and the matrix within 2 s, without a reload
    dash.state("(window.__marker = 'same page', true)")
    before = dash.state("[window.__loglens.charts.volume.end, window.__loglens.charts.volume.last.api]")
    t0 = time.monotonic()
    post_logs(live_server.url, [log("api"), log("api"), log("cache", "ERROR", "cache down")])
    # the current minute's point grows by 2 (or, across a minute boundary, the new minute holds 2)
    dash.wait(
        "(() => { const c = window.__loglens.charts.volume; "
        f"return c.end === '{before[0]}' ? c.last.api === {before[1] + 2} : c.last.api === 2; }})()",
        2,
    )
    dash.wait(f"document.querySelector('{tile('cache')}') !== null")
    dash.wait("window.__loglens.charts.error_rate.series.includes('cache')")
    assert time.monotonic() - t0 < 2.0
    assert dash.state("window.__marker") == "same page"
    assert dash.state("window.__loglens.events.metrics") >= 1
    assert dash.page.text_content(f"{tile('cache')} .name") == "cache"


def test_filters_tabs_paging_and_legend(live_server: Any, open_dashboard: Callable[..., Any]) -> None:
    logs = list(generate_logs(120, services=("api", "db"), start=time.time() - 240, spacing_s=2.0))
    logs.append({"level": "INFO", "service": "api"})  # no timestamp/message → dead letter
    result = post_logs(live_server.url, logs)
    assert (result["accepted"], result["rejected"]) == (120, 1)
    dash = open_dashboard(live_server.url)
    dash.wait_live()
    dash.wait("document.querySelectorAll('#log-rows tr.log').length === 50")

    # paging with next_cursor
    dash.page.click("#logs-more")
    dash.wait("document.querySelectorAll('#log-rows tr.log').length === 100")
    dash.page.click("#logs-more")
    dash.wait("document.querySelectorAll('#log-rows tr.log').length === 120")
    assert dash.page.is_hidden("#logs-more")

    # clicking a tile filters the charts and the log view to that service
    dash.page.click(tile("db"))
    dash.wait("window.__loglens.filter === 'db'")
    dash.wait("[...document.querySelectorAll('#log-rows tr.log')].every(r => r.dataset.service === 'db')")
    assert dash.page.is_visible("#filter-chip")
    shown = dash.state(
        "(() => { const u = document.querySelector('#chart-volume .u-legend'); "
        "return [...u.querySelectorAll('.u-series')].slice(1).map(r => !r.classList.contains('u-off')); })()"
    )
    assert shown == [False, True]  # api hidden, db shown
    dash.page.click("#filter-clear")
    dash.wait("window.__loglens.filter === null")

    # a service can be toggled from a chart legend, in every chart
    dash.page.locator("#chart-volume .u-legend .u-series").nth(1).click()
    dash.wait(
        "document.querySelector('#chart-p95_response_time .u-legend .u-series:nth-child(2)').classList.contains('u-off')"
    )

    # text and level filters
    dash.page.select_option("#f-level", "ERROR,FATAL")
    dash.wait("[...document.querySelectorAll('#log-rows tr.log')].every(r => r.dataset.level === 'ERROR')")
    dash.page.select_option("#f-level", "")
    dash.page.fill("#f-q", "zz-no-such-text")
    dash.page.press("#f-q", "Enter")
    dash.wait("!document.getElementById('logs-empty').hidden")

    # dead-letter tab shows the reason
    dash.page.click("#tab-dead")
    dash.wait("document.querySelectorAll('#dead-rows tr').length === 1")
    reason = dash.page.text_content("#dead-rows tr td.msg") or ""
    assert "timestamp" in reason or "message" in reason
    assert dash.page.text_content("#dead-total") == "1"


def test_xss_payload_renders_as_text(live_server: Any, open_dashboard: Callable[..., Any]) -> None:
    payload = log("web", "ERROR", XSS, user_id='"><script>window.__pwned=1</script>', metadata={"k": XSS})
    post_logs(live_server.url, [payload])
    dash = open_dashboard(live_server.url)
    dash.wait_live()
    dash.wait("document.querySelectorAll('#log-rows tr.log').length === 1")
    assert dash.page.text_content("#log-rows tr.log td.msg") == XSS
    assert dash.page.locator("#log-rows img").count() == 0
    assert dash.page.locator("#log-rows script").count() == 0
    dash.page.click("#log-rows tr.log")  # the detail row (metadata) is text too
    assert XSS in (dash.page.text_content("#log-rows tr.detail pre") or "")
    assert dash.page.locator("main img, main script").count() == 0
    assert dash.state("window.__pwned === undefined")
    assert dash.dialogs == []


def test_silent_service_turns_grey(
    settings_factory: Callable[..., Any], live_server_factory: Callable[[Any], Any], open_dashboard: Callable[..., Any]
) -> None:
    settings = settings_factory("alerts:\n  rules:\n    absence: {threshold_seconds: 2}\n")
    srv = live_server_factory(settings)
    post_logs(srv.url, [log("quiet"), log("chatty")])
    dash = open_dashboard(srv.url)
    dash.wait_live()
    # Both talk until the page shows "quiet" healthy: on a loaded machine opening the page can
    # take longer than the 2 s threshold, and a service already silent never shows healthy.
    deadline = time.monotonic() + 60
    healthy = f"document.querySelector('{tile('quiet')}')?.dataset.status === 'healthy'"
    while not dash.state(healthy) and time.monotonic() < deadline:
        post_logs(srv.url, [log("quiet"), log("chatty")])
        time.sleep(0.3)
    assert dash.state(healthy)
    # "chatty" keeps talking; "quiet" stops
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        post_logs(srv.url, [log("chatty")])
        if dash.state(f"document.querySelector('{tile('quiet')}').dataset.status") == "silent":
            break
        time.sleep(0.3)
    assert dash.page.get_attribute(tile("quiet"), "data-status") == "silent"
    assert dash.page.get_attribute(tile("chatty"), "data-status") == "healthy"
    grey = css_color(dash, "--silent")
    assert grey != css_color(dash, "--ok")
    # the tile's colours change with a short CSS transition
    dash.wait(f"getComputedStyle(document.querySelector('{tile('quiet')}')).borderLeftColor === '{grey}'")
    assert dash.page.text_content(f"{tile('quiet')} .status") == "silent"


def test_error_rate_breach_shows_red_alert(
    settings_factory: Callable[..., Any], live_server_factory: Callable[[Any], Any], open_dashboard: Callable[..., Any]
) -> None:
    settings = settings_factory(
        "alerts:\n  rules:\n    error_rate: {threshold: 0.1, min_events: 5, window_seconds: 60}\n"
    )
    srv = live_server_factory(settings)
    post_logs(srv.url, [log("pay") for _ in range(5)])
    dash = open_dashboard(srv.url)
    dash.wait_live()
    assert dash.page.locator(".alert").count() == 0
    post_logs(srv.url, [log("pay", "ERROR", "card declined") for _ in range(10)])
    selector = '#alerts-firing .alert[data-rule="error_rate"][data-service="pay"]'
    dash.wait(f"document.querySelector('{selector}') !== null")
    card = dash.page.locator(selector)
    assert card.get_attribute("data-severity") == "critical"
    assert "sev-critical" in (card.get_attribute("class") or "")
    red = css_color(dash, "--crit")
    assert dash.state(f"getComputedStyle(document.querySelector('{selector}')).borderLeftColor") == red
    assert "threshold 10.0%" in (card.locator(".value").text_content() or "")
    assert dash.page.text_content("#alert-count") == "1"
    dash.wait(f"document.querySelector('{tile('pay')}').dataset.status === 'critical'")
    dash.wait(f"getComputedStyle(document.querySelector('{tile('pay')}')).borderLeftColor === '{red}'")
    # silence it from the panel
    card.locator("button.silence").click()
    dash.wait(f"document.querySelector('{selector} .actions .muted').textContent.includes('silenced')")
    with httpx.Client(base_url=srv.url) as client:
        silences = client.get("/api/v1/silences").json()
    assert any(
        s["matchers"] == {"service": "pay", "rule": "error_rate"}
        for s in silences.get("silences", silences if isinstance(silences, list) else [])
    )


def test_reconnects_after_server_restart(
    settings_factory: Callable[..., Any], live_server_factory: Callable[[Any], Any], open_dashboard: Callable[..., Any]
) -> None:
    settings = settings_factory()
    srv = live_server_factory(settings)
    post_logs(srv.url, [log("api")])
    # connection-refused errors while the server is down are expected here
    dash = open_dashboard(srv.url, check_console=False)
    dash.wait_live()
    srv.stop()
    dash.wait("window.__loglens.connection === 'reconnecting'")
    assert "reconnecting" in (dash.page.text_content("#conn") or "")
    srv2 = live_server_factory(srv.settings, srv.listener)  # the same port (held open meanwhile), the same store
    dash.wait("window.__loglens.connection === 'live'")
    post_logs(srv2.url, [log("after-restart")])
    dash.wait(f"document.querySelector('{tile('after-restart')}') !== null")
    assert dash.errors == [] or all("ERR_CONNECTION_REFUSED" in e or "Failed to load" in e for e in dash.errors)


def test_token_protected_server_and_layouts(
    settings_factory: Callable[..., Any], live_server_factory: Callable[[Any], Any], open_dashboard: Callable[..., Any]
) -> None:
    srv = live_server_factory(settings_factory("server: {api_token: tok-123}\n"))
    post_logs(srv.url, list(generate_logs(50, start=time.time() - 120, spacing_s=2.0)), token="tok-123")
    # without a session the page sends the user to the sign-in form instead of "No services yet"
    anonymous = open_dashboard(srv.url, check_console=False)
    anonymous.page.wait_for_url(srv.url + "/login", timeout=10_000)
    anonymous.page.fill("#token", "wrong")
    anonymous.page.click("button[type=submit]")
    assert "Wrong token" in (anonymous.page.text_content(".error") or "")
    for width, scheme in ((1366, "light"), (2560, "dark")):
        dash = open_dashboard(srv.url, token="tok-123", width=width, height=1200, color_scheme=scheme)
        assert "tok-123" not in dash.page.url
        assert dash.state("document.cookie") == ""  # HttpOnly: no script can read the session
        cookie = next(c for c in dash.page.context.cookies() if c["name"] == "loglens_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and "tok-123" not in cookie["value"]
        dash.wait_live()
        dash.wait("window.__loglens.charts.volume && window.__loglens.charts.volume.series.length === 5")
        # usable at this width: nothing overflows sideways, charts fill their cards
        assert dash.state("document.documentElement.scrollWidth <= window.innerWidth")
        chart_w = dash.state("document.querySelector('#chart-volume canvas').getBoundingClientRect().width")
        card_w = dash.state("document.querySelector('#chart-volume').getBoundingClientRect().width")
        assert chart_w >= card_w * 0.9
        bg = dash.state("getComputedStyle(document.body).backgroundColor")
        assert (bg == "rgb(13, 17, 23)") == (scheme == "dark")


def test_many_services_show_the_busiest_with_a_count_and_a_search(
    live_server: Any, open_dashboard: Callable[..., Any]
) -> None:
    # 260 services (more than the 200 tiles drawn); "hot-*" are the busiest
    logs = [log(f"svc-{i:03d}") for i in range(250)]
    logs += [log(f"hot-{i}") for i in range(10) for _ in range(5)]
    assert post_logs(live_server.url, logs)["accepted"] == len(logs)
    dash = open_dashboard(live_server.url)
    dash.wait_live()
    dash.wait("document.querySelectorAll('#health .tile-svc').length === 200")
    assert "200 of 260 services shown" in (dash.page.text_content("#health-count") or "")
    for i in range(10):
        assert dash.page.locator(tile(f"hot-{i}")).count() == 1  # busiest first
    # charts draw only the busiest series
    dash.wait("window.__loglens.charts.volume && window.__loglens.charts.volume.series.length === 12")
    assert all(s.startswith("hot-") for s in dash.state("window.__loglens.charts.volume.series")[:10])
    dash.page.fill("#svc-search", "svc-24")
    dash.wait("document.querySelectorAll('#health .tile-svc').length === 10")
    assert dash.page.is_hidden("#health-count")
    assert dash.page.locator(tile("svc-245")).count() == 1
