"""The pieces behind the hostile-client defences, without servers: the identity buckets,
the per-iteration intake, and how client values are logged."""

from __future__ import annotations

import asyncio

from django.core.checks import Error
from django.test import override_settings

from ws4redis_channels.checks import check_settings
from ws4redis_channels.intake import Intake
from ws4redis_channels.limits import IdentityLimits, PublishLimits, identity_key
from ws4redis_channels.logs import describe_socket, escaped, query_names

LIMITS = PublishLimits(frame_rate=1.0, frame_burst=3, byte_rate=100.0, byte_burst=1000)


def test_the_identity_is_the_user_else_the_session_else_the_address():
    assert identity_key("mary", "s" * 32, ("10.0.0.1", 5)) == "user:mary"
    assert identity_key(None, "s" * 32, ("10.0.0.1", 5)) == f"session:{'s' * 32}"
    assert identity_key(None, None, ("10.0.0.1", 5)) == "address:10.0.0.1"
    assert identity_key(None, None, ("10.0.0.1", 6)) == "address:10.0.0.1"
    assert identity_key(None, None, None) == "address:unknown"


def test_a_returning_identity_finds_its_bucket_as_it_left_it():
    table = IdentityLimits()
    assert [table.check("a", 1, LIMITS, now=0.0) for _ in range(3)] == [None] * 3
    assert "frames" in (table.check("a", 1, LIMITS, now=0.0) or "")
    assert table.check("b", 1, LIMITS, now=0.0) is None  # another identity: its own burst
    assert table.check("a", 1, LIMITS, now=1.0) is None  # one token back after 1 s
    assert table.check("a", 1, LIMITS, now=1.0) is not None


def test_bytes_are_counted_and_a_refused_frame_costs_nothing():
    table = IdentityLimits()
    assert table.check("a", 900, LIMITS, now=0.0) is None
    refused = table.check("a", 200, LIMITS, now=0.0)
    assert refused is not None and "bytes" in refused
    assert table.check("a", 100, LIMITS, now=0.0) is None


def test_stored_channels_are_bounded_within_the_window():
    limits = PublishLimits(0, 1, 0, 1, max_stored_channels=2, store_window=10.0)
    table = IdentityLimits()
    assert table.check("a", 1, limits, ["c1"], now=0.0) is None
    assert table.check("a", 1, limits, ["c2"], now=1.0) is None
    assert table.check("a", 1, limits, ["c1", "c2"], now=2.0) is None
    refused = table.check("a", 1, limits, ["c3"], now=2.0)
    assert refused is not None and "would exceed 2" in refused
    assert table.check("a", 1, limits, ["c3"], now=12.5) is None  # both stored again at 2


def test_the_table_is_bounded():
    table = IdentityLimits(max_identities=100)
    for i in range(1000):
        table.check(f"id{i}", 1, LIMITS, now=0.0)
    assert len(table) == 100


async def test_the_intake_admits_a_budget_per_iteration_in_order():
    intake = Intake(budget=100)
    order: list[int] = []

    async def frame(n: int) -> None:
        await intake.admit(60)
        order.append(n)

    tasks = [asyncio.ensure_future(frame(n)) for n in range(5)]
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == [0, 1, 2, 3, 4]
    assert intake.waited >= 3
    assert intake.try_admit(1000)  # a frame over the budget passes alone
    assert not intake.try_admit(1)


def test_client_values_are_escaped_and_query_values_left_out():
    assert escaped("a\nb\\c\x1b") == "a\\nb\\\\c\\x1b"
    assert escaped("x" * 300).endswith("...")
    assert query_names(b"subscribe-broadcast&token=s3cret&a%0Ab=1") == (
        "subscribe-broadcast&token&a\\nb"
    )
    scope = {"path": "/ws/a\nFORGED", "query_string": b"token=s3cret", "client": ("1.2.3.4", 9)}
    assert describe_socket(scope) == "/ws/a\\nFORGED?token from 1.2.3.4"


def test_a_bytes_burst_below_the_message_size_is_a_check_error():
    with override_settings(WS4REDIS_PUBLISH_BYTES_BURST=1000, WS4REDIS_MAX_MESSAGE_SIZE=2000):
        errors = [m for m in check_settings() if isinstance(m, Error)]
    assert [e.id for e in errors] == ["ws4redis_channels.E022"]
