"""The guarded contract with daphne: each acceleration is probed once, logged, and never mutes.

Each case runs a real daphne whose libraries had one relied-on name renamed
(tests/shims/sitecustomize.py compiles them with the new name, as a minor
release would ship them). Messages must still arrive, in order, and the log
must say which acceleration is off and why.
"""

from __future__ import annotations

import asyncio
import json
import os
import re

import pytest
import redis

from tests.conftest import TIMEOUT, close_code, connect, recv
from tests.servers import ROOT
from ws4redis_channels import accelerator

SHIMS = str(ROOT / "tests" / "shims")

# (module prefix, old, new): what an upgrade could rename, and what must go off.
RENAMES = [
    ("twisted.internet.abstract", "_tempDataLen", "_temp_data_len", "direct_writes"),
    ("twisted.internet.abstract", "dataBuffer", "data_buffer", "buffer_bound"),
    ("autobahn.", "send_state", "sendState", "direct_writes"),
    ("autobahn.", "SEND_STATE_GROUND", "SEND_STATE_IDLE", "direct_writes"),
    ("autobahn.", "_perMessageCompress", "_per_message_compress", "direct_writes"),
    ("autobahn.", "failByDrop", "fail_by_drop", "close_frames"),
    ("autobahn.", "sendPreparedMessage", "send_prepared_message", "prepared_writes"),
    ("autobahn.", "prepareMessage", "prepare_message", "prepared_writes"),
    # Only the method (autobahn itself calls unregisterProducer on the transport).
    (
        "autobahn.twisted.websocket",
        "def registerProducer",
        "def register_producer",
        "producer_bound",
    ),
    ("autobahn.", "http_request_data", "http_request_bytes", "handshake_release"),
    ("autobahn.", "send_queue", "sendQueue", "small_queues"),
    # A Python release that keeps asyncio.Queue's waiters under another name.
    ("asyncio.queues", "_getters", "_get_waiters", "small_queues"),
    (
        "twisted.internet.abstract,twisted.internet._newtls",
        "producer",
        "_producer",
        "upgrade_release",
    ),
    # daphne calls these too: a release renaming them would ship with a daphne that follows.
    ("autobahn.,daphne.", "sendCloseFrame", "send_close_frame", "going_away"),
    ("autobahn.,daphne.", "sendClose", "send_close", "close_reasons"),
    ("autobahn.", "onPing", "on_ping", "pong_bound"),
    ("channels.sessions", "real_send", "downstream_send", "session_unwrap"),
    (
        "daphne.server",
        "send=partial(self.handle_reply, protocol)",
        "send=lambda message: self.handle_reply(protocol, message)",
        None,  # not daphne's send any more: the whole fast path is skipped, quietly
    ),
]


def renamed_env(redis_url: str, prefix: str, old: str, new: str, **extra: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {
        "REDIS_URL": redis_url,
        "PYTHONPATH": f"{SHIMS}{os.pathsep}{path}" if path else SHIMS,
        "WS4REDIS_TEST_RENAME": json.dumps([[prefix, old, new]]),
        **extra,
    }


@pytest.mark.parametrize(
    ("prefix", "old", "new", "off"), RENAMES, ids=[r[1].split("(")[0][:24] for r in RENAMES]
)
async def test_a_renamed_internal_turns_its_acceleration_off_and_messages_still_arrive(
    daphne_factory, redis_server, redis_client, prefix, old, new, off
):
    server = daphne_factory(renamed_env(redis_server.url, prefix, old, new))
    channel = f"_broadcast_:renamed-{re.sub(r'[^a-zA-Z_]', '', old)[:20]}"
    facility = channel.split(":", 1)[1]
    sockets = [await connect(server, f"/ws/{facility}?subscribe-broadcast") for _ in range(3)]
    # A burst (one read from Redis: the batched fast path) and lone messages.
    pipe = redis_client.pipeline()
    for i in range(50):
        pipe.publish(channel, f"m{i}")
    pipe.execute()
    for i in range(50, 60):
        redis_client.publish(channel, f"m{i}")
    for ws in sockets:
        got = [await recv(ws) for _ in range(60)]
        assert got == [f"m{i}" for i in range(60)]
    # A ping is answered, a close frame carries code and reason either way.
    for ws in sockets:
        await asyncio.wait_for(await ws.ping(), TIMEOUT)
        await ws.close()
    log = server.log()
    assert "Traceback" not in log
    if off is not None:
        line = next(line for line in log.splitlines() if "ws4redis accelerations" in line)
        assert f"{off} (" in line.split("off:", 1)[1], line


async def test_the_probe_logs_once_that_every_acceleration_is_on(daphne_factory, redis_server):
    server = daphne_factory({"REDIS_URL": redis_server.url})
    for _ in range(3):
        ws = await connect(server, "/ws/probe?subscribe-broadcast")
        await ws.close()
    lines = [line for line in server.log().splitlines() if "ws4redis accelerations" in line]
    assert len(lines) == 1
    assert "all on" in lines[0]
    for name in accelerator.ACCELERATIONS:
        assert name in lines[0]


async def test_close_reasons_reach_the_client_when_close_frames_go_through_asgi(
    daphne_factory, redis_server
):
    # With sendClose renamed, the reason cannot be sent past daphne: the code still arrives
    # through daphne's own (renamed) close.
    server = daphne_factory(
        renamed_env(redis_server.url, "autobahn.,daphne.", "sendClose", "send_close")
    )
    ws = await connect(server, "/ws/chat?publish-broadcast")
    await ws.send("x" * 70_000)  # over WS4REDIS_MAX_MESSAGE_SIZE of the demo (64 KiB)
    assert await close_code(ws) == 4413


def test_status_lists_every_acceleration_with_what_it_does():
    status = accelerator.status()
    assert set(status) == set(accelerator.ACCELERATIONS)
    for entry in status.values():
        assert set(entry) == {"on", "reason", "what", "probed"}
        assert entry["what"]


def test_an_untested_release_turns_the_daphne_accelerations_off(monkeypatch):
    accelerator.reset()
    monkeypatch.setitem(accelerator.TESTED, "daphne", ((1,), (2,)))
    try:
        status = accelerator.status()
        assert not status["direct_writes"]["on"]
        assert "outside the tested range" in status["direct_writes"]["reason"]
        assert status["session_unwrap"]["on"]
    finally:
        monkeypatch.undo()
        accelerator.reset()


def test_redis_is_untouched_by_the_probe(redis_client: redis.Redis):
    accelerator.reset()
    accelerator.status()
    assert redis_client.ping()
