"""Joining a socket in order: subscribed, then what it missed, then live traffic.

A joining socket's live messages are held back (``ChannelState.joining``)
while its subscriptions are confirmed, each channel is read (the stored
message, its version, the channel's position and, for a socket that
presented a position, the history after it: :data:`~ws4redis_channels.store.READ_SCRIPT`,
one call per channel in one pipeline), and a ``PING`` sent on the subscriber
connection comes back. Redis answers in order, so by then every message
published before the read is among the held ones. Joins that happen together
share the round trips.

:func:`plan` then decides, without I/O, what the socket gets and in which
order, so that nothing is lost, nothing comes twice, and nothing older than
what the socket (or its channel) already delivered is sent:

* a socket with positions that presented one gets the history after it
  (status ``recovered``), or, when that is impossible (``lost``) or it
  presented none (``new``), the stored message if it is newer than what it
  has; then the held messages newer than all of that, and those without a
  position (bare ``PUBLISH``), in arrival order. A state frame comes first.
* a socket without positions gets the stored message first, unless a held
  message has its version (that copy stands for it) or, after a reconnect
  (``catch_up``), the socket already had that version or a newer one (what it
  had itself, ``ChannelState.had``: the sockets of a channel can be caught up
  one after another); then the held messages. Versions are compared, not bytes; bytes only for a
  stored message without a version (not stored by the app).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from . import patience, store
from .connection import RedisTarget, async_client, redis_errors
from .exceptions import RedisUnavailable
from .frames import Batch, Outbound, make_message
from .positions import Position, Status, message_frame, state_frame
from .store import Replay
from .subscriber import Subscriber

if TYPE_CHECKING:
    from .channel_state import ChannelState, Sink

__all__ = ["Held", "Join", "Joiner", "Planned", "plan"]

#: A live message held back while a socket joins: payload and position (None: bare PUBLISH).
Held = tuple[bytes, Position | None]


class Planned:
    """The messages one channel gives a joining socket, in order, and its status."""

    __slots__ = ("messages", "position", "status")

    def __init__(self, messages: list[Held], status: Status, position: Position | None) -> None:
        self.messages = messages
        self.status = status
        # Where the channel stands for the socket once these are delivered.
        self.position = position


def _newest(a: Position | None, b: Position | None) -> Position | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def plan(
    replay: Replay,
    held: Sequence[Held],
    *,
    positioned: bool,
    since: Position | None = None,
    last: Position | None = None,
    last_payload: bytes | None = None,
) -> Planned:
    """Return what a socket joining one channel gets.

    ``since`` is the position the socket presented; ``last`` (and
    ``last_payload``) what the socket had before a reconnect of the bridge,
    for sockets that were already receiving.
    """
    has = _newest(since, last)
    out: list[Held] = []
    status = Status(replay.status) if since is not None else Status.NEW
    if positioned and status is Status.RECOVERED:
        out.extend((payload, position) for position, payload in replay.entries)
    elif replay.stored is not None and _stored_is_new(replay, held, has, last_payload):
        out.append((replay.stored, replay.version))
    mark = has
    for _, position in out:
        mark = _newest(mark, position)
    for payload, position in held:
        if position is None:
            out.append((payload, None))
        elif mark is None or position > mark:
            out.append((payload, position))
            mark = position
        # else: replayed above already, or older than what the socket has.
    return Planned(out, status, _newest(mark, replay.position))


def _stored_is_new(
    replay: Replay, held: Sequence[Held], has: Position | None, last_payload: bytes | None
) -> bool:
    version = replay.version
    if version is None:
        # Stored by something else than the app: the only clue is the bytes.
        return replay.stored != last_payload and all(replay.stored != p for p, _ in held)
    if has is not None and version <= has:
        return False
    return all(position != version for _, position in held)


class Join:
    """One socket waiting to join some channels."""

    __slots__ = ("catch_up", "future", "keys", "positioned", "since", "sink")

    def __init__(
        self,
        sink: Sink,
        keys: list[bytes],
        future: asyncio.Future[None],
        *,
        catch_up: bool,
        positioned: bool = False,
        since: Mapping[bytes, Position] | None = None,
    ) -> None:
        self.sink = sink
        self.keys = keys
        self.future = future
        self.catch_up = catch_up  # a socket rejoining after a reconnect
        self.positioned = positioned  # it gets a state frame and positions
        self.since = since or {}  # the positions it has, by channel


def _consume_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class Joiner:
    """Runs the joins of one bridge, a batch at a time, in one task."""

    def __init__(
        self,
        channels: dict[bytes, ChannelState],
        subscriber: Subscriber,
        target: RedisTarget,
        *,
        history_ttl: int = 300,
        timeout: float = 5.0,
    ) -> None:
        self._channels = channels
        self._history_ttl = history_ttl
        self._timeout = timeout
        self._subscriber = subscriber
        self._target = target
        self._loop = asyncio.get_running_loop()
        self._joins: list[Join] = []
        self._task: asyncio.Task[None] | None = None
        #: Round trips of the joins answered by Redis: evidence that it answers.
        self.answers = 0

    def add(
        self,
        sink: Sink,
        keys: list[bytes],
        *,
        catch_up: bool = False,
        positioned: bool = False,
        since: Mapping[bytes, Position] | None = None,
    ) -> asyncio.Future[None]:
        """Queue a join; the future is done once the socket gets live traffic."""
        future: asyncio.Future[None] = self._loop.create_future()
        if catch_up:
            # Nobody awaits a catch-up: the next reconnect catches up again.
            future.add_done_callback(_consume_exception)
        self._joins.append(
            Join(sink, keys, future, catch_up=catch_up, positioned=positioned, since=since)
        )
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run())
        return future

    def fail(self, error: Exception) -> None:
        """Fail every queued join (the connection was lost): their handshakes answer 4503."""
        for join in self._joins:
            if not join.future.done():
                join.future.set_exception(error)
        self._joins.clear()

    def cancel(self) -> None:
        """Stop (the bridge closes)."""
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while self._joins:
            await self._subscriber.wait_connected()
            batch, self._joins = self._joins, []
            batch = [join for join in batch if not join.future.done()]
            if not batch:
                continue
            keys = list(dict.fromkeys(key for join in batch for key in join.keys))
            # One read per channel and presented position (most sockets share one).
            reads = list(
                dict.fromkeys((key, join.since.get(key)) for join in batch for key in join.keys)
            )
            try:
                await self._confirmed(keys)
                self.answers += 1
                with redis_errors(self._target):
                    # Patient: in a reconnect storm this read takes as many
                    # loop iterations as it needs, each full of handshakes.
                    read = await patience.wait_for(
                        self._read(reads), self._timeout, alive=self._heard()
                    )
                self.answers += 1
                # When the PONG is here, so is every message published before the read.
                await self._subscriber.request("PING")
                self.answers += 1
            except Exception as exc:
                for join in batch:
                    if not join.future.done():
                        join.future.set_exception(RedisUnavailable(repr(exc)))
                continue
            positions: dict[bytes, Position] = {}
            # The frames of one message are made once for every socket of the batch.
            frames: dict[tuple[bytes, Position, bool], Outbound] = {}
            # The channels whose sockets were already getting live messages.
            live = {
                key
                for key in keys
                if (ch := self._channels.get(key)) is not None and (ch.sinks or ch.psinks)
            }
            for join in batch:
                if not join.future.done():
                    self._finish(join, read, positions, frames, live)
                    join.future.set_result(None)
            for key, position in positions.items():
                ch = self._channels.get(key)
                if ch is not None:
                    ch.position = position

    def _heard(self) -> Callable[[], bool]:
        """Whether Redis sent anything on the subscriber connection since the last ask."""
        subscriber = self._subscriber
        mark = [subscriber.reads]

        def heard() -> bool:
            heard, mark[0] = subscriber.reads != mark[0], subscriber.reads
            return heard

        return heard

    async def _read(
        self, wanted: list[tuple[bytes, Position | None]]
    ) -> dict[tuple[bytes, Position | None], Replay]:
        """Read what each (channel, presented position) gives; sockets resuming one
        channel in one epoch share the read from the oldest of their positions."""
        lowest: dict[tuple[bytes, int | None], Position | None] = {}
        for key, since in wanted:
            group = (key, None if since is None else since.epoch)
            known = lowest.get(group)
            if group not in lowest or (since is not None and known is not None and since < known):
                lowest[group] = since
        base_of = {
            (key, since): (key, lowest[key, None if since is None else since.epoch])
            for key, since in wanted
        }
        first = list(dict.fromkeys(base_of.values()))
        client = async_client(self._target, patient=True)
        replays = await store.aread(
            client, [k.decode() for k, _ in first], [p for _, p in first], self._history_ttl
        )
        bases = dict(zip(first, replays, strict=True))
        result: dict[tuple[bytes, Position | None], Replay] = {}
        again: list[tuple[bytes, Position | None]] = []
        for pair in wanted:
            key, since = pair
            base_pair = base_of[pair]
            base = bases[base_pair]
            if since == base_pair[1]:
                result[pair] = base
            elif (
                since is not None
                and base.status == Status.RECOVERED.value
                and since.epoch == base.position.epoch
                and since <= base.position
            ):
                # A suffix of the same history.
                entries = [entry for entry in base.entries if entry[0] > since]
                result[pair] = Replay(
                    base.stored, base.version, base.position, base.status, entries
                )
            else:
                again.append(pair)
        if again:
            replays = await store.aread(
                client, [k.decode() for k, _ in again], [p for _, p in again], self._history_ttl
            )
            result.update(zip(again, replays, strict=True))
        return result

    async def _confirmed(self, keys: Iterable[bytes]) -> None:
        waiters = []
        for key in keys:
            ch = self._channels.get(key)
            if ch is not None and ch.pending_subs:
                waiter: asyncio.Future[None] = self._loop.create_future()
                ch.waiters.append(waiter)
                waiters.append(waiter)
        if waiters:
            await asyncio.gather(*waiters)

    def _finish(
        self,
        join: Join,
        read: dict[tuple[bytes, Position | None], Replay],
        positions: dict[bytes, Position],
        frames: dict[tuple[bytes, Position, bool], Outbound],
        live: set[bytes],
    ) -> None:
        sink = join.sink
        messages: list[Outbound] = []
        states: list[tuple[str, Position | None, Status]] = []
        for key in join.keys:
            ch = self._channels.get(key)
            if ch is None or sink not in ch.joining:
                continue
            held = ch.joining.pop(sink)
            had = ch.had.pop(sink, None)
            last: Position | None = None
            last_payload: bytes | None = None
            if join.catch_up:
                # What this socket had, not what the channel's other sockets got since.
                last, last_payload = had if had is not None else (ch.position, ch.last)
            since = join.since.get(key)
            replay = read[key, since]
            planned = plan(
                replay,
                held,
                positioned=join.positioned,
                since=since,
                last=last,
                last_payload=last_payload,
            )
            # Where the channel stands: what Redis has, or newer that arrived meanwhile.
            newest = replay.position
            for _, position in planned.messages:
                if position is not None and position > newest:
                    newest = position
            if join.catch_up and key not in live:
                # Redis may be behind what was delivered (a failover): follow it,
                # unless sockets caught up before already get live messages: the
                # channel's position is what they got.
                positions[key] = max(newest, positions[key]) if key in positions else newest
            elif ch.position is None or newest > ch.position:
                positions[key] = max(newest, positions.get(key, newest))
            positioned = join.positioned
            if positioned:
                states.append((ch.label, newest, planned.status))
            for payload, position in planned.messages:
                if not payload:
                    continue  # a stored empty message: see fanout.py
                if position is None:
                    messages.append(self._frame(ch, payload, None, positioned))
                    continue
                cached = frames.get((key, position, positioned))
                if cached is None:
                    cached = frames[key, position, positioned] = self._frame(
                        ch, payload, position, positioned
                    )
                messages.append(cached)
            if positioned:
                ch.psinks[sink] = sink.deliver
            else:
                ch.sinks[sink] = sink.deliver
        if states:
            messages.insert(0, Outbound({"type": "websocket.send", "text": state_frame(states)}))
        if messages:
            sink.deliver(Batch(messages))

    @staticmethod
    def _frame(
        ch: ChannelState, payload: bytes, position: Position | None, positioned: bool
    ) -> Outbound:
        if positioned:
            return make_message(message_frame(ch.label, position, payload))
        return make_message(payload)
