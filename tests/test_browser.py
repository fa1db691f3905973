"""In a real headless Chromium: the JavaScript client and the demo pages against daphne.

Chromium comes from Debian's ``chromium`` package (installed here with apt-get
when ``/usr/bin/chromium`` is missing) and is driven by Playwright for Python;
Playwright's own browser downloads are never used.

The pages are the demo project's, served by a real daphne. Tests of the
client's behaviour (backoff, buffer, close codes) create clients with
``page.evaluate`` on the explorer page and read what they recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from testproject.redis_server import free_port
from tests.conftest import TIMEOUT
from tests.servers import Daphne

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HEARTBEAT = "--heartbeat--"  # testproject's WS4REDIS_HEARTBEAT
# Installing Chromium on a fresh machine takes minutes; the first test pays for it.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(120 if os.path.exists(CHROMIUM) else 900),
]

MS = int(TIMEOUT * 1000)
# A restarted daphne takes a few seconds, and the page's own backoff adds up to
# twice the default reconnect_delay per failed attempt.
RECONNECT_MS = MS * 4

# Defines window.record(options): a client whose events are kept in window.rec.
RECORDER = """
window.record = (options) => {
  const rec = {connecting: 0, opens: 0, closes: [], messages: [], states: [], beats: []};
  rec.client = WS4Redis(Object.assign({}, options, {connecting: () => { rec.connecting += 1; }}));
  rec.client.on("open", () => { rec.opens += 1; });
  rec.client.on("close", (info) => { rec.closes.push(Object.assign({at: Date.now()}, info)); });
  rec.client.on("message", (data) => { rec.messages.push(data); });
  rec.client.on("state", (state) => { rec.states.push([state, Date.now()]); });
  rec.client.on("heartbeat", (rtt) => { rec.beats.push(rtt); });
  window.rec = rec;
  return true;
};
"""


def _install_chromium() -> None:
    """Install Debian's chromium package if it is missing (needs root and apt)."""
    if os.path.exists(CHROMIUM):
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM} is missing: run `apt-get install -y chromium` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "chromium"]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=800)
    if result.returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=800)
    if result.returncode != 0 or not os.path.exists(CHROMIUM):
        pytest.fail(f"could not install chromium:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    _install_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=MS * 6
        )
        yield browser
        browser.close()


