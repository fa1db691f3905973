"""In Chromium: the migrated django-websocket-redis 0.6 project's pages, and subprotocols.

The pages of ``tests/oldchat`` load the client from the old static path
(``{{ STATIC_URL }}js/ws4redis.js``) and use the old client API
(``WS4Redis({uri, receive_message, heartbeat_msg})``, ``send_message``)
with the heartbeat literal of the context processor, unchanged.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests import test_browser, test_oldchat
from tests.test_browser import MS, Pages, js
from tests.test_oldchat import PASSWORD

# The fixtures of those modules, used here too.
browser = test_browser.browser
pages = test_browser.pages
oldchat = test_oldchat.oldchat

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(180),
]


def billboard(page: Page):  # type: ignore[no-untyped-def]
    return page.locator("#billboard .message")


async def connected(page: Page) -> None:
    await expect(page.locator("body")).to_have_attribute("data-connected", "yes", timeout=MS)


async def log_in(pages: Pages, server, username: str, path: str) -> Page:  # type: ignore[no-untyped-def]
    page = await pages.open(server, f"/accounts/login/?next={path}")
    await page.fill("#id_username", username)
    await page.fill("#id_password", PASSWORD)
    await page.click("#login_submit")
    await expect(page.locator("#whoami")).to_have_text(username)
    return page


async def test_the_old_chat_page_loads_the_old_client_path_and_chats(oldchat, redis_client, pages):
    alice = await pages.open(oldchat, "/chat/")
    await connected(alice)
    assert await js(alice, "() => typeof WS4Redis") == "function"
    # The view published (and stored) a welcome before the page connected: replayed.
    await expect(billboard(alice)).to_have_text(["Hello everybody"])
    bob = await pages.open(oldchat, "/chat/")
    await connected(bob)
    await expect(billboard(bob)).to_have_text(["Hello everybody"])
    await expect(billboard(alice)).to_have_text(["Hello everybody", "Hello everybody"])
    await alice.fill("#text_message", "Hello from Alice")
    await alice.click("#send_message")
    await expect(billboard(bob)).to_have_text(["Hello everybody", "Hello from Alice"])
    await expect(billboard(alice)).to_have_text(
        ["Hello everybody", "Hello everybody", "Hello from Alice"]
    )


async def test_a_user_picked_in_the_user_chat_form_gets_the_message(oldchat, redis_client, pages):
    john = await log_in(pages, oldchat, "john", "/userchat/")
    await connected(john)
    mary = await log_in(pages, oldchat, "mary", "/userchat/")
    await connected(mary)
    await mary.fill("#text_message", "nobody hears this")
    await mary.select_option("#user", "")
    await mary.click("#send_message")
    await expect(mary.locator("body")).to_have_attribute("data-posted", "200")
    await mary.fill("#text_message", "lunch, john?")
    await mary.select_option("#user", "john")
    await mary.click("#send_message")
    await expect(billboard(john)).to_have_text(["lunch, john?"])
    await expect(billboard(mary)).to_have_count(0)


async def test_the_heartbeat_from_the_context_processor_is_answered(oldchat, redis_client, pages):
    page = await pages.open(oldchat, "/chat/")
    await connected(page)
    assert await js(page, "() => typeof ws4redis.on") == "function"
    await js(
        page,
        """() => { window.beats = [];
                   ws4redis.on("heartbeat", (rtt) => window.beats.push(rtt)); }""",
    )
    # The client sends one every 5 s (its default heartbeat_interval).
    await page.wait_for_function("() => window.beats.length >= 1", timeout=MS + 6000)
    await expect(billboard(page)).to_have_text(["Hello everybody"])  # never shown as a message


async def test_a_raw_websocket_asking_for_the_chat_subprotocol_opens(oldchat, redis_client, pages):
    page = await pages.open(oldchat, "/chat/")
    result = await js(
        page,
        """(port) => new Promise((resolve) => {
             const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/foobar?subscribe-broadcast`,
                                      ["chat"]);
             ws.onmessage = (event) => { resolve({protocol: ws.protocol, first: event.data});
                                         ws.close(); };
             ws.onclose = (event) => resolve({closed: event.code});
           })""",
        oldchat.port,
    )
    assert result == {"protocol": "chat", "first": "Hello everybody"}


async def test_the_client_with_protocols_option_opens_and_receives(oldchat, redis_client, pages):
    page = await pages.open(oldchat, "/chat/")
    await connected(page)
    result = await js(
        page,
        """(uri) => new Promise((resolve) => {
             const client = WS4Redis({uri: uri, protocols: ["v2.chat", "chat"],
                                      receive_message: (data) => { resolve(data); client.close(); }});
           })""",
        f"ws://127.0.0.1:{oldchat.port}/ws/foobar?subscribe-broadcast",
    )
    assert result == "Hello everybody"
