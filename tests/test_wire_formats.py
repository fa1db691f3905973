"""Our wire formats against well-kept libraries: the RESP parser against hiredis's reader,
the websocket frame encoder against the ``websockets`` library's serializer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ws4redis_channels.frames import encode_frame, make_message
from ws4redis_channels.resp import HiredisParser, Parser, ReplyError, Value, new_parser

hiredis = pytest.importorskip("hiredis")


def encode_value(value: object) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, ReplyError):
        return b"-%s\r\n" % str(value).encode()
    if isinstance(value, tuple):  # a simple string
        return b"+%s\r\n" % value[0]
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    assert isinstance(value, list)
    return b"*%d\r\n" % len(value) + b"".join(encode_value(v) for v in value)


simple = st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b)
scalars = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.binary(max_size=200),
    simple.map(lambda b: (b,)),
    st.text(alphabet="ABCDEFGH xyz", min_size=1, max_size=20).map(ReplyError),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5), max_leaves=20)


def normalized(value: object) -> object:
    """Simple strings parse as bytes; errors compare by text."""
    if isinstance(value, tuple):
        return value[0]
    if isinstance(value, ReplyError):
        return ("error", str(value))
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


def feed_in_pieces(parser: Parser | HiredisParser, data: bytes, cuts: list[int]) -> list[Value]:
    got: list[Value] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        got += parser.feed(data[start:cut])
        start = cut
    return got


@settings(max_examples=150, deadline=None)
@given(st.lists(values, min_size=1, max_size=10), st.lists(st.integers(0, 4000), max_size=8))
def test_the_python_parser_reads_what_hiredis_reads(items, cuts):
    data = b"".join(encode_value(v) for v in items)
    cuts = [c for c in cuts if c < len(data)]
    ours = feed_in_pieces(Parser(), data, cuts)
    theirs = feed_in_pieces(HiredisParser(), data, cuts)
    assert [normalized(v) for v in ours] == [normalized(v) for v in theirs]
    assert [normalized(v) for v in ours] == [normalized(v) for v in items]


def test_hiredis_is_used_when_installed():
    assert isinstance(new_parser(), HiredisParser)


def test_both_parsers_refuse_garbage():
    for parser in (Parser(), HiredisParser()):
        with pytest.raises(ValueError):
            parser.feed(b"?what\r\n")


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=70_000), st.text(max_size=20_000).map(str.encode)))
def test_frames_are_what_the_websockets_library_serializes(payload):
    from websockets.frames import Frame, Opcode

    message = make_message(payload)
    is_text = "text" in message
    frame = Frame(Opcode.TEXT if is_text else Opcode.BINARY, payload)
    expected = frame.serialize(mask=False, extensions=[])
    assert encode_frame(message) == expected
    assert message.frame == expected
