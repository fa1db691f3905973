"""The outbound side of a socket: hand-stepped sends, queueing behind slow sends, bounds."""

from __future__ import annotations

import asyncio

from ws4redis_channels.frames import Batch, Outbound
from ws4redis_channels.outlet import Outlet


def messages(*texts: str) -> Batch:
    return Batch([Outbound({"type": "websocket.send", "text": text}) for text in texts])


def make_outlet(send, max_buffer: int = 1000):
    events: list[str] = []
    outlet = Outlet(
        send,
        max_buffer=max_buffer,
        on_overflow=lambda: events.append("overflow"),
        on_redis_lost=lambda: events.append("redis lost"),
    )
    return outlet, events


async def test_messages_are_held_until_release():
    sent: list[dict] = []

    async def send(m):
        sent.append(m)

    outlet, _ = make_outlet(send)
    outlet.deliver(messages("a"))
    assert sent == []
    outlet.release()
    outlet.deliver(messages("b"))
    assert [m["text"] for m in sent] == ["a", "b"]  # synchronously, without a task


async def test_a_send_that_waits_queues_later_messages_in_order():
    sent: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    async def send(m):
        if m["text"] == "slow":
            await gate
        sent.append(m["text"])

    outlet, events = make_outlet(send)
    outlet.release()
    for text in ["first", "slow", "x", "y"]:
        outlet.deliver(messages(text))
    assert sent == ["first"]
    assert outlet.buffered() == 2
    gate.set_result(None)
    await asyncio.wait_for(outlet._task, 5)
    assert sent == ["first", "slow", "x", "y"]
    outlet.deliver(messages("z"))
    assert sent[-1] == "z" and events == []


async def test_a_socket_that_falls_too_far_behind_is_reported_once():
    gate = asyncio.get_running_loop().create_future()

    async def send(m):
        await gate

    outlet, events = make_outlet(send, max_buffer=10)
    outlet.release()
    for _ in range(20):
        outlet.deliver(messages("12345"))
    assert events == ["overflow"]
    assert outlet.closed and outlet.buffered() == 0
    await outlet.aclose()


async def test_redis_lost_is_passed_on_until_closed():
    async def send(m):
        pass

    outlet, events = make_outlet(send)
    outlet.redis_lost()
    await outlet.aclose()
    outlet.redis_lost()
    assert events == ["redis lost"]