class Pages:
    """Opens pages in fresh browser contexts (one cookie jar each); fails on JavaScript errors."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    def context(self) -> BrowserContext:
        context = self.browser.new_context()
        context.set_default_timeout(MS)
        self.contexts.append(context)
        return context

    def open(self, server: Daphne, path: str, context: BrowserContext | None = None) -> Page:
        page = (context or self.context()).new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{path}: {error}"))
        page.goto(server.http(path))
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    opened = Pages(browser)
    yield opened
    opened.close()
    assert not opened.errors, f"JavaScript errors: {opened.errors}"


def connected(page: Page, timeout: int = MS) -> None:
    expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=timeout)


def messages(page: Page) -> Any:
    return page.locator("#messages .text")


def chat_say(page: Page, text: str) -> None:
    page.fill("#chat-text", text)
    page.press("#chat-text", "Enter")


def record(page: Page, **options: Any) -> None:
    """Create a client on ``page`` whose events are kept in ``window.rec``."""
    page.evaluate(RECORDER)
    page.evaluate("(options) => window.record(options)", options)


def recorded(page: Page, expression: str) -> Any:
    return page.evaluate(f"() => window.rec.{expression}")


def wait_for(page: Page, condition: str, timeout: int = MS) -> None:
    """Wait until the JavaScript ``condition`` (about ``rec``) holds."""
    page.wait_for_function(f"() => {{ const rec = window.rec; return {condition}; }}", timeout=timeout)


def socket_uri(server: Daphne, path: str) -> str:
    return server.url(path)


# -- the demo pages ------------------------------------------------------------------


def test_client_script_loads_from_daphne_in_both_forms(daphne, pages):
    page = pages.open(daphne, "/")
    assert page.evaluate("() => typeof WS4Redis") == "function"
    module = page.evaluate(
        """async () => {
          const m = await import("/static/ws4redis_channels/ws4redis.mjs");
          return {same: m.default === m.WS4Redis, type: typeof m.default, noRetry: m.default.NO_RETRY};
        }"""
    )
    from ws4redis_channels.codes import NO_RETRY

    assert module == {"same": True, "type": "function", "noRetry": sorted(NO_RETRY)}


def test_chat_message_typed_in_one_page_appears_in_the_other(daphne, redis_client, pages):
    alice, bob = pages.open(daphne, "/chat/"), pages.open(daphne, "/chat/")
    connected(alice)
    connected(bob)
    chat_say(alice, "Hello from Alice")
    expect(messages(bob)).to_have_text(["Hello from Alice"])
    expect(messages(alice)).to_have_text(["Hello from Alice"])  # echo
    chat_say(bob, "Hi Alice")
    expect(messages(alice)).to_have_text(["Hello from Alice", "Hi Alice"])
    expect(messages(bob)).to_have_text(["Hello from Alice", "Hi Alice"])


def test_raw_redis_publish_appears_in_the_explorer(daphne, redis_client, pages):
    page = pages.open(daphne, "/")
    page.fill("#facility", "rawtest")
    page.click("#connect")
    connected(page)
    expect(page.locator("#commands")).to_contain_text('redis-cli PUBLISH _broadcast_:rawtest "Hello"')
    assert redis_client.publish("_broadcast_:rawtest", "Hello from redis-py") == 1
    redis_client.publish("_broadcast_:other", "not for this page")
    redis_client.publish("_broadcast_:rawtest", "and a second one")
    expect(messages(page)).to_have_text(["Hello from redis-py", "and a second one"])


def test_explorer_reports_a_refused_facility_without_retrying(daphne, pages):
    page = pages.open(daphne, "/")
    page.fill("#facility", "a:b")
    page.click("#connect")
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "closed")
    expect(status).to_contain_text("4400")
    expect(status).to_contain_text("not retrying")


def _log_in(pages: Pages, server: Daphne, username: str, path: str) -> Page:
    page = pages.open(server, path)
    page.click(f"#login-{username}")
    expect(page.locator("#whoami")).to_have_text(username)
    return page


def _notify(page: Page, to: str, message: str) -> None:
    result = page.locator("#notify-result")
    before = result.get_attribute("data-published") or "0"
    page.select_option("#notify-to", to)
    page.fill("#notify-message", message)
    page.click("#notify-send")
    expect(result).to_have_attribute("data-published", str(int(before) + 1))


def test_notification_to_a_user_shows_on_that_users_page_only(daphne, redis_client, pages):
    john = _log_in(pages, daphne, "john", "/notifications/")
    mary = _log_in(pages, daphne, "mary", "/notifications/")
    connected(john)
    connected(mary)
    _notify(mary, "john", "lunch?")
    expect(messages(john)).to_have_text(["lunch? (from mary)"])
    _notify(mary, "staff", "staff meeting")  # john is in group staff, mary is not
    expect(messages(john)).to_have_text(["lunch? (from mary)", "staff meeting (from mary)"])
    # One Redis subscription per process delivers in publish order: once mary
    # has her own note, anything meant for her before it would have arrived.
    _notify(john, "mary", "yes!")
    expect(messages(mary)).to_have_text(["yes! (from john)"])
    expect(messages(john)).to_have_text(["lunch? (from mary)", "staff meeting (from mary)"])


def test_notifications_page_asks_anonymous_visitors_to_log_in(daphne, pages):
    page = pages.open(daphne, "/notifications/")
    expect(page.locator("#status")).to_contain_text("log in first")
    assert page.evaluate("() => window.demo === undefined")


def test_session_messages_reach_the_tabs_of_that_session_only(daphne, redis_client, pages):
    browser_one = pages.context()
    tab1 = pages.open(daphne, "/session/", browser_one)
    tab2 = pages.open(daphne, "/session/", browser_one)
    other = pages.open(daphne, "/session/")
    for page in (tab1, tab2, other):
        connected(page)
    key = tab1.locator("#session-key").inner_text()
    assert key == tab2.locator("#session-key").inner_text() != other.locator("#session-key").inner_text()

    tab1.fill("#session-message", "for this browser")
    tab1.click("#session-send")
    expect(messages(tab1)).to_have_text(["for this browser"])
    expect(messages(tab2)).to_have_text(["for this browser"])
    redis_client.publish(f"{key}:session", "raw, for this browser")
    other.fill("#session-message", "for the other browser")
    other.click("#session-send")
    expect(messages(other)).to_have_text(["for the other browser"])
    expect(messages(tab2)).to_have_text(["for this browser", "raw, for this browser"])


def test_logged_in_session_page_publishes_through_its_socket(daphne, redis_client, pages):
    tab1 = _log_in(pages, daphne, "mary", "/session/")
    tab2 = pages.open(daphne, "/session/", tab1.context)
    connected(tab1)
    connected(tab2)
    tab1.fill("#socket-message", "through the socket")
    tab1.press("#socket-message", "Enter")
    expect(messages(tab2)).to_have_text(["through the socket"])
    expect(messages(tab1)).to_have_text(["through the socket"])  # echo


def test_chat_page_reconnects_after_a_daphne_restart_with_replay_and_no_duplicate(
    daphne_factory, redis_client, pages
):
    from ws4redis_channels.publisher import publish

    server = daphne_factory()
    page = pages.open(server, "/chat/")
    connected(page)
    chat_say(page, "before the restart")
    expect(messages(page)).to_have_text(["before the restart"])
    status = page.locator("#status")

    server.stop()
    expect(status).to_have_attribute("data-state", "reconnecting")
    publish("chat", "published while down", broadcast=True)  # stored for replay
    server.start()
    connected(page, RECONNECT_MS)
    expect(messages(page)).to_have_text(["before the restart", "published while down"])
    chat_say(page, "after the restart")
    expect(messages(page)).to_have_text(
        ["before the restart", "published while down", "after the restart"]
    )

    # Again, with nothing new stored: the replayed message is one the page has.
    server.stop()
    expect(status).to_have_attribute("data-state", "reconnecting")
    chat_say(page, "typed while down")
    expect(page.locator("#chat-note")).to_contain_text("waiting")
    server.start()
    connected(page, RECONNECT_MS)
    assert json.loads(redis_client.get("_broadcast_:chat"))["text"] in (
        "after the restart",
        "typed while down",
    )
    redis_client.publish("_broadcast_:chat", "live after the second restart")
    expect(messages(page)).to_have_text(
        [
            "before the restart",
            "published while down",
            "after the restart",
            "typed while down",
            "live after the second restart",
        ]
    )


# -- heartbeat -----------------------------------------------------------------------


def test_heartbeat_keeps_an_idle_page_connected_and_is_never_published(daphne, redis_client, pages):
    page = pages.open(daphne, "/")
    record(
        page,
        uri=socket_uri(daphne, "/ws/chat?subscribe-broadcast&publish-broadcast"),
        heartbeat_msg=HEARTBEAT,
        heartbeat_interval=100,
        heartbeat_timeout=1000,
    )
    page.evaluate(
        """(uri) => {
          window.listener = [];
          const other = WS4Redis({uri});
          other.on("message", (data) => window.listener.push(data));
          window.other = other;
        }""",
        socket_uri(daphne, "/ws/chat?subscribe-broadcast"),
    )
    wait_for(page, "rec.beats.length >= 20")  # two idle seconds
    assert recorded(page, "closes") == []
    assert recorded(page, "opens") == 1
    assert recorded(page, "client.state") == "open"
    assert recorded(page, "messages") == []  # the echo is not a message
    assert all(rtt is not None and rtt < 1000 for rtt in recorded(page, "beats"))
    page.evaluate("() => window.rec.client.send('a real message')")
    page.wait_for_function("() => window.listener.length >= 1")
    assert page.evaluate("() => window.listener") == ["a real message"]


def test_a_server_that_stops_answering_is_detected_and_left(daphne_factory, redis_client, pages):
    server = daphne_factory()
    page = pages.open(server, "/")
    interval, timeout = 300, 1000
    record(
        page,
        uri=socket_uri(server, "/ws/stall?subscribe-broadcast"),
        heartbeat_msg=HEARTBEAT,
        heartbeat_interval=interval,
        heartbeat_timeout=timeout,
        connect_timeout=1000,
        reconnect_delay=100,
        reconnect_max_delay=400,
    )
    wait_for(page, "rec.beats.length >= 2")
    assert server.process is not None
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.time() * 1000
    try:
        wait_for(page, "rec.closes.length >= 1")
        first = recorded(page, "closes[0]")
        assert "heartbeat" in first["reason"]
        assert first["code"] == 1006 and first["retry"] is True
        # Detected within one interval (the next heartbeat) plus the timeout, and some slack.
        assert first["at"] - stopped_at < interval + timeout + 1000
        assert recorded(page, "client.state") != "open"
        # Attempts against the stalled process give up instead of hanging.
        wait_for(page, "rec.closes.some((c) => c.reason.includes('handshake'))")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(page, "rec.client.state === 'open'", RECONNECT_MS)
    redis_client.publish("_broadcast_:stall", "alive again")
    wait_for(page, "rec.messages.includes('alive again')")


# -- reconnecting: backoff, buffer, close codes ----------------------------------------


def test_backoff_grows_exponentially_up_to_the_bound(daphne, pages):
    page = pages.open(daphne, "/")
    page.evaluate("() => { Math.random = () => 0.999999; }")  # the top of each jitter range
    nobody = f"ws://127.0.0.1:{free_port()}/ws/foobar?subscribe-broadcast"
    record(page, uri=nobody, reconnect_delay=20, reconnect_max_delay=300)
    wait_for(page, "rec.closes.length >= 9")
    page.evaluate("() => window.rec.client.close()")
    closes = recorded(page, "closes")[:8]
    assert [c["attempt"] for c in closes] == list(range(8))
    assert all(c["retry"] for c in closes)
    assert [c["delay"] for c in closes] == [19, 39, 79, 159, 299, 299, 299, 299]


def test_backoff_jitter_is_full_and_bounded(daphne, pages):
    page = pages.open(daphne, "/")
    nobody = f"ws://127.0.0.1:{free_port()}/ws/foobar?subscribe-broadcast"
    record(page, uri=nobody, reconnect_delay=20, reconnect_max_delay=200)
    wait_for(page, "rec.closes.length >= 16")
    page.evaluate("() => window.rec.client.close()")
    closes = recorded(page, "closes")[:15]
    for close in closes:
        assert 0 <= close["delay"] <= min(200, 20 * 2 ** close["attempt"])
    late = [c["delay"] for c in closes if c["attempt"] >= 4]
    assert len(set(late)) > 1  # random, not a fixed schedule
    assert recorded(page, "connecting") == 16  # the first attempt and one per retry


def test_backoff_resets_after_a_connection_that_stayed_open(daphne, redis_client, pages):
    page = pages.open(daphne, "/")
    # 60 frames at once exceed the publish rate limit: the server closes with 4429 (retry).
    flood = "() => { for (let i = 0; i < 60; i++) window.rec.client.send('x' + i); }"
    record(
        page,
        uri=socket_uri(daphne, "/ws/chat?publish-broadcast"),
        reconnect_delay=50,
        reconnect_max_delay=200,
        reconnect_reset_after=1000,
    )
    wait_for(page, "rec.opens === 1")
    page.evaluate(flood)
    wait_for(page, "rec.opens === 2")
    page.evaluate(flood)  # a short-lived connection does not reset the backoff
    wait_for(page, "rec.opens === 3")
    page.wait_for_timeout(1200)  # this one stays open past reconnect_reset_after
    page.evaluate(flood)
    wait_for(page, "rec.opens === 4")
    page.evaluate("() => window.rec.client.close()")
    closes = recorded(page, "closes")
    assert [(c["code"], c["attempt"]) for c in closes[:3]] == [(4429, 0), (4429, 1), (4429, 0)]


def test_sends_while_connecting_are_buffered_bounded_and_sent_in_order(daphne, redis_client, pages):
    page = pages.open(daphne, "/")
    record(
        page,
        uri=socket_uri(daphne, "/ws/chat?subscribe-broadcast&publish-broadcast&echo"),
        max_buffered=3,
    )
    accepted = page.evaluate(
        "() => ['1', '2', '3', '4', '5'].map((m) => window.rec.client.send(m))"
    )
    assert accepted == [True, True, True, False, False]
    assert recorded(page, "client.buffered") == 3
    wait_for(page, "rec.messages.length >= 3")
    assert recorded(page, "client.buffered") == 0
    page.evaluate("() => window.rec.client.send('6')")
    wait_for(page, "rec.messages.length >= 4")
    assert recorded(page, "messages") == ["1", "2", "3", "6"]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/ws/a:b?subscribe-broadcast", 4400),
        ("/ws/news?subscribe-user", 4401),
        ("/ws/news?subscribe-broadcast", 4403),
    ],
)
def test_close_codes_that_mean_do_not_retry_stop_reconnecting(daphne, pages, path, code):
    page = pages.open(daphne, "/")
    record(page, uri=socket_uri(daphne, path), reconnect_delay=10, reconnect_max_delay=20)
    if code == 4403:  # a frame on a socket that may not publish
        wait_for(page, "rec.opens === 1")
        page.evaluate("() => window.rec.client.send('not allowed')")
    wait_for(page, "rec.client.state === 'closed'")
    page.wait_for_timeout(300)  # a retry would have started by now
    closes = recorded(page, "closes")
    assert [(c["code"], c["retry"], c["delay"]) for c in closes] == [(code, False, None)]
    assert recorded(page, "connecting") == 1
    assert page.evaluate("() => window.rec.client.send('after')") is False


def test_close_stops_the_client_for_good(daphne, pages):
    page = pages.open(daphne, "/")
    record(
        page,
        uri=socket_uri(daphne, "/ws/foobar?subscribe-broadcast"),
        reconnect_delay=10,
        reconnect_max_delay=20,
    )
    wait_for(page, "rec.opens === 1")
    page.evaluate("() => window.rec.client.close()")
    assert recorded(page, "client.state") == "closed"
    page.wait_for_timeout(300)
    closes = recorded(page, "closes")
    assert [(c["code"], c["retry"]) for c in closes] == [(1000, False)]
    assert recorded(page, "connecting") == 1
    assert page.evaluate("() => window.rec.client.send('after close')") is False


def test_django_websocket_redis_callbacks_and_methods_work(daphne, redis_client, pages):
    page = pages.open(daphne, "/")
    page.evaluate(
        """(uri) => {
          const log = window.log = [];
          const ws = window.ws = WS4Redis({  // no `new`, as with the original client
            uri: uri,
            heartbeat_msg: "--heartbeat--",
            connecting: () => log.push("connecting"),
            connected: () => log.push("connected:" + ws.get_state() + ":" + ws.is_connected()),
            receive_message: (msg) => log.push("message:" + msg),
            disconnected: (evt) => log.push("disconnected:" + evt.code),
          });
          log.push("created:" + ws.is_connecting());
        }""",
        socket_uri(daphne, "/ws/chat?subscribe-broadcast&publish-broadcast&echo"),
    )
    page.wait_for_function("() => window.log.length >= 3")
    page.evaluate("() => window.ws.send_message('compatible')")
    page.wait_for_function("() => window.log.length >= 4")
    page.evaluate("() => window.ws.close()")
    log = page.evaluate("() => window.log")
    assert log == [
        "connecting",
        "created:true",
        "connected:1:true",
        "message:compatible",
        "disconnected:1000",
    ]
    assert page.evaluate("() => [window.ws.is_closed(), window.ws.get_state()]") == [True, 3]


def test_bad_options_fail_loudly(daphne, pages):
    page = pages.open(daphne, "/")
    errors = page.evaluate(
        """() => [() => WS4Redis({}), () => WS4Redis({uri: "ftp://x/"}),
                  () => WS4Redis({uri: "/ws/x"}).on("nonsense", () => {}),
                  () => WS4Redis({uri: "/ws/x"}).close(1006)]
          .map((f) => { try { f(); return null; } catch (e) { return e.name; } })"""
    )
    assert errors == ["TypeError", "TypeError", "TypeError", "RangeError"]


def test_a_path_uri_takes_scheme_and_host_from_the_page(daphne, pages):
    page = pages.open(daphne, "/")
    record(page, uri="/ws/foobar?subscribe-broadcast")
    assert recorded(page, "client.url") == daphne.url("/ws/foobar?subscribe-broadcast")
    wait_for(page, "rec.opens === 1")

