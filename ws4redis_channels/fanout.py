"""The fan-out: messages read from Redis handed to the sockets of their channel, in order.

:class:`FanOut` is the part of the :class:`~ws4redis_channels.bridge.Bridge`
that delivers. The subscriber hands it the pub/sub frames of one read; a run
of messages on one channel becomes one :class:`~ws4redis_channels.frames.Batch`
per socket (a call per socket, not per socket and message). A message's
position, read from ``{<channel>}:pos`` right before it, is paired with it:
sockets with positions get ``m <label> <position>\n<payload>``, the others
the raw payload, encoded into a frame once for all of them. Messages older
than what the channel delivered are dropped, sockets still joining get them
held back (:mod:`ws4redis_channels.replay`), and a socket publishing without
echo is skipped for its own message (:mod:`ws4redis_channels.echoes`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from .channel_state import ChannelState, Sink
from .frames import Batch, Outbound, make_message
from .metrics import NullRecorder
from .positions import Position, message_frame

__all__ = ["FanOut"]

# The bridge's log lines, as before the fan-out had a module of its own.
logger = logging.getLogger("ws4redis_channels.bridge")


class FanOut:
    """Delivery of what the bridge reads; mixed into :class:`~ws4redis_channels.bridge.Bridge`."""

    # Set by the bridge.
    _MESSAGE: bytes
    _channels: dict[bytes, ChannelState]
    _companions: dict[bytes, ChannelState]
    _metrics: NullRecorder
    _timing: bool
    _loop: asyncio.AbstractEventLoop

    def _on_push(self, value: list[Any]) -> None:
        """Handle a pub/sub frame other than a message (the bridge's bookkeeping)."""
        raise NotImplementedError

    def deliver_local(self, channel: str, message: dict[str, Any]) -> None:
        """Deliver an ASGI ``websocket.send`` message to the local sockets of ``channel``.

        This is the channel layer path: the event says whether it is text or bytes.
        """
        payload = message["bytes"] if "bytes" in message else message["text"].encode("utf-8")
        self._fanout(channel.encode(), [payload], [Outbound(message)])

    def _on_values(self, values: list[list[Any]]) -> None:
        """Handle the pub/sub frames of one read from Redis; runs of messages on
        one channel are fanned out together."""
        run_key: Any = None
        run: list[bytes] = []
        run_positions: list[Position | None] = []
        run_ch: ChannelState | None = None
        companions = self._companions
        message = self._MESSAGE
        for value in values:
            if value[0] == message:
                key = value[1]
                owner = companions.get(key)
                if owner is not None:
                    # The position of the message that follows on the channel.
                    owner.next_position = value[2]
                    continue
                if key != run_key:
                    if run:
                        self._fanout(run_key, run, positions=run_positions)
                    run_key, run, run_positions = key, [], []
                    run_ch = self._channels.get(key)
                run.append(value[2])
                if run_ch is not None and run_ch.next_position is not None:
                    try:
                        run_positions.append(Position.parse(run_ch.next_position))
                    except ValueError:
                        run_positions.append(None)
                    run_ch.next_position = None
                else:
                    run_positions.append(None)
                continue
            if run:
                self._fanout(run_key, run, positions=run_positions)
                run_key, run, run_positions = None, [], []
            self._on_push(value)
        if run:
            self._fanout(run_key, run, positions=run_positions)

    def _fanout(
        self,
        key: bytes,
        payloads: list[bytes],
        messages: list[Outbound] | None = None,
        *,
        positions: list[Position | None] | None = None,
    ) -> None:
        ch = self._channels.get(key)
        if ch is None:
            return
        if positions is None:
            positions = [None] * len(payloads)
        elif ch.position is not None:
            newest = ch.position
            if any(p is not None and p <= newest for p in positions):
                # Older than what the channel delivered (a Redis that lags
                # behind after a failover): never deliver it.
                kept = []
                for i, p in enumerate(positions):
                    if p is None or p > newest:
                        kept.append(i)
                        newest = p or newest
                if not kept:
                    return
                payloads, positions, messages = _only(kept, payloads, positions, messages)
        if b"" in payloads:
            # daphne's ASGI send drops an empty frame: no path sends one, so that
            # every server and path behaves alike (publisher.py refuses them).
            kept = [i for i, payload in enumerate(payloads) if payload]
            if not kept:
                return
            payloads, positions, messages = _only(kept, payloads, positions, messages)
        for held in ch.joining.values():
            held.extend(zip(payloads, positions, strict=True))
        if not ch.sinks and not ch.psinks:
            return
        timed = self._metrics.enabled and not self._timing
        start = time.perf_counter() if timed else 0.0
        ch.last = payloads[-1]
        for position in reversed(positions):
            if position is not None:
                ch.position = position
                break
        if ch.echoes:
            # Some sender must not get its own publication back: message by message.
            for i, payload in enumerate(payloads):
                skip: Any = ch.echoes.take(payload)
                sent = 0
                if ch.sinks:
                    message = messages[i] if messages is not None else make_message(payload)
                    sent += self._deliver(ch.sinks, ch, Batch([message]), skip)
                if ch.psinks:
                    framed = make_message(message_frame(ch.label, positions[i], payload))
                    sent += self._deliver(ch.psinks, ch, Batch([framed]), skip)
                self._metrics.delivered(sent, sent * len(payload))
        else:
            sent = 0
            if ch.sinks:
                if messages is None:
                    messages = [make_message(payload) for payload in payloads]
                sent += self._deliver(ch.sinks, ch, Batch(messages), None)
            if ch.psinks:
                label = ch.label
                framed_messages = [
                    make_message(message_frame(label, position, payload))
                    for payload, position in zip(payloads, positions, strict=True)
                ]
                sent += self._deliver(ch.psinks, ch, Batch(framed_messages), None)
            # Counted per fan-out, not per socket: the metrics stay off the hot loop.
            self._metrics.delivered(sent * len(payloads), sent * sum(map(len, payloads)))
        if timed:
            # The outlets' flush was queued during the delivery: this callback runs
            # after the frames of this read went out to every socket.
            self._timing = True
            self._loop.call_soon(self._fanout_done, start)

    def _fanout_done(self, start: float) -> None:
        self._timing = False
        self._metrics.fanout_took_since(start)

    def _deliver(
        self,
        sinks: dict[Sink, Callable[[Batch], None]],
        ch: ChannelState,
        batch: Batch,
        skip: Sink | None,
    ) -> int:
        """Hand ``batch`` to every sink in ``sinks`` but ``skip``; return how many got it."""
        # One list per fan-out (a sink may leave while we deliver), and no
        # other allocation per socket: a fan-out to thousands stays cheap.
        delivers = list(sinks.values())
        for deliver in delivers:
            if skip is None or deliver.__self__ is not skip:  # type: ignore[attr-defined]
                try:
                    deliver(batch)
                except Exception:
                    logger.exception("Delivering messages on %r failed", ch.key)
        return len(delivers) - (1 if skip is not None and skip in sinks else 0)


def _only(
    kept: list[int],
    payloads: list[bytes],
    positions: list[Position | None],
    messages: list[Outbound] | None,
) -> tuple[list[bytes], list[Position | None], list[Outbound] | None]:
    """The messages of a fan-out at the indices ``kept``."""
    return (
        [payloads[i] for i in kept],
        [positions[i] for i in kept],
        None if messages is None else [messages[i] for i in kept],
    )
