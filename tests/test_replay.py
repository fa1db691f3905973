"""Planning a join: replay and held live messages, with positions and without."""

from __future__ import annotations

from ws4redis_channels.positions import Position, Status
from ws4redis_channels.replay import plan
from ws4redis_channels.store import Replay

E = 1_700_000_000_000


def P(offset: int, epoch: int = E) -> Position:
    return Position(epoch, offset)


FIVE = Position(E, 5)


def replay(status="new", stored=None, version=None, position=FIVE, entries=()):
    return Replay(stored, version, position, status, list(entries))


def test_a_resuming_socket_gets_the_history_then_newer_held_messages_once():
    read = replay("recovered", b"m5", P(5), P(5), [(P(4), b"m4"), (P(5), b"m5")])
    held = [(b"m5", P(5)), (b"m6", P(6))]
    planned = plan(read, held, positioned=True, since=P(3))
    assert planned.messages == [(b"m4", P(4)), (b"m5", P(5)), (b"m6", P(6))]
    assert planned.status is Status.RECOVERED and planned.position == P(6)


def test_bare_publishes_held_meanwhile_are_delivered_in_order():
    read = replay("recovered", position=P(3), entries=[])
    held = [(b"bare", None), (b"m4", P(4))]
    assert plan(read, held, positioned=True, since=P(3)).messages == [
        (b"bare", None),
        (b"m4", P(4)),
    ]


def test_a_lost_resume_gets_the_newer_stored_message_and_says_so():
    read = replay("lost", b"m9", P(9), P(9))
    planned = plan(read, [], positioned=True, since=P(2))
    assert planned.status is Status.LOST and planned.messages == [(b"m9", P(9))]


def test_a_stored_message_older_than_what_the_socket_has_is_never_sent():
    # After a failover the new master has an older state than the socket.
    read = replay("lost", b"m3", P(3), P(3))
    assert plan(read, [], positioned=True, since=P(5)).messages == []
    assert plan(read, [], positioned=False, last=P(5)).messages == []


def test_a_plain_socket_gets_the_stored_message_first_unless_its_version_is_held():
    read = replay("new", b"same text", P(5), P(5))
    assert plan(read, [(b"same text", P(6))], positioned=False).messages == [
        (b"same text", P(5)),
        (b"same text", P(6)),
    ]
    assert plan(read, [(b"m4", P(4)), (b"same text", P(5))], positioned=False).messages == [
        (b"m4", P(4)),
        (b"same text", P(5)),
    ]


def test_after_a_reconnect_a_plain_socket_gets_only_what_is_newer():
    read = replay("new", b"m7", P(7), P(7))
    assert plan(read, [], positioned=False, last=P(7)).messages == []
    assert plan(read, [], positioned=False, last=P(6)).messages == [(b"m7", P(7))]
    # A newer epoch (a promoted replica) is newer.
    newer = replay("new", b"x", P(1, E + 5), P(1, E + 5))
    assert plan(newer, [], positioned=False, last=P(9)).messages == [(b"x", P(1, E + 5))]


def test_a_stored_message_without_version_falls_back_to_the_bytes():
    read = replay("new", b"set by hand", None, P(0))
    assert plan(read, [], positioned=False, last_payload=b"set by hand").messages == []
    assert plan(read, [], positioned=False).messages == [(b"set by hand", None)]


def test_an_up_to_date_socket_gets_nothing_and_keeps_its_position():
    read = replay("recovered", b"m5", P(5), P(5))
    planned = plan(read, [], positioned=True, since=P(5))
    assert planned.messages == [] and planned.position == P(5)
