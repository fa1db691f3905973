"""In a real headless Chromium: the JavaScript client and the demo pages against daphne.

The browser is an installed Chromium or Chrome (``WS4REDIS_BROWSER``, else
the usual names and paths; see tests/browsers.py), Debian's ``chromium``
package installed with apt-get only as a fallback when running as root. It
is driven by Playwright for Python; Playwright's own browser downloads are
never needed.

Playwright's sync API keeps its event loop marked as running between calls,
which breaks pytest-asyncio's fixtures, so these tests use the async API on
one session-wide event loop (one browser for the whole run).

The pages are the demo project's, served by a real daphne. Tests of the
client's behaviour (backoff, buffer, close codes) create clients with
``page.evaluate`` on the explorer page and read what they recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright, expect

from testproject.redis_server import free_port
from tests.browsers import find_browser, find_or_install_browser
from tests.conftest import TIMEOUT
from tests.servers import Daphne

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

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),
    # Installing Chromium on a fresh machine takes minutes; the first test pays for it.
    pytest.mark.timeout(120 if find_browser() else 900),
]

MS = int(TIMEOUT * 1000)
# A restarted daphne takes a few seconds, and the page's own backoff (default
# options) waits up to 1, 2, 4, 8 s after successive failed attempts.
RECONNECT_MS = MS * 4

# Defines window.record(options): a client whose events are kept in window.rec.
RECORDER = """() => {
window.record = (options) => {
  const rec = {connecting: 0, opens: 0, closes: [], messages: [], beats: []};
  rec.client = WS4Redis(Object.assign({}, options, {connecting: () => { rec.connecting += 1; }}));
  rec.client.on("open", () => { rec.opens += 1; });
  rec.client.on("close", (info) => { rec.closes.push(Object.assign({at: Date.now()}, info)); });
  rec.client.on("message", (data) => { rec.messages.push(data); });
  rec.client.on("heartbeat", (rtt) => { rec.beats.push(rtt); });
  window.rec = rec;
  return true;
};
}"""


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    try:
        executable = await asyncio.to_thread(find_or_install_browser)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=MS * 6
        )
        yield browser
        await browser.close()


class Pages:
    """Opens pages in fresh browser contexts (one cookie jar each); records JavaScript errors."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    async def context(self) -> BrowserContext:
        context = await self.browser.new_context()
        context.set_default_timeout(MS)
        self.contexts.append(context)
        return context

    async def open(self, server: Daphne, path: str, context: BrowserContext | None = None) -> Page:
        page = await (context or await self.context()).new_page()
        page.on("pageerror", lambda error: self.errors.append(f"{path}: {error}"))
        await page.goto(server.http(path))
        return page

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def pages(browser: Browser) -> AsyncIterator[Pages]:
    opened = Pages(browser)
    yield opened
    await opened.close()
    assert not opened.errors, f"JavaScript errors: {opened.errors}"


async def js(page: Page, expression: str, arg: Any = None) -> Any:
    """Evaluate ``expression`` on ``page`` (evaluate itself has no timeout)."""
    return await asyncio.wait_for(page.evaluate(expression, arg), TIMEOUT)


async def connected(page: Page, timeout: int = MS) -> None:
    await expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=timeout)


def messages(page: Page) -> Locator:
    return page.locator("#messages .text")


async def chat_say(page: Page, text: str) -> None:
    await page.fill("#chat-text", text)
    await page.press("#chat-text", "Enter")


async def record(page: Page, **options: Any) -> None:
    """Create a client on ``page`` whose events are kept in ``window.rec``."""
    await js(page, RECORDER)
    await js(page, "(options) => window.record(options)", options)


async def recorded(page: Page, expression: str) -> Any:
    return await js(page, f"() => window.rec.{expression}")


async def wait_for(page: Page, condition: str, timeout: int = MS) -> None:
    """Wait until the JavaScript ``condition`` (about ``rec``) holds."""
    await page.wait_for_function(
        f"() => {{ const rec = window.rec; return {condition}; }}", timeout=timeout
    )


