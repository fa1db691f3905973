"""End to end: sockets with positions resume exactly; sockets without get today's frames."""

from __future__ import annotations

import asyncio

import websockets

from tests.conftest import TIMEOUT, connect, nothing_arrives, recv
from ws4redis_channels import publisher
from ws4redis_channels.positions import Position

URL = "/ws/pos?subscribe-broadcast"


def parse(frame: str | bytes) -> tuple[str, str, str | bytes]:
    """Return (label, position, payload) of a message frame."""
    newline = "\n" if isinstance(frame, str) else b"\n"
    head, _, payload = frame.partition(newline)  # type: ignore[arg-type]
    text = head if isinstance(head, str) else head.decode()
    kind, label, position = text.split(" ")
    assert kind == "m", frame
    return label, position, payload


def state(frame: str) -> dict[str, tuple[str, str]]:
    """Return {label: (position, status)} of a state frame."""
    result = {}
    for line in frame.split("\n"):
        kind, label, position, status = line.split(" ")
        assert kind == "p", frame
        result[label] = (position, status)
    return result


async def test_a_socket_without_positions_gets_exactly_todays_frames(daphne, redis_client):
    publisher.publish("pos", "stored before", broadcast=True)
    plain = await connect(daphne, URL)
    assert await recv(plain) == "stored before"
    publisher.publish("pos", "text", broadcast=True)
    publisher.publish("pos", b"\x00\xffbinary", broadcast=True)
    redis_client.publish("_broadcast_:pos", "bare")
    publisher.publish("pos", "p\nfake header", broadcast=True)
    assert await recv(plain) == "text"
    assert await recv(plain) == b"\x00\xffbinary"
    assert await recv(plain) == "bare"
    assert await recv(plain) == "p\nfake header"
    assert await nothing_arrives(plain)
    await plain.close()


async def test_a_socket_with_positions_learns_the_state_then_each_position(daphne, redis_client):
    first = publisher.publish("pos", "stored", broadcast=True).positions["_broadcast_:pos"]
    ws = await connect(daphne, URL + "&positions")
    assert state(await recv(ws)) == {"broadcast": (str(first), "new")}
    assert parse(await recv(ws)) == ("broadcast", str(first), "stored")
    second = publisher.publish("pos", b"\xffbin", broadcast=True).positions["_broadcast_:pos"]
    assert parse(await recv(ws)) == ("broadcast", str(second), b"\xffbin")
    redis_client.publish("_broadcast_:pos", "bare")
    assert parse(await recv(ws)) == ("broadcast", "-", "bare")
    await ws.close()


async def test_a_reconnecting_socket_gets_what_it_missed_once_in_order(daphne, redis_client):
    ws = await connect(daphne, URL + "&positions")
    _, status = state(await recv(ws))["broadcast"]
    assert status == "new"
    publisher.publish("pos", "seen", broadcast=True)
    _, seen, _ = parse(await recv(ws))
    await ws.close()
    for i in range(5):
        publisher.publish("pos", f"missed {i}", broadcast=True)
    ws = await connect(daphne, URL + f"&positions&since=broadcast:{seen}")
    assert state(await recv(ws))["broadcast"][1] == "recovered"
    got = [parse(await recv(ws))[2] for _ in range(5)]
    assert got == [f"missed {i}" for i in range(5)]
    publisher.publish("pos", "live", broadcast=True)
    assert parse(await recv(ws))[2] == "live"
    assert await nothing_arrives(ws)
    await ws.close()


async def test_resuming_past_the_history_is_reported_lost_with_the_newest_state(
    daphne, redis_client
):
    seen = publisher.publish("pos", "old", broadcast=True).positions["_broadcast_:pos"]
    for i in range(101):  # the demo keeps 100
        publisher.publish("pos", f"m{i}", broadcast=True)
    ws = await connect(daphne, URL + f"&positions&since=broadcast:{seen}")
    position, status = state(await recv(ws))["broadcast"]
    assert status == "lost"
    assert parse(await recv(ws)) == ("broadcast", position, "m100")
    assert await nothing_arrives(ws)
    await ws.close()


async def test_a_position_of_another_epoch_is_lost(daphne, redis_client):
    publisher.publish("pos", "now", broadcast=True)
    ws = await connect(daphne, URL + "&positions&since=broadcast:12:3")
    assert state(await recv(ws))["broadcast"][1] == "lost"
    await ws.close()


async def test_a_malformed_since_is_refused_with_4400(daphne, redis_client):
    ws = await connect(daphne, URL + "&positions&since=broadcast:x")
    try:
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None and exc.rcvd.code == 4400
    else:
        raise AssertionError("not refused")


async def test_each_channel_of_a_socket_has_its_own_label_and_position(daphne, redis_client):
    from tests.conftest import session_cookie

    key = session_cookie("posuser")
    ws = await connect(daphne, URL + "&subscribe-user&positions", session=key)
    assert set(state(await recv(ws))) == {"broadcast", "user"}
    mine = publisher.publish("pos", "for you", users=["posuser"]).positions["posuser:pos"]
    assert parse(await recv(ws)) == ("user", str(mine), "for you")
    await ws.close()


async def test_the_bridge_catches_up_positioned_sockets_after_client_kill(
    daphne_factory, redis_client
):
    daphne = daphne_factory()
    ws = await connect(daphne, URL + "&positions")
    await recv(ws)
    plain = await connect(daphne, URL)
    publisher.publish("pos", "before", broadcast=True)
    assert parse(await recv(ws))[2] == "before"
    assert await recv(plain) == "before"
    killed = redis_client.client_kill_filter(_type="pubsub")
    assert killed >= 1
    for i in range(3):
        publisher.publish("pos", f"during {i}", broadcast=True)
    # The bridge reconnects, rejoins: a new state frame, then what it missed.
    frame = await recv(ws)
    while frame.startswith("m "):  # some may have arrived before the kill took effect
        frame = await recv(ws)
    assert state(frame)["broadcast"][1] == "recovered"
    got = []
    while len(got) < 3:
        got.append(parse(await recv(ws))[2])
    publisher.publish("pos", "after", broadcast=True)
    assert parse(await recv(ws))[2] == "after"
    assert got == [f"during {i}" for i in range(3)]
    await ws.close()
    await plain.close()


def test_position_parsing_round_trips():
    assert Position.parse(str(Position(17, 4))) == Position(17, 4)
