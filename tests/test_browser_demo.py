# ruff: noqa: F811  (the fixtures of test_browser are imported, then used as parameters)
"""The demo pages in a real headless Chromium: what a newcomer sees in the first hour."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from tests.test_browser import (  # noqa: F401  (fixtures)
    RECONNECT_MS,
    Pages,
    browser,
    connected,
    messages,
    pages,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def _connect(page, facility: str, *flags: str) -> None:
    await page.fill("#facility", facility)
    for box in await page.locator("input[name=flag]").all():
        if await box.get_attribute("value") in flags:
            await box.check()
        else:
            await box.uncheck()
    await page.click("#connect")
    await connected(page)


async def test_send_is_enabled_only_on_a_socket_with_a_publish_flag(daphne, pages: Pages):
    page = await pages.open(daphne, "/")
    send = page.locator("#send")
    await expect(send).to_be_disabled()  # not connected
    await _connect(page, "chat", "subscribe-broadcast")
    await expect(send).to_be_disabled()
    await expect(page.locator("#send-hint")).to_be_visible()
    await _connect(page, "chat", "subscribe-broadcast", "publish-broadcast", "echo")
    await expect(send).to_be_enabled()
    await expect(page.locator("#send-hint")).to_be_hidden()
    await page.fill("#message", "sent through the socket")
    await send.click()
    await expect(messages(page)).to_have_text(["sent through the socket"])


async def test_the_status_line_shows_the_heartbeat_round_trip(daphne, pages: Pages):
    page = await pages.open(daphne, "/")
    await _connect(page, "beats", "subscribe-broadcast")
    # The explorer's client sends a heartbeat every 5 s.
    await expect(page.locator("#status")).to_contain_text("heartbeat round trip", timeout=15000)
    assert int(await page.locator("#status").get_attribute("data-heartbeat")) >= 0


async def test_the_status_line_counts_reconnect_attempts(daphne_factory, pages: Pages):
    server = daphne_factory()
    page = await pages.open(server, "/chat/")
    status = page.locator("#status")
    await connected(page)
    await asyncio.to_thread(server.stop)
    # Each "attempt N in ..." shows only until that attempt fails, sometimes for less
    # than a locator's polling interval (the delays are jittered): watch it in the page.
    for n in (2, 3):
        await page.wait_for_function(
            """n => {
                const m = /attempt (\\d+) in/.exec(document.querySelector("#status").textContent);
                return m !== null && Number(m[1]) >= n;
            }""",
            arg=n,
            polling=20,
            timeout=RECONNECT_MS,
        )
    await asyncio.to_thread(server.start)
    await connected(page, RECONNECT_MS)
    await expect(status).to_have_text("connected")


async def test_a_stored_message_is_shown_with_its_expiry(daphne, redis_client, pages: Pages):
    page = await pages.open(daphne, "/")
    await _connect(page, "stored-demo", "subscribe-broadcast")
    await expect(page.locator("#stored")).to_contain_text("nothing stored for this facility")
    await page.fill("#publish-message", "kept for replay")
    await page.click("#publish")
    await expect(messages(page)).to_have_text(["kept for replay"])
    stored = page.locator("#stored li")
    await expect(stored).to_contain_text(
        ["broadcast (_broadcast_:stored-demo): kept for replay (expires in"]
    )
    await expect(page.locator("#expire-setting")).to_have_text("3600")


async def test_the_binary_demo_arrives_as_a_binary_frame(daphne, redis_client, pages: Pages):
    page = await pages.open(daphne, "/")
    await _connect(page, "binary-demo", "subscribe-broadcast")
    await page.fill("#publish-message", "Hi")
    await page.check("#publish-binary")
    await page.click("#publish")
    await expect(messages(page)).to_have_text(["[binary frame, 7 bytes: 00 01 02 fe ff 48 69]"])
    await expect(page.locator("#publish-result")).to_contain_text("7 binary bytes")


async def test_anonymous_visitors_are_told_they_cannot_publish_to_a_user(daphne, pages: Pages):
    page = await pages.open(daphne, "/")
    await page.select_option("#publish-audience", "users")
    await page.fill("#publish-target", "john")
    await page.fill("#publish-message", "not for john")
    await page.click("#publish")
    await expect(page.locator("#publish-result")).to_contain_text("log in to publish to a user")


async def test_the_home_page_links_the_docs_and_explains_facility_and_flags(daphne, pages: Pages):
    page = await pages.open(daphne, "/")
    await expect(page.locator("#intro")).to_contain_text("A facility is the name of a stream")
    await page.click("nav >> text=Docs")
    await expect(page).to_have_url(daphne.http("/docs/"))
