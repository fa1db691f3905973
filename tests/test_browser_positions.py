# ruff: noqa: F811  (the fixtures of test_browser are imported, then used as arguments)
"""In Chromium: the shipped client resumes by position, reports recovery, and closes the
render-to-open gap with the page's ws4redis_positions tag."""

from __future__ import annotations

import asyncio
import signal
import threading

import pytest

from tests.test_browser import (  # noqa: F401  (fixtures)
    MS,
    RECONNECT_MS,
    browser,
    js,
    pages,
)
from ws4redis_channels import publisher

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

RECORDER = """() => {
window.record = (options) => {
  const rec = {opens: 0, messages: [], infos: [], recovered: []};
  rec.client = WS4Redis(options);
  rec.client.on("open", () => { rec.opens += 1; });
  rec.client.on("message", (data, event, info) => { rec.messages.push(data); rec.infos.push(info); });
  rec.client.on("recovered", (ok, channels) => { rec.recovered.push({ok, channels}); });
  window.rec = rec;
  return true;
};
}"""


async def record(page, **options) -> None:
    await js(page, RECORDER)
    await js(page, "(options) => window.record(options)", options)


async def wait_for(page, condition: str, timeout: int = MS) -> None:
    await page.wait_for_function(
        f"() => {{ const rec = window.rec; return {condition}; }}", timeout=timeout
    )


async def recorded(page, expression: str):
    return await js(page, f"() => window.rec.{expression}")


async def test_a_message_published_between_render_and_open_reaches_the_page(
    daphne, redis_client, pages
):
    page = await pages.open(daphne, "/")  # rendered with {% ws4redis_positions "foobar" %}
    meta = await js(page, "() => document.querySelector('meta[name=ws4redis-positions]').content")
    assert meta.startswith("broadcast:")
    # Published after the render, before any socket exists; not stored (expire 0), so
    # only the history can bring it.
    publisher.publish("foobar", "between render and open", broadcast=True, expire=0)
    await record(page, uri="/ws/foobar?subscribe-broadcast")
    await wait_for(page, "rec.messages.length === 1")
    assert await recorded(page, "messages") == ["between render and open"]
    assert await recorded(page, "recovered") == [
        {"ok": True, "channels": {"broadcast": "recovered"}}
    ]
    # A client that does not use positions misses it: the gap is real.
    await js(
        page,
        """() => { window.plain = []; window.plainOpen = false;
                   WS4Redis({uri: "/ws/foobar?subscribe-broadcast", positions: false,
                             connected: () => { window.plainOpen = true; },
                             receive_message: (m) => window.plain.push(m)}); }""",
    )
    await page.wait_for_function("() => window.plainOpen", timeout=MS)
    publisher.publish("foobar", "marker", broadcast=True, expire=0)
    await wait_for(page, "rec.messages.length === 2")
    await page.wait_for_function("() => window.plain.length === 1", timeout=MS)
    assert await js(page, "() => window.plain") == ["marker"]


def _publish_stream(count: int, stop: threading.Event, rate: float = 30.0) -> None:
    for i in range(count):
        if stop.is_set():
            return
        publisher.publish("chat", f"n{i}", broadcast=True)
        stop.wait(1 / rate)


async def test_the_page_gets_each_message_once_in_order_across_a_daphne_kill(
    daphne_factory, redis_client, pages
):
    server = daphne_factory()
    page = await pages.open(server, "/")
    await record(
        page, uri="/ws/chat?subscribe-broadcast", reconnect_delay=100, reconnect_max_delay=500
    )
    await wait_for(page, "rec.opens === 1")
    stop = threading.Event()
    count = 90  # the demo keeps 100 per channel: all of the missed ones are in it
    stream = threading.Thread(target=_publish_stream, args=(count, stop))
    stream.start()
    try:
        await wait_for(page, "rec.messages.length >= 20")
        await asyncio.to_thread(server.stop, signal.SIGKILL)
        await asyncio.to_thread(server.start)
        await wait_for(page, "rec.opens === 2", RECONNECT_MS)
        await asyncio.to_thread(stream.join, 60)
        try:
            await wait_for(page, f"rec.messages.length >= {count}", RECONNECT_MS)
        except Exception:
            print(await recorded(page, "messages"), await recorded(page, "recovered"))
            print(await recorded(page, "infos"))
            raise
    finally:
        stop.set()
        stream.join(10)
    publisher.publish("chat", "marker", broadcast=True)
    await wait_for(page, "rec.messages.includes('marker')")
    got = await recorded(page, "messages")
    assert got == [f"n{i}" for i in range(count)] + ["marker"]
    recovered = await recorded(page, "recovered")
    assert [r["ok"] for r in recovered] == [True]


async def test_positions_can_survive_a_reload_with_session_storage(daphne, redis_client, pages):
    page = await pages.open(daphne, "/")
    await record(page, uri="/ws/keep?subscribe-broadcast", keep_positions=True)
    await wait_for(page, "rec.opens === 1")
    publisher.publish("keep", "before the reload", broadcast=True)
    await wait_for(page, "rec.messages.length === 1")
    await page.reload()
    publisher.publish("keep", "during the reload", broadcast=True, expire=0)
    await record(page, uri="/ws/keep?subscribe-broadcast", keep_positions=True)
    await wait_for(page, "rec.messages.length === 1")
    assert await recorded(page, "messages") == ["during the reload"]
    assert (await recorded(page, "recovered"))[0]["ok"] is True
