"""The garbage collector's first threshold is raised for websocket processes, never lowered."""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import Iterator

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tests.conftest import connect, recv
from ws4redis_channels import collector
from ws4redis_channels.conf import conf


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_the_first_threshold_is_raised_and_the_others_kept(thresholds, caplog):
    gc.set_threshold(700, 10, 10)
    with caplog.at_level(logging.INFO, logger="ws4redis_channels.collector"):
        assert collector.apply(20000)
    assert gc.get_threshold() == (20000, 10, 10)
    assert "from 700 to 20000" in caplog.text


def test_a_higher_threshold_disabled_collection_or_none_is_left_alone(thresholds):
    gc.set_threshold(50000, 20, 100)
    assert not collector.apply(20000)
    assert gc.get_threshold() == (50000, 20, 100)
    gc.set_threshold(0, 10, 10)  # automatic collection off: the process's choice
    assert not collector.apply(20000)
    assert gc.get_threshold() == (0, 10, 10)
    gc.set_threshold(700, 10, 10)
    assert not collector.apply(None)
    assert gc.get_threshold() == (700, 10, 10)


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


async def test_a_daphne_process_raises_it_when_its_first_socket_connects(daphne, redis_client):
    ws = await connect(daphne, "/ws/collector?subscribe-broadcast")
    try:
        redis_client.publish("_broadcast_:collector", "hello")
        assert await recv(ws) == "hello"
    finally:
        await ws.close()
    # From CPython's default (700 before 3.13).
    assert re.search(r"garbage collector's first threshold from \d+ to 20000", daphne.log())