# -- the demo pages ------------------------------------------------------------------


async def test_client_script_loads_from_daphne_as_script_and_as_module(daphne, pages):
    page = await pages.open(daphne, "/")
    assert await js(page, "() => typeof WS4Redis") == "function"
    module = await js(
        page,
        """async () => {
          const m = await import("/static/ws4redis_channels/ws4redis.mjs");
          return {same: m.default === m.WS4Redis, type: typeof m.default,
                  noRetry: m.default.NO_RETRY};
        }""",
    )
    from ws4redis_channels.codes import NO_RETRY

    assert module == {"same": True, "type": "function", "noRetry": sorted(NO_RETRY)}


async def test_chat_message_typed_in_one_page_appears_in_the_other(daphne, redis_client, pages):
    alice, bob = await pages.open(daphne, "/chat/"), await pages.open(daphne, "/chat/")
    await connected(alice)
    await connected(bob)
    await chat_say(alice, "Hello from Alice")
    await expect(messages(bob)).to_have_text(["Hello from Alice"])
    await expect(messages(alice)).to_have_text(["Hello from Alice"])  # echo
    await chat_say(bob, "Hi Alice")
    await expect(messages(alice)).to_have_text(["Hello from Alice", "Hi Alice"])
    await expect(messages(bob)).to_have_text(["Hello from Alice", "Hi Alice"])


async def test_raw_redis_publish_appears_in_the_explorer(daphne, redis_client, pages):
    page = await pages.open(daphne, "/")
    await page.fill("#facility", "rawtest")
    await page.click("#connect")
    await connected(page)
    commands = page.locator("#commands")
    url = os.environ["REDIS_URL"]  # the pages name the Redis in use
    await expect(commands).to_contain_text(
        f'redis-cli -u {url} PUBLISH _broadcast_:rawtest "Hello"'
    )
    assert redis_client.publish("_broadcast_:rawtest", "Hello from redis-py") == 1
    redis_client.publish("_broadcast_:other", "not for this page")
    redis_client.publish("_broadcast_:rawtest", "and a second one")
    await expect(messages(page)).to_have_text(["Hello from redis-py", "and a second one"])


async def test_explorer_reports_a_refused_facility_without_retrying(daphne, pages):
    page = await pages.open(daphne, "/")
    await page.fill("#facility", "a:b")
    await page.click("#connect")
    status = page.locator("#status")
    await expect(status).to_have_attribute("data-state", "closed")
    await expect(status).to_contain_text("4400")
    await expect(status).to_contain_text("not retrying")


async def _log_in(pages: Pages, server: Daphne, username: str, path: str) -> Page:
    page = await pages.open(server, path)
    await page.click(f"#login-{username}")
    await expect(page.locator("#whoami")).to_have_text(username)
    return page


async def _notify(page: Page, to: str, message: str) -> None:
    result = page.locator("#notify-result")
    before = await result.get_attribute("data-published") or "0"
    await page.select_option("#notify-to", to)
    await page.fill("#notify-message", message)
    await page.click("#notify-send")
    await expect(result).to_have_attribute("data-published", str(int(before) + 1))


async def test_notification_to_a_user_shows_on_that_users_page_only(daphne, redis_client, pages):
    john = await _log_in(pages, daphne, "john", "/notifications/")
    mary = await _log_in(pages, daphne, "mary", "/notifications/")
    await connected(john)
    await connected(mary)
    await _notify(mary, "john", "lunch?")
    await expect(messages(john)).to_have_text(["lunch? (from mary)"])
    await _notify(mary, "staff", "staff meeting")  # john is in group staff, mary is not
    await expect(messages(john)).to_have_text(["lunch? (from mary)", "staff meeting (from mary)"])
    # One Redis subscription per process delivers in publish order: once mary
    # has a note sent after the others, anything meant for her before would be there.
    await _notify(john, "mary", "yes!")
    await expect(messages(mary)).to_have_text(["yes! (from john)"])
    await expect(messages(john)).to_have_text(["lunch? (from mary)", "staff meeting (from mary)"])


