"""The bound on handshakes in progress (accelerator/listeners.py), piece by piece.

A reconnect storm against a real daphne is in test_storm.py; here the gate's
decisions are checked against daphne's own websocket factory and a Twisted
listening port whose socket and reactor are recorded, not real.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.test import override_settings
from twisted.internet import tcp

from ws4redis_channels.accelerator import listeners, probe


class FakeSocket:
    def __init__(self) -> None:
        self.listened: list[int] = []

    def listen(self, backlog: int) -> None:
        self.listened.append(backlog)


class FakeReactor:
    def __init__(self, *readers: Any) -> None:
        self.readers = list(readers)
        self.removed: list[Any] = []
        self.added: list[Any] = []

    def getReaders(self) -> list[Any]:
        return list(self.readers)

    def removeReader(self, reader: Any) -> None:
        self.removed.append(reader)

    def addReader(self, reader: Any) -> None:
        self.added.append(reader)


class FakeServer:
    def __init__(self) -> None:
        from daphne.ws_protocol import WebSocketFactory

        self.ws_factory = WebSocketFactory(None, server="daphne")


class FakeFactory:
    def __init__(self) -> None:
        self.server = FakeServer()


def fake_port(backlog: int = 50) -> Any:
    """A Twisted TCP port as daphne's endpoint leaves it, minus the real socket."""
    port = object.__new__(type("Port", (tcp.Port,), {}))
    port.socket = FakeSocket()
    port.backlog = backlog
    port.numberAccepts = 100
    port.connected = True
    port.disconnecting = False
    port.factory = FakeFactory()
    return port


class Protocol:
    """A daphne socket as far as the gate looks: its transport knows the port."""

    def __init__(self, port: Any) -> None:
        self.transport = type("Transport", (), {"server": port})()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Any:
    probe.reset()
    port = fake_port()
    reactor = FakeReactor(port, object())
    monkeypatch.setattr(listeners, "_reactor", lambda: reactor)
    gate = listeners.AcceptGate()
    gate.test_port, gate.test_reactor = port, reactor
    yield gate
    probe.reset()


def test_at_daphnes_start_a_short_listen_queue_is_lengthened_and_options_shared(gate):
    from daphne.ws_protocol import WebSocketProtocol

    assert gate.adopt_all() == 1  # the port, not the other reader
    port = gate.test_port
    assert port.socket.listened == [4096] and port.backlog == 4096
    # The first socket of a storm is built from the shared class already.
    factory = port.factory.server.ws_factory
    assert factory.protocol is not WebSocketProtocol
    assert issubclass(factory.protocol, WebSocketProtocol)
    first = factory.buildProtocol(None)
    assert "openHandshakeTimeout" not in vars(first)
    gate.adopt_all()  # once per port
    assert port.socket.listened == [4096]


def test_a_listen_queue_set_longer_is_kept_and_zero_keeps_daphnes(gate):
    long = fake_port(backlog=8192)
    gate.adopt(long)
    assert long.socket.listened == [] and long.backlog == 8192
    with override_settings(WS4REDIS_LISTEN_BACKLOG=0):
        gate.adopt(gate.test_port)
    assert gate.test_port.socket.listened == []


@override_settings(WS4REDIS_MAX_HANDSHAKES=4)
def test_the_ports_pause_at_the_bound_and_resume_at_half(gate):
    port, reactor = gate.test_port, gate.test_reactor
    for _ in range(3):
        gate.started(Protocol(port))
    assert reactor.removed == [] and not gate.paused
    gate.started(Protocol(port))
    assert reactor.removed == [port] and gate.paused and gate.pauses == 1
    assert port.numberAccepts == 4  # at most the bound's worth per wake-up after this
    gate.started(Protocol(port))  # accepted before the pause: counted, no second pause
    assert reactor.removed == [port]
    for _ in range(2):
        gate.ended()
    assert reactor.added == [] and gate.paused
    gate.ended()  # 2 left: half the bound
    assert reactor.added == [port] and not gate.paused
    gate.ended()
    gate.ended()
    assert gate.in_progress == 0


@override_settings(WS4REDIS_MAX_HANDSHAKES=0)
def test_zero_means_no_bound(gate):
    for _ in range(500):
        gate.started(Protocol(gate.test_port))
    assert gate.test_reactor.removed == [] and gate.in_progress == 500


@override_settings(WS4REDIS_MAX_HANDSHAKES=2)
def test_another_server_is_counted_never_paused(gate):
    for _ in range(5):
        gate.started(None)  # uvicorn: no daphne protocol
    assert gate.test_reactor.removed == [] and gate.in_progress == 5


@override_settings(WS4REDIS_MAX_HANDSHAKES=2)
def test_a_port_stopped_at_shutdown_is_not_read_again(gate):
    port = gate.test_port
    gate.started(Protocol(port))
    gate.started(Protocol(port))
    assert gate.paused
    port.disconnecting = True  # daphne stops listening: shutdown
    gate.ended()
    gate.ended()
    assert gate.test_reactor.added == [] and not gate.paused


@override_settings(WS4REDIS_MAX_HANDSHAKES=2)
def test_a_port_of_another_twisted_gives_up_the_acceleration_not_the_socket(gate, caplog):
    port = fake_port()
    del port.numberAccepts  # a renamed attribute in an untested release
    gate.started(Protocol(port))
    gate.started(Protocol(port))
    assert not probe.enabled("accept_bound")
    assert "numberAccepts" in probe.status()["accept_bound"]["reason"]
    assert gate.test_reactor.removed == [] and not gate.paused


@override_settings(WS4REDIS_MAX_HANDSHAKES=2, WS4REDIS_CONNECT_TIMEOUT=0.1)
async def test_ports_paused_while_no_handshake_ends_are_given_back(gate, monkeypatch, caplog):
    # A count that went wrong (a handshake that never ended) must not leave the
    # process deaf: after STUCK seconds without an end, the ports read again
    # and the bound is off for the process.
    monkeypatch.setattr(listeners, "STUCK", 0.5)
    port = gate.test_port
    gate.started(Protocol(port))
    gate.started(Protocol(port))
    assert gate.paused
    await asyncio.sleep(2.5)
    assert gate.test_reactor.added == [port] and not gate.paused
    assert not probe.enabled("accept_bound")
    assert "no handshake ended" in caplog.text


def test_the_consumer_counts_every_handshake_however_it_ends():
    import inspect

    from ws4redis_channels.consumer import WebsocketConsumer

    source = inspect.getsource(WebsocketConsumer.websocket_connect)
    # started before anything can fail, ended in the finally clause
    assert source.index("accept_gate.started(") < source.index("try:")
    assert source.index("finally:") < source.index("accept_gate.ended()")
