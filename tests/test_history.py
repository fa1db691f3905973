"""Positions and history in Redis: the publish script, the read script, the function."""

from __future__ import annotations

import multiprocessing
import time

import pytest
import redis
from django.core.management import call_command
from django.test import override_settings

from testproject.redis_server import RedisServer
from ws4redis_channels import publisher, store
from ws4redis_channels.positions import Position
from ws4redis_channels.store import History

CH = "_broadcast_:hist"
H = History(size=5, ttl=60)


def test_each_publication_gets_the_next_position_of_its_channel(redis_client):
    first = store.publish(redis_client, [CH], b"one", 60, history=H)
    second = store.publish(redis_client, [CH], b"two", 60, history=H)
    a, b = first.positions[CH], second.positions[CH]
    assert (a.epoch, a.offset + 1) == (b.epoch, b.offset)
    assert a.offset == 1
    assert int(first) == 0 and not first.duplicate


def test_the_stored_message_stays_the_raw_payload_under_the_channel_name(redis_client):
    store.publish(redis_client, [CH], b"\x00raw bytes", 60, history=H)
    assert redis_client.get(CH) == b"\x00raw bytes"
    assert redis_client.ttl(CH) > 0


def test_history_keeps_the_last_messages_and_lives_for_its_ttl(redis_client):
    for i in range(8):
        store.publish(redis_client, [CH], f"m{i}".encode(), 0, history=H)
    entries = redis_client.xrange("{_broadcast_:hist}:hist")
    assert [fields[b"d"] for _, fields in entries] == [b"m3", b"m4", b"m5", b"m6", b"m7"]
    assert 0 < redis_client.ttl("{_broadcast_:hist}:hist") <= 60
    assert redis_client.get(CH) is None  # expire 0: nothing stored


def test_a_reader_gets_what_it_missed_in_order(redis_client):
    positions = [
        store.publish(redis_client, [CH], f"m{i}".encode(), 60, history=H) for i in range(4)
    ]
    since = positions[1].positions[CH]
    [replay] = store.read(redis_client, [CH], [since], 60)
    assert replay.status == "recovered"
    assert [(p.offset, data) for p, data in replay.entries] == [(3, b"m2"), (4, b"m3")]
    assert replay.position == positions[3].positions[CH]
    assert replay.stored == b"m3" and replay.version == replay.position


def test_a_reader_that_is_up_to_date_gets_nothing_and_is_recovered(redis_client):
    last = store.publish(redis_client, [CH], b"x", 60, history=H).positions[CH]
    [replay] = store.read(redis_client, [CH], [last], 60)
    assert replay.status == "recovered" and replay.entries == []


def test_a_trimmed_history_cannot_be_recovered(redis_client):
    first = store.publish(redis_client, [CH], b"first", 60, history=H).positions[CH]
    for i in range(6):
        store.publish(redis_client, [CH], f"m{i}".encode(), 60, history=H)
    [replay] = store.read(redis_client, [CH], [first], 60)
    assert replay.status == "lost" and replay.entries == []
    assert replay.stored == b"m5"  # the newest state is still there


def test_another_epoch_or_a_position_beyond_the_history_cannot_be_recovered(redis_client):
    last = store.publish(redis_client, [CH], b"x", 60, history=H).positions[CH]
    for since in (Position(last.epoch - 1, last.offset), Position(last.epoch, last.offset + 1)):
        [replay] = store.read(redis_client, [CH], [since], 60)
        assert replay.status == "lost"


def test_without_history_the_stored_message_is_a_history_of_one(redis_client):
    off = History(size=0)
    first = store.publish(redis_client, [CH], b"a", 60, history=off).positions[CH]
    store.publish(redis_client, [CH], b"b", 60, history=off)
    [replay] = store.read(redis_client, [CH], [first], 60)
    assert replay.status == "recovered"
    assert [data for _, data in replay.entries] == [b"b"]
    store.publish(redis_client, [CH], b"c", 60, history=off)
    [replay] = store.read(redis_client, [CH], [first], 60)
    assert replay.status == "lost"