async def test_notifications_page_asks_anonymous_visitors_to_log_in(daphne, pages):
    page = await pages.open(daphne, "/notifications/")
    await expect(page.locator("#status")).to_contain_text("log in first")
    assert await js(page, "() => window.demo === undefined")


async def test_session_messages_reach_the_tabs_of_that_session_only(daphne, redis_client, pages):
    browser_one = await pages.context()
    tab1 = await pages.open(daphne, "/session/", browser_one)
    tab2 = await pages.open(daphne, "/session/", browser_one)
    other = await pages.open(daphne, "/session/")
    for page in (tab1, tab2, other):
        await connected(page)
    key = await tab1.locator("#session-key").inner_text()
    assert key == await tab2.locator("#session-key").inner_text()
    assert key != await other.locator("#session-key").inner_text()

    await tab1.fill("#session-message", "for this browser")
    await tab1.click("#session-send")
    await expect(messages(tab1)).to_have_text(["for this browser"])
    await expect(messages(tab2)).to_have_text(["for this browser"])
    redis_client.publish(f"{key}:session", "raw, for this browser")
    await other.fill("#session-message", "for the other browser")
    await other.click("#session-send")
    await expect(messages(other)).to_have_text(["for the other browser"])
    await expect(messages(tab2)).to_have_text(["for this browser", "raw, for this browser"])


async def test_logged_in_session_page_publishes_through_its_socket(daphne, redis_client, pages):
    tab1 = await _log_in(pages, daphne, "mary", "/session/")
    tab2 = await pages.open(daphne, "/session/", tab1.context)
    await connected(tab1)
    await connected(tab2)
    await tab1.fill("#socket-message", "through the socket")
    await tab1.press("#socket-message", "Enter")
    await expect(messages(tab2)).to_have_text(["through the socket"])
    await expect(messages(tab1)).to_have_text(["through the socket"])  # echo


async def test_chat_page_reconnects_after_a_daphne_restart_with_replay_and_no_duplicate(
    daphne_factory, redis_client, pages
):
    from ws4redis_channels.publisher import publish

    server = daphne_factory()
    page = await pages.open(server, "/chat/")
    status = page.locator("#status")
    await connected(page)
    await chat_say(page, "before the restart")
    await expect(messages(page)).to_have_text(["before the restart"])

    await asyncio.to_thread(server.stop)
    await expect(status).to_have_attribute("data-state", "reconnecting")
    publish("chat", "published while down", broadcast=True)  # stored for replay
    await asyncio.to_thread(server.start)
    await connected(page, RECONNECT_MS)
    await expect(messages(page)).to_have_text(["before the restart", "published while down"])
    await chat_say(page, "after the restart")
    await expect(messages(page)).to_have_text(
        ["before the restart", "published while down", "after the restart"]
    )

    # Again, with nothing new stored: the replayed message is one the page has.
    await asyncio.to_thread(server.stop)
    await expect(status).to_have_attribute("data-state", "reconnecting")
    await chat_say(page, "typed while down")
    await expect(page.locator("#chat-note")).to_contain_text("waiting")
    stored = json.loads(redis_client.get("_broadcast_:chat"))
    assert stored["text"] == "after the restart"
    await asyncio.to_thread(server.start)
    await connected(page, RECONNECT_MS)
    redis_client.publish("_broadcast_:chat", "live after the second restart")
    await expect(messages(page)).to_have_text(
        [
            "before the restart",
            "published while down",
            "after the restart",
            "typed while down",
            "live after the second restart",
        ]
    )


