"""A frame sent just before the client closes is published before the close handshake completes.

django-websocket-redis handled a socket's frames one after the other, so a
frame was on Redis before the server answered the close frame that followed
it. A client that sends and then closes (a page's last word before it is
left, a script) may rely on that: when its ``close()`` returns, the message
is out.
"""

from __future__ import annotations

import asyncio

from tests.conftest import TIMEOUT, connect, recv

TRIES = 30


async def test_every_frame_sent_before_close_is_published_when_the_close_completes(
    daphne, redis_client
):
    pubsub = redis_client.pubsub()
    pubsub.subscribe("_broadcast_:chat")
    assert pubsub.get_message(timeout=TIMEOUT)["type"] == "subscribe"
    watcher = await connect(daphne, "/ws/chat?subscribe-broadcast")
    late = []
    for i in range(TRIES):
        closer = await connect(daphne, "/ws/chat?publish-broadcast")
        message = f"last word {i}"
        await closer.send(message)
        await asyncio.wait_for(closer.close(), TIMEOUT)
        assert closer.close_code == 1000
        # The close handshake is complete: Redis has run the PUBLISH (and stored
        # the message) already, so its subscriber has it without waiting.
        stored = redis_client.get("_broadcast_:chat")
        received = pubsub.get_message(timeout=0)
        if stored != message.encode() or received is None:
            late.append(i)
        if received is None:
            received = pubsub.get_message(timeout=TIMEOUT)
        assert received is not None and received["data"] == message.encode()
        assert await recv(watcher) == message
    pubsub.close()
    await watcher.close()
    assert not late, f"published after the close completed in {len(late)}/{TRIES} tries: {late}"


async def test_several_frames_before_close_are_all_published_in_order(daphne, redis_client):
    pubsub = redis_client.pubsub()
    pubsub.subscribe("_broadcast_:chat")
    assert pubsub.get_message(timeout=TIMEOUT)["type"] == "subscribe"
    closer = await connect(daphne, "/ws/chat?publish-broadcast")
    for n in range(5):
        await closer.send(f"frame {n}")
    await asyncio.wait_for(closer.close(), TIMEOUT)
    got = []
    while (message := pubsub.get_message(timeout=0)) is not None:
        got.append(message["data"])
    assert got == [f"frame {n}".encode() for n in range(5)]
    pubsub.close()


async def test_the_close_waits_for_a_publication_that_redis_holds_back(daphne, redis_client):
    # Redis briefly refuses writes (a failover, a busy server): the close is
    # answered once the last frame has been published, not before.
    closer = await connect(daphne, "/ws/chat?publish-broadcast")
    redis_client.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
    await closer.send("held back")
    await asyncio.wait_for(closer.close(), TIMEOUT)
    assert closer.close_code == 1000
    assert redis_client.get("_broadcast_:chat") == b"held back"
