"""Timeouts that a busy event loop cannot trip: a reconnect storm never fakes a Redis outage."""

from __future__ import annotations

import asyncio
import time

import pytest

from ws4redis_channels import patience


def block(seconds: float) -> None:
    time.sleep(seconds)  # a loop iteration busy with thousands of handshakes


async def answer_after_a_starved_iteration() -> asyncio.Future[str]:
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[str] = loop.create_future()
    # The answer is ready 50 ms in, but the loop is then blocked for 0.6 s.
    loop.call_later(0.02, block, 0.6)
    loop.call_later(0.05, reply.set_result, "PONG")
    return reply


async def test_a_starved_loop_does_not_count_against_the_timeout():
    reply = await answer_after_a_starved_iteration()
    assert await asyncio.wait_for(patience.wait_for(reply, 0.3), 5) == "PONG"


async def test_a_silent_peer_still_times_out_on_a_free_loop():
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    began = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(patience.wait_for(never, 0.2), 5)
    assert time.monotonic() - began < 2
    assert never.cancelled()


async def test_cancelling_the_waiter_cancels_the_work():
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiter = asyncio.ensure_future(patience.wait_for(never, 10))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 5)
    assert never.cancelled()


async def test_errors_of_the_work_pass_through():
    async def fails() -> None:
        raise ConnectionRefusedError("no Redis here")

    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(patience.wait_for(fails(), 1), 5)


async def test_a_timeout_that_falls_inside_the_starved_iteration_is_extended():
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[str] = loop.create_future()
    # The waiter's 0.3 s timeout expires during the 0.6 s block; the answer
    # comes 0.1 s of free loop time after it.
    loop.call_later(0.02, block, 0.6)
    loop.call_later(0.7, reply.set_result, "PONG")
    assert await asyncio.wait_for(patience.wait_for(reply, 0.3), 5) == "PONG"


async def test_many_short_busy_iterations_do_not_count_against_the_timeout():
    loop = asyncio.get_running_loop()
    # A storm of handshakes: iterations of 15 ms each (a ticker woken a few
    # iterations later is late by less than the 50 ms the first version
    # ignored), for longer than the timeout.
    storm_ends = loop.time() + 3

    def handshakes() -> None:
        block(0.015)
        if loop.time() < storm_ends:
            loop.call_soon(handshakes)

    async def round_trips() -> str:
        for _ in range(40):  # a connect and its replies: one step per iteration
            await asyncio.sleep(0)
        return "PONG"

    loop.call_soon(handshakes)
    assert await asyncio.wait_for(patience.wait_for(round_trips(), 0.5), 10) == "PONG"


async def test_evidence_that_the_peer_answers_extends_the_wait():
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[str] = loop.create_future()
    asked = []

    def alive() -> bool:
        asked.append(loop.time())
        if len(asked) == 2:
            reply.set_result("late, but it answered")
        return True

    assert await asyncio.wait_for(patience.wait_for(reply, 0.05, alive=alive), 5) == (
        "late, but it answered"
    )
    assert len(asked) == 2


async def test_without_evidence_the_wait_ends_at_the_deadline():
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(patience.wait_for(never, 0.05, alive=lambda: False), 5)