async def test_replayed_duplicate_is_dropped_but_the_echo_of_a_repeat_sent_meanwhile_is_not(
    daphne_factory, redis_client, pages
):
    server = daphne_factory()
    page = await pages.open(server, "/")
    await record(
        page,
        uri=server.url("/ws/chat?subscribe-broadcast&publish-broadcast&echo"),
        reconnect_delay=100,
        reconnect_max_delay=300,
    )
    await js(page, "() => window.rec.client.send('same')")
    await wait_for(page, "rec.messages.length === 1")
    await asyncio.to_thread(server.stop)
    await wait_for(page, "rec.client.state !== 'open'")
    # Buffered: sent right after the reconnect, while the stored "same" is replayed.
    await js(page, "() => { window.rec.client.send('same'); window.rec.client.send('new'); }")
    await asyncio.to_thread(server.start)
    await wait_for(page, "rec.messages.includes('new')", RECONNECT_MS)
    redis_client.publish("_broadcast_:chat", "last")
    await wait_for(page, "rec.messages.includes('last')")
    assert await recorded(page, "messages") == ["same", "same", "new", "last"]
    assert await recorded(page, "opens") == 2


# -- heartbeat -----------------------------------------------------------------------


async def test_heartbeat_keeps_an_idle_page_connected_and_is_never_published(
    daphne, redis_client, pages
):
    page = await pages.open(daphne, "/")
    await record(
        page,
        uri=daphne.url("/ws/chat?subscribe-broadcast&publish-broadcast"),
        heartbeat_msg=HEARTBEAT,
        heartbeat_interval=100,
        heartbeat_timeout=1000,
    )
    await js(
        page,
        """(uri) => {
          window.listener = [];
          window.other = WS4Redis({uri});
          window.other.on("message", (data) => window.listener.push(data));
        }""",
        daphne.url("/ws/chat?subscribe-broadcast"),
    )
    await wait_for(page, "rec.beats.length >= 20")  # two idle seconds
    assert await recorded(page, "closes") == []
    assert await recorded(page, "opens") == 1
    assert await recorded(page, "client.state") == "open"
    assert await recorded(page, "messages") == []  # the echo is not a message
    assert all(rtt is not None and rtt < 1000 for rtt in await recorded(page, "beats"))
    await js(page, "() => window.rec.client.send('a real message')")
    await page.wait_for_function("() => window.listener.length >= 1")
    assert await js(page, "() => window.listener") == ["a real message"]


async def test_a_server_that_stops_answering_is_detected_and_left(
    daphne_factory, redis_client, pages
):
    server = daphne_factory()
    page = await pages.open(server, "/")
    interval, timeout = 300, 1000
    await record(
        page,
        uri=server.url("/ws/stall?subscribe-broadcast"),
        heartbeat_msg=HEARTBEAT,
        heartbeat_interval=interval,
        heartbeat_timeout=timeout,
        connect_timeout=1000,
        reconnect_delay=100,
        reconnect_max_delay=400,
    )
    await wait_for(page, "rec.beats.length >= 2")
    assert server.process is not None
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.time() * 1000
    try:
        await wait_for(page, "rec.closes.length >= 1")
        first = await recorded(page, "closes[0]")
        assert "heartbeat" in first["reason"]
        assert first["code"] == 1006
        assert first["retry"] is True
        # Noticed by the next heartbeat's deadline: one interval plus the timeout (and slack).
        assert first["at"] - stopped_at < interval + timeout + 1000
        assert await recorded(page, "client.state") != "open"
        # Attempts against the stalled process give up instead of hanging.
        await wait_for(page, "rec.closes.some((c) => c.reason.includes('handshake'))")
    finally:
        os.kill(pid, signal.SIGCONT)
    await wait_for(page, "rec.client.state === 'open'", RECONNECT_MS)
    redis_client.publish("_broadcast_:stall", "alive again")
    await wait_for(page, "rec.messages.includes('alive again')")


# -- reconnecting: backoff, buffer, close codes ----------------------------------------


