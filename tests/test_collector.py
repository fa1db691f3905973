"""The garbage collector's first threshold is raised during a surge of handshakes, then put back."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator

import pytest
import redis.asyncio
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tests.chaos.wire import open_clients
from tests.conftest import TIMEOUT
from ws4redis_channels.collector import CALM, SURGE, Surge
from ws4redis_channels.conf import conf


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_a_surge_raises_the_first_threshold_and_its_end_puts_it_back(thresholds, caplog):
    gc.set_threshold(700, 10, 10)
    surge = Surge()
    with caplog.at_level(logging.INFO, logger="ws4redis_channels.collector"):
        for _ in range(SURGE - 1):
            surge.started()
        assert gc.get_threshold() == (700, 10, 10)  # not yet a surge
        surge.started()
        assert gc.get_threshold() == (20000, 10, 10)
        for _ in range(SURGE - CALM - 1):
            surge.ended()
        assert gc.get_threshold() == (20000, 10, 10)  # not calm yet
        surge.ended()
        assert gc.get_threshold() == (700, 10, 10)
    assert "threshold is 20000 instead of 700" in caplog.text
    assert "over (at most 50 at once)" in caplog.text


def test_daphnes_start_begins_a_surge_the_first_calm_or_the_settle_ends(thresholds):
    gc.set_threshold(700, 10, 10)
    surge = Surge()
    surge.prime()  # daphne listens: a restart's storm may come
    assert gc.get_threshold() == (20000, 10, 10)
    surge.started()
    surge.ended()  # no storm: the first handshake is done alone
    assert gc.get_threshold() == (700, 10, 10)
    surge.prime()
    for _ in range(CALM + 1):
        surge.started()
    surge.settle()  # a storm in progress keeps it
    assert gc.get_threshold() == (20000, 10, 10)
    for _ in range(CALM + 1):
        surge.ended()
    assert gc.get_threshold() == (700, 10, 10)
    surge.prime()
    surge.settle()  # no websocket at all: Python's threshold again
    assert gc.get_threshold() == (700, 10, 10) and not surge.surging


def test_a_higher_threshold_disabled_collection_or_none_is_left_alone(thresholds):
    for own in ((50000, 20, 100), (0, 10, 10)):
        gc.set_threshold(*own)
        surge = Surge()
        for _ in range(SURGE):
            surge.started()
        assert gc.get_threshold() == own
        for _ in range(SURGE):
            surge.ended()
        assert gc.get_threshold() == own
    gc.set_threshold(700, 10, 10)
    with override_settings(WS4REDIS_GC_THRESHOLD=None):
        surge = Surge()
        for _ in range(SURGE):
            surge.started()
        assert gc.get_threshold() == (700, 10, 10)


def test_a_threshold_changed_during_the_surge_is_kept(thresholds):
    gc.set_threshold(700, 10, 10)
    surge = Surge()
    for _ in range(SURGE):
        surge.started()
    gc.set_threshold(3000, 10, 10)  # the project's own code
    for _ in range(SURGE):
        surge.ended()
    assert gc.get_threshold() == (3000, 10, 10)


def test_the_setting_is_an_int_or_none():
    assert conf.WS4REDIS_GC_THRESHOLD == 20000
    with override_settings(WS4REDIS_GC_THRESHOLD=None):
        assert conf.WS4REDIS_GC_THRESHOLD is None
    for wrong in ("20000", 2.5, -1, True):
        with (
            override_settings(WS4REDIS_GC_THRESHOLD=wrong),
            pytest.raises(ImproperlyConfigured, match="WS4REDIS_GC_THRESHOLD"),
        ):
            _ = conf.WS4REDIS_GC_THRESHOLD


async def test_daphne_raises_it_while_handshakes_pile_up_and_puts_it_back(
    daphne_factory, redis_server
):
    """Redis paused: the sockets' joins wait, so 80 handshakes are in progress at once."""
    server = daphne_factory({"WS4REDIS_LOG_LEVEL": "INFO"})
    path = "/ws/surge?subscribe-broadcast"
    control = redis.asyncio.Redis(port=redis_server.port)
    try:
        (first,) = await open_clients(server.port, [path], timeout=TIMEOUT)  # the bridge is up
        await control.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        clients = await open_clients(server.port, [path] * 80, timeout=TIMEOUT * 3)
        assert [c.close_code for c in clients if c.close_code is not None] == []
        await control.publish("_broadcast_:surge", b"after the surge")
        arrived = await asyncio.gather(
            *(c.wait_for(b"after the surge", TIMEOUT) for c in [first, *clients])
        )
        assert all(arrived)
        log = server.log()
        assert "daphne starts: a restart is when every browser comes back" in log
        assert "handshakes in progress: the garbage collector's first threshold is 20000" in log
        assert "The surge of websocket handshakes is over" in log
        for client in [first, *clients]:
            client.abort()
    finally:
        await control.execute_command("CLIENT", "UNPAUSE")
        await control.aclose()
