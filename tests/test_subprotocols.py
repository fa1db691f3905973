"""A client that offers subprotocols gets one selected in the 101 (``WS4REDIS_SUBPROTOCOLS``)."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tests.conftest import close_code, connect, recv
from ws4redis_channels.checks import check_settings
from ws4redis_channels.conf import conf
from ws4redis_channels.subprotocols import select_subprotocol


def test_the_first_offer_is_selected_by_default_and_a_list_filters_in_the_clients_order():
    assert select_subprotocol([], None) is None
    assert select_subprotocol(["chat", "v2"], None) == "chat"
    assert select_subprotocol(["v1", "v2", "chat"], ["chat", "v2"]) == "v2"
    assert select_subprotocol(["v1"], ["chat"]) is None
    assert select_subprotocol(["chat"], []) is None


def test_a_wrong_setting_is_reported_by_the_checks():
    with override_settings(WS4REDIS_SUBPROTOCOLS="chat"):
        with pytest.raises(ImproperlyConfigured, match="list of subprotocol names"):
            conf.WS4REDIS_SUBPROTOCOLS  # noqa: B018
        assert [m.id for m in check_settings()] == ["ws4redis_channels.E030"]
    with override_settings(WS4REDIS_SUBPROTOCOLS=["a b"]):
        assert [m.id for m in check_settings()] == ["ws4redis_channels.E030"]


async def test_a_client_offering_chat_gets_chat_in_the_101(daphne, redis_client):
    ws = await connect(daphne, "/ws/foobar?subscribe-broadcast", subprotocols=["chat"])
    assert ws.subprotocol == "chat"
    assert ws.response.headers["Sec-WebSocket-Protocol"] == "chat"
    redis_client.publish("_broadcast_:foobar", "over chat")
    assert await recv(ws) == "over chat"
    await ws.close()


async def test_of_several_offers_the_first_is_selected(daphne):
    ws = await connect(daphne, "/ws/foobar?subscribe-broadcast", subprotocols=["v2", "chat"])
    assert ws.subprotocol == "v2"
    await ws.close()


async def test_a_client_offering_nothing_gets_no_subprotocol(daphne):
    ws = await connect(daphne, "/ws/foobar?subscribe-broadcast")
    assert ws.subprotocol is None
    assert "Sec-WebSocket-Protocol" not in ws.response.headers
    await ws.close()


async def test_a_refused_socket_that_offered_a_subprotocol_still_gets_its_close_code(daphne):
    # Without a subprotocol in the 101 a browser would see 1006, not the 44xx code.
    ws = await connect(daphne, "/ws/bad%20name?subscribe-broadcast", subprotocols=["chat"])
    assert ws.subprotocol == "chat"
    assert await close_code(ws) == 4400
    ws = await connect(daphne, "/nowhere/?subscribe-broadcast", subprotocols=["chat"])
    assert ws.subprotocol == "chat"
    assert await close_code(ws) == 4404


async def test_a_configured_list_selects_the_clients_preferred_supported_offer(daphne_factory):
    settings = {"WS4REDIS_SUBPROTOCOLS": ["chat", "v2"]}
    server = daphne_factory(
        {
            "DJANGO_SETTINGS_MODULE": "tests.e2e_settings",
            "WS4REDIS_TEST_SETTINGS": json.dumps(settings),
        }
    )
    ws = await connect(server, "/ws/foobar?subscribe-broadcast", subprotocols=["v1", "v2", "chat"])
    assert ws.subprotocol == "v2"
    await ws.close()
    ws = await connect(server, "/ws/foobar?subscribe-broadcast", subprotocols=["v1"])
    assert ws.subprotocol is None
    await ws.close()
    assert "none in WS4REDIS_SUBPROTOCOLS" in server.log()