async def test_backoff_grows_exponentially_up_to_the_bound(daphne, pages):
    page = await pages.open(daphne, "/")
    await js(page, "() => { Math.random = () => 0.999999; }")  # the top of each jitter range
    nobody = f"ws://127.0.0.1:{free_port()}/ws/foobar?subscribe-broadcast"
    await record(page, uri=nobody, reconnect_delay=20, reconnect_max_delay=300)
    await wait_for(page, "rec.closes.length >= 9")
    await js(page, "() => window.rec.client.close()")
    closes = (await recorded(page, "closes"))[:8]
    assert [c["attempt"] for c in closes] == list(range(8))
    assert all(c["retry"] for c in closes)
    assert [c["delay"] for c in closes] == [19, 39, 79, 159, 299, 299, 299, 299]


async def test_backoff_jitter_is_full_and_bounded(daphne, pages):
    page = await pages.open(daphne, "/")
    nobody = f"ws://127.0.0.1:{free_port()}/ws/foobar?subscribe-broadcast"
    await record(page, uri=nobody, reconnect_delay=20, reconnect_max_delay=200)
    await wait_for(page, "rec.closes.length >= 12")
    await js(page, "() => window.rec.client.close()")
    closes = (await recorded(page, "closes"))[:12]
    for close in closes:
        assert 0 <= close["delay"] <= min(200, 20 * 2 ** close["attempt"])
    late = [c["delay"] for c in closes if c["attempt"] >= 3]
    assert len(set(late)) > 1  # random, not a fixed schedule


async def test_backoff_resets_after_a_connection_that_stayed_open(daphne, redis_client, pages):
    page = await pages.open(daphne, "/")
    # 60 frames at once exceed the publish rate limit: the server closes with 4429 (retry).
    flood = "() => { for (let i = 0; i < 60; i++) window.rec.client.send('x' + i); }"
    await record(
        page,
        uri=daphne.url("/ws/chat?publish-broadcast"),
        reconnect_delay=50,
        reconnect_max_delay=200,
        reconnect_reset_after=1000,
    )
    await wait_for(page, "rec.opens === 1")
    await js(page, flood)
    await wait_for(page, "rec.opens === 2")
    await js(page, flood)  # a short-lived connection does not reset the backoff
    await wait_for(page, "rec.opens === 3")
    await page.wait_for_timeout(1200)  # this one stays open past reconnect_reset_after
    await js(page, flood)
    await wait_for(page, "rec.opens === 4")
    await js(page, "() => window.rec.client.close()")
    closes = await recorded(page, "closes")
    assert [(c["code"], c["attempt"]) for c in closes[:3]] == [(4429, 0), (4429, 1), (4429, 0)]


async def test_sends_while_connecting_are_buffered_bounded_and_sent_in_order(
    daphne, redis_client, pages
):
    page = await pages.open(daphne, "/")
    await js(page, RECORDER)
    # Created and used in one go: the socket cannot have opened yet.
    accepted = await js(
        page,
        """(uri) => {
          window.record({uri: uri, max_buffered: 3});
          const accepted = ['1', '2', '3', '4', '5'].map((m) => window.rec.client.send(m));
          return [accepted, window.rec.client.buffered, window.rec.client.state];
        }""",
        daphne.url("/ws/chat?subscribe-broadcast&publish-broadcast&echo"),
    )
    assert accepted == [[True, True, True, False, False], 3, "connecting"]
    await wait_for(page, "rec.messages.length >= 3")
    assert await recorded(page, "client.buffered") == 0
    await js(page, "() => window.rec.client.send('6')")
    await wait_for(page, "rec.messages.length >= 4")
    assert await recorded(page, "messages") == ["1", "2", "3", "6"]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/ws/a:b?subscribe-broadcast", 4400),
        ("/ws/news?subscribe-user", 4401),
        ("/ws/news?subscribe-broadcast", 4403),
    ],
)
async def test_close_codes_that_mean_do_not_retry_stop_reconnecting(daphne, pages, path, code):
    page = await pages.open(daphne, "/")
    await record(page, uri=daphne.url(path), reconnect_delay=10, reconnect_max_delay=20)
    if code == 4403:  # a frame on a socket that may not publish
        await wait_for(page, "rec.opens === 1")
        await js(page, "() => window.rec.client.send('not allowed')")
    await wait_for(page, "rec.client.state === 'closed'")
    await page.wait_for_timeout(300)  # a retry would have started by now
    closes = await recorded(page, "closes")
    assert [(c["code"], c["retry"], c["delay"]) for c in closes] == [(code, False, None)]
    assert await recorded(page, "connecting") == 1
    assert await js(page, "() => window.rec.client.send('after')") is False