def test_a_reader_of_an_empty_channel_gets_an_epoch_to_resume_from(redis_client):
    [replay] = store.read(redis_client, [CH], [None], 60)
    assert replay.status == "new" and replay.position.offset == 0 and replay.stored is None
    published = store.publish(redis_client, [CH], b"later", 60, history=H).positions[CH]
    assert published == Position(replay.position.epoch, 1)
    [again] = store.read(redis_client, [CH], [replay.position], 60)
    assert again.status == "recovered" and [d for _, d in again.entries] == [b"later"]


def test_a_redis_that_lost_everything_starts_a_new_later_epoch():
    with RedisServer() as server:
        client = redis.Redis(port=server.port)
        before = store.publish(client, [CH], b"x", 60, history=H).positions[CH]
        server.stop()
        server.start()
        client = redis.Redis(port=server.port)
        [replay] = store.read(client, [CH], [before], 60)
        assert replay.status == "lost"
        assert replay.position.epoch > before.epoch


def _wait_for_sync(replica: redis.Redis, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while replica.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, replica.info("replication")
        time.sleep(0.05)


def test_a_promoted_replica_starts_a_new_epoch_on_its_first_write():
    with RedisServer() as master, RedisServer() as replica:
        m, r = redis.Redis(port=master.port), redis.Redis(port=replica.port)
        r.replicaof("127.0.0.1", master.port)
        # In sync first: Redis 7 delays a diskless full sync by 5 s, as long as WAIT's
        # timeout below, and a slow machine lost that race (CI, min-django42).
        _wait_for_sync(r)
        seen = store.publish(m, [CH], b"replicated", 60, history=H).positions[CH]
        assert m.wait(1, 5000) == 1
        r.replicaof("no", "one")  # promoted; the old master stays writable a while
        lost = store.publish(m, [CH], b"written to the old master", 60, history=H).positions[CH]
        assert lost == Position(seen.epoch, seen.offset + 1)
        [replay] = store.read(r, [CH], [lost], 60)
        assert replay.status == "lost"  # the reader has more than this node
        new = store.publish(r, [CH], b"after", 60, history=H).positions[CH]
        assert new.epoch > seen.epoch and new.offset == 1
        # A reader that had exactly what the replica had goes on without a gap.
        [replay] = store.read(r, [CH], [seen], 60)
        assert replay.status == "recovered"
        assert [data for _, data in replay.entries] == [b"after"]
        # One that got the old master's write is told; offsets are not reused.
        [replay] = store.read(r, [CH], [lost], 60)
        assert replay.status == "lost"


def test_a_restarted_redis_with_aof_keeps_the_epoch(tmp_path):
    with RedisServer(None, "--appendonly", "yes", "--appendfsync", "always") as server:
        client = redis.Redis(port=server.port)
        before = store.publish(client, [CH], b"kept", 60, history=H).positions[CH]
        server.stop()
        server.start()
        client = redis.Redis(port=server.port)
        after = store.publish(client, [CH], b"next", 60, history=H).positions[CH]
        assert after == Position(before.epoch, before.offset + 1)
        [replay] = store.read(client, [CH], [before], 60)
        assert replay.status == "recovered" and [d for _, d in replay.entries] == [b"next"]


def test_a_message_id_publishes_once(redis_client):
    first = store.publish(
        redis_client, [CH, "john:hist"], b"order", 60, history=H, message_id="o-1"
    )
    again = store.publish(
        redis_client, [CH, "john:hist"], b"order", 60, history=H, message_id="o-1"
    )
    assert again.duplicate and again.positions == first.positions
    assert len(redis_client.xrange("{_broadcast_:hist}:hist")) == 1
    other = store.publish(redis_client, [CH], b"order", 60, history=H, message_id="o-2")
    assert not other.duplicate


def test_a_message_id_works_without_history(redis_client):
    off = History(size=0)
    store.publish(redis_client, [CH], b"once", 60, history=off, message_id="x")
    store.publish(redis_client, [CH], b"twice", 60, history=off, message_id="x")
    assert redis_client.get(CH) == b"once"


def _publish_with_id(port: int, barrier: multiprocessing.synchronize.Barrier, results) -> None:  # type: ignore[name-defined]
    client = redis.Redis(port=port)
    barrier.wait()
    for i in range(50):
        published = store.publish(
            client, [CH], f"m{i}".encode(), 60, history=History(100, 60), message_id=f"id-{i}"
        )
        results.put((i, published.duplicate, str(published.positions[CH])))


def test_the_same_ids_from_two_processes_at_once_publish_each_message_once(
    redis_server, redis_client
):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    spy = redis_client.pubsub()
    spy.subscribe(CH)
    assert spy.get_message(timeout=10)["type"] == "subscribe"
    workers = [
        ctx.Process(target=_publish_with_id, args=(redis_server.port, barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    got = [results.get(timeout=30) for _ in range(100)]
    for worker in workers:
        worker.join(30)
    by_id: dict[int, list[tuple[bool, str]]] = {}
    for i, duplicate, position in got:
        by_id.setdefault(i, []).append((duplicate, position))
    for i, answers in by_id.items():
        assert sorted(d for d, _ in answers) == [False, True], i
        assert answers[0][1] == answers[1][1]  # both learn the same position
    delivered = []
    while (message := spy.get_message(timeout=1)) is not None:
        delivered.append(message["data"])
    assert sorted(delivered) == sorted(f"m{i}".encode() for i in range(50))


def test_a_bare_publish_has_no_position_and_is_not_in_history(redis_client):
    store.publish(redis_client, [CH], b"through the app", 60, history=H)
    redis_client.publish(CH, b"bare")
    assert len(redis_client.xrange("{_broadcast_:hist}:hist")) == 1
    assert redis_client.get(CH) == b"through the app"


def test_the_function_keeps_its_calling_convention_and_has_an_extended_one(redis_client):
    assert store.load_function(redis_client, store.function_library(H, 3600))
    assert redis_client.fcall("ws4redis_publish", 1, CH, "Hello", 3600) == 0
    assert redis_client.get(CH) == b"Hello"
    receivers, [position], duplicate = redis_client.fcall(
        "ws4redis_publish", 1, CH, "Hi", 3600, "id-1"
    )
    assert (receivers, duplicate) == (0, 0) and Position.parse(position).offset == 2
    assert redis_client.fcall("ws4redis_publish", 1, CH, "Hi", 3600, "id-1")[2] == 1
    # The app's history settings are the function's: both messages are in the history.
    assert len(redis_client.xrange("{_broadcast_:hist}:hist")) == 2
    assert redis_client.fcall("ws4redis_publish", 1, CH, "no expire given") == 0
    assert redis_client.ttl(CH) > 3000  # WS4REDIS_EXPIRE baked in as the default
    # Several channels in one call, as before.
    assert redis_client.fcall("ws4redis_publish", 2, "john:hist", "mary:hist", "you two", 60) == 0
    assert redis_client.mget("john:hist", "mary:hist") == [b"you two", b"you two"]
    assert redis_client.hget("{mary:hist}:pos", "o") == b"1"


def test_the_publisher_api_takes_a_message_id_sync_and_async(redis_client):
    with override_settings(WS4REDIS_HISTORY_SIZE=10):
        first = publisher.publish("hist", "a", broadcast=True, message_id="k")
        again = publisher.publish("hist", "a", broadcast=True, message_id="k")
        assert not first.duplicate and again.duplicate
        assert first.positions == again.positions

        import asyncio

        async def twice() -> tuple[store.Published, store.Published]:
            one = await publisher.apublish("hist", "b", broadcast=True, message_id="k2")
            two = await publisher.apublish("hist", "b", broadcast=True, message_id="k2")
            return one, two

        one, two = asyncio.run(twice())
        assert two.duplicate and one.positions == two.positions
        assert len(redis_client.xrange("{_broadcast_:hist}:hist")) == 2


def test_the_management_command_takes_a_message_id(redis_client):
    import io

    out = io.StringIO()
    with override_settings(WS4REDIS_HISTORY_SIZE=10):
        call_command("ws4redis_publish", "hist", "hello", "--message-id", "m1", stdout=out)
        call_command("ws4redis_publish", "hist", "hello", "--message-id", "m1", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Published on _broadcast_:hist at ")
    assert lines[1].startswith("Already published as 'm1'")
    assert len(redis_client.xrange("{_broadcast_:hist}:hist")) == 1


@pytest.mark.parametrize("setting", ["WS4REDIS_HISTORY_SIZE", "WS4REDIS_HISTORY_TTL"])
def test_history_settings_are_checked(setting):
    from ws4redis_channels.checks import check_settings

    with override_settings(**{setting: -1}):
        ids = [m.id for m in check_settings()]
    assert any(i.startswith("ws4redis_channels.E0") for i in ids)
