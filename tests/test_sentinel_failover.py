"""Sentinel failovers under load, with real processes: one master, one replica, three
Sentinels, a daphne process holding 400 sockets, and the app's Python publishers
(sync and async) publishing numbered stored messages throughout.

Each publication also goes to a channel of its own (the user ``n<k>``), so the
new master's keys show exactly which publications survived the failover.

Set ``WS4REDIS_FAILOVER_REPORT`` to a file name to get the measured times as
JSON lines (docs/howto/sentinel.rst quotes them).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from django.test import override_settings

from tests.conftest import TIMEOUT, connect
from tests.sentinels import SentinelGroup, Switch
from ws4redis_channels.publisher import apublish, publish
from ws4redis_channels.sentinel import stop_watchers

pytestmark = pytest.mark.slow

SOCKETS = 400
# Publications are paced: a steady stream like an application's, not a flood.
PACE = 0.02
# After a manual failover, delivery must resume before Sentinel demotes the old
# master (~10 s later; its connections drop then): that proves the bridge followed
# +switch-master rather than the demotion. Seconds alone would measure the machine's
# load: on a busy 2-core machine, resuming took 9 s while the switch itself was prompt.
# After a kill there is no demotion to compare with: the generous TIMEOUT bounds it.


@pytest.fixture
def sentinel_group(tmp_path: Any) -> Any:
    group = SentinelGroup(tmp_path).start()
    yield group
    stop_watchers()
    group.stop()


@dataclass
class Ledger:
    """What one publisher reported, per message number."""

    facility: str
    published: dict[int, float] = field(default_factory=dict)  # k -> when it returned
    failed: dict[int, str] = field(default_factory=dict)
    attempted: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def attempts(self, count: int, timeout: float) -> None:
        """Wait until ``count`` publications were attempted."""

        async def loop() -> None:
            while self.attempted < count:
                self.progress.clear()
                await self.progress.wait()

        await asyncio.wait_for(loop(), timeout)

    def last_published(self) -> int:
        return max(self.published, default=0)


@dataclass
class Reader:
    """One socket and the numbers it received, with when."""

    ws: Any
    facility: str
    got: list[tuple[int, float]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async for message in self.ws:
            self.got.append((int(message), time.monotonic()))
            self.arrived.set()

    def numbers(self) -> list[int]:
        return [k for k, _ in self.got]

    async def wait_for(self, predicate: Any, timeout: float) -> None:
        async def loop() -> None:
            while not predicate(self):
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(loop(), timeout)


async def _publish(ledger: Ledger, stop: asyncio.Event, *, sync: bool) -> None:
    while not stop.is_set():
        ledger.attempted += 1
        k = ledger.attempted
        kwargs = {"broadcast": True, "users": [f"n{k}"], "expire": 3600}
        try:
            if sync:
                await asyncio.to_thread(publish, ledger.facility, str(k), **kwargs)
            else:
                await asyncio.wait_for(apublish(ledger.facility, str(k), **kwargs), TIMEOUT)
        except Exception as exc:  # whatever it is, it is not a success
            ledger.failed[k] = repr(exc)
        else:
            ledger.published[k] = time.monotonic()
        ledger.progress.set()
        await asyncio.sleep(PACE)


async def _open_readers(server: Any, facilities: list[str]) -> list[Reader]:
    readers: list[Reader] = []
    for start in range(0, SOCKETS, 50):
        batch = [facilities[i % len(facilities)] for i in range(start, start + 50)]
        sockets = await asyncio.gather(
            *(connect(server, f"/ws/{facility}?subscribe-broadcast") for facility in batch)
        )
        readers.extend(Reader(ws, facility) for ws, facility in zip(sockets, batch, strict=True))
    for reader in readers:
        reader.task = asyncio.ensure_future(reader.run())
    return readers


def _report(scenario: str, **figures: Any) -> None:
    path = os.environ.get("WS4REDIS_FAILOVER_REPORT")
    line = json.dumps({"scenario": scenario, **figures})
    print(line)
    if path:
        with open(path, "a") as file:
            file.write(line + "\n")


async def _run_failover(
    group: SentinelGroup, daphne_factory: Any, scenario: str, fault: Any
) -> None:
    server = daphne_factory({"REDIS_URL": group.url})
    ledgers = [Ledger("failsync"), Ledger("failasync")]
    with override_settings(WS4REDIS_CONNECTION=group.url):
        readers = await _open_readers(server, [ledger.facility for ledger in ledgers])
        stop = asyncio.Event()
        switch: Switch | None = None
        publishers = [
            asyncio.ensure_future(_publish(ledgers[0], stop, sync=True)),
            asyncio.ensure_future(_publish(ledgers[1], stop, sync=False)),
        ]
        try:
            # Every socket is live before the fault.
            await asyncio.gather(*(r.wait_for(lambda r: r.got, 4 * TIMEOUT) for r in readers))

            switch = await fault(group)
            new_port = await switch.switched(4 * TIMEOUT)
            attempted_at_switch = {ledger.facility: ledger.attempted for ledger in ledgers}

            def resumed(reader: Reader) -> bool:
                return any(k > attempted_at_switch[reader.facility] for k in reader.numbers())

            # (Whether these came from the new master is checked below.)
            await asyncio.gather(*(r.wait_for(resumed, 4 * TIMEOUT) for r in readers))
            if scenario == "manual":
                # The old master is demoted and discards what it took meanwhile.
                await switch.demoted(4 * TIMEOUT)
            # A few more after the dust settled.
            await asyncio.gather(
                *(ledger.attempts(ledger.attempted + 20, 4 * TIMEOUT) for ledger in ledgers)
            )
        finally:
            stop.set()
            await asyncio.gather(*publishers, return_exceptions=True)
            if switch is not None:
                await switch.close()

        # Everything reported published reaches every socket in the end.
        last = {ledger.facility: ledger.last_published() for ledger in ledgers}
        await asyncio.gather(
            *(r.wait_for(lambda r: last[r.facility] in r.numbers(), 2 * TIMEOUT) for r in readers)
        )
        for reader in readers:
            assert reader.task is not None
            reader.task.cancel()
            await reader.ws.close()

    new_master = redis.Redis(port=new_port)
    kept = {key.decode() for key in new_master.keys("n*:fail*")}
    lost = {
        ledger.facility: [k for k in ledger.published if f"n{k}:{ledger.facility}" not in kept]
        for ledger in ledgers
    }
    # Delivery resumed when each socket got a publication made after the
    # switch that the new master kept (not one the old master took and lost).
    assert switch is not None and switch.switched_at is not None
    resume = max(
        next(
            (
                t
                for k, t in r.got
                if k > attempted_at_switch[r.facility] and f"n{k}:{r.facility}" in kept
            ),
            float("inf"),
        )
        for r in readers
    )
    twice = [r for r in readers if len(set(r.numbers())) != len(r.numbers())]
    older = [r for r in readers if _older_after_newer(r.numbers())]
    disordered = [r for r in readers if r.numbers() != sorted(set(r.numbers()))]
    _report(
        scenario,
        sockets=SOCKETS,
        fault_to_switch_s=round(switch.switched_at - switch.started, 2),
        switch_to_all_sockets_resumed_s=round(resume - switch.switched_at, 2),
        switch_to_demotion_s=(
            None if switch.demoted_at is None else round(switch.demoted_at - switch.switched_at, 2)
        ),
        published={ledger.facility: len(ledger.published) for ledger in ledgers},
        failed={ledger.facility: len(ledger.failed) for ledger in ledgers},
        reported_published_but_lost=lost,
        sockets_with_a_message_twice=len(twice),
        sockets_with_an_older_message_after_newer=len(older),
    )
    new_master.close()
    # The publisher never reported success for a write the failover discarded.
    assert lost == {ledger.facility: [] for ledger in ledgers}
    if scenario == "manual":
        assert switch.demoted_at is not None
        assert resume < switch.demoted_at, (
            f"resumed {resume - switch.switched_at:.2f} s after the switch, "
            f"{resume - switch.demoted_at:.2f} s after the old master was demoted"
        )
    else:
        assert resume - switch.switched_at < TIMEOUT
    # channels-redis logs its own reconnects with tracebacks; ours are single lines.
    assert "/ws4redis_channels/" not in server.log()
    # No socket got a message twice, nor an older stored message after newer ones.
    assert len(disordered) == 0, (
        f"{len(disordered)} of {SOCKETS} sockets received messages out of order, e.g. "
        f"{_around_disorder(disordered[0].numbers())}"
    )


async def test_manual_failover_serves_400_sockets_in_order_and_loses_no_confirmed_publication(
    sentinel_group: SentinelGroup, daphne_factory: Any
) -> None:
    await _run_failover(sentinel_group, daphne_factory, "manual", SentinelGroup.failover)


async def test_killed_master_serves_400_sockets_in_order_and_loses_no_confirmed_publication(
    sentinel_group: SentinelGroup, daphne_factory: Any
) -> None:
    await _run_failover(sentinel_group, daphne_factory, "kill", SentinelGroup.kill_master)


def _older_after_newer(numbers: list[int]) -> bool:
    highest = 0
    for k in numbers:
        if k < highest:
            return True
        highest = max(highest, k)
    return False


def _around_disorder(numbers: list[int]) -> list[int]:
    """The numbers around the first one that is not above its predecessor."""
    for i in range(1, len(numbers)):
        if numbers[i] <= numbers[i - 1]:
            return numbers[max(0, i - 5) : i + 5]
    return numbers[-10:]