async def test_close_stops_the_client_for_good(daphne, pages):
    page = await pages.open(daphne, "/")
    await record(
        page,
        uri=daphne.url("/ws/foobar?subscribe-broadcast"),
        reconnect_delay=10,
        reconnect_max_delay=20,
    )
    await wait_for(page, "rec.opens === 1")
    await js(page, "() => window.rec.client.close()")
    assert await recorded(page, "client.state") == "closed"
    await page.wait_for_timeout(300)  # a retry would have started by now
    closes = await recorded(page, "closes")
    assert [(c["code"], c["retry"]) for c in closes] == [(1000, False)]
    assert await recorded(page, "connecting") == 1
    assert await js(page, "() => window.rec.client.send('after close')") is False


async def test_django_websocket_redis_callbacks_and_methods_work(daphne, redis_client, pages):
    page = await pages.open(daphne, "/")
    await js(
        page,
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
        daphne.url("/ws/chat?subscribe-broadcast&publish-broadcast&echo"),
    )
    await page.wait_for_function("() => window.log.length >= 3")
    await js(page, "() => window.ws.send_message('compatible')")
    await page.wait_for_function("() => window.log.length >= 4")
    await js(page, "() => window.ws.close()")
    assert await js(page, "() => window.log") == [
        "connecting",
        "created:true",
        "connected:1:true",
        "message:compatible",
        "disconnected:1000",
    ]
    assert await js(page, "() => [window.ws.is_closed(), window.ws.get_state()]") == [True, 3]


async def test_a_failing_listener_is_reported_and_harms_nothing_else(daphne, redis_client, pages):
    page = await pages.open(daphne, "/")
    await js(
        page,
        """(uri) => {
          const got = window.got = [];
          const ws = WS4Redis({uri});
          const removed = () => got.push("removed listener called");
          ws.on("message", () => { throw new Error("listener bug"); });
          ws.on("message", removed).off("message", removed);
          ws.on("message", (data) => got.push(data));
          ws.on("open", () => got.push("open"));
        }""",
        daphne.url("/ws/listeners?subscribe-broadcast"),
    )
    await page.wait_for_function("() => window.got.includes('open')")
    redis_client.publish("_broadcast_:listeners", "one")
    redis_client.publish("_broadcast_:listeners", "two")
    await page.wait_for_function("() => window.got.length >= 3")
    assert await js(page, "() => window.got") == ["open", "one", "two"]

    async def reported() -> None:
        while len(pages.errors) < 2:
            await asyncio.sleep(0.02)  # page errors arrive as Playwright events

    await asyncio.wait_for(reported(), TIMEOUT)
    assert len(pages.errors) == 2 and all("listener bug" in e for e in pages.errors)
    pages.errors.clear()


async def test_bad_options_fail_loudly(daphne, pages):
    page = await pages.open(daphne, "/")
    errors = await js(
        page,
        """() => [() => WS4Redis({}), () => WS4Redis({uri: "ftp://x/"}),
                  () => WS4Redis({uri: "/ws/x"}).on("nonsense", () => {}),
                  () => WS4Redis({uri: "/ws/x"}).close(1006)]
          .map((f) => { try { f(); return null; } catch (e) { return e.name; } })""",
    )
    assert errors == ["TypeError", "TypeError", "TypeError", "RangeError"]


async def test_a_path_uri_takes_scheme_and_host_from_the_page(daphne, pages):
    page = await pages.open(daphne, "/")
    await record(page, uri="/ws/foobar?subscribe-broadcast")
    assert await recorded(page, "client.url") == daphne.url("/ws/foobar?subscribe-broadcast")
    await wait_for(page, "rec.opens === 1")
