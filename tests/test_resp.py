"""The RESP2 parser of the bridge's subscriber connection."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ws4redis_channels.resp import Parser, ReplyError, encode_command


def test_commands_are_encoded_as_arrays_of_bulk_strings():
    assert (
        encode_command("SUBSCRIBE", b"a:b", 7)
        == b"*3\r\n$9\r\nSUBSCRIBE\r\n$3\r\na:b\r\n$1\r\n7\r\n"
    )


def test_every_reply_type_is_parsed():
    data = (
        b"*3\r\n$7\r\nmessage\r\n$3\r\nch1\r\n$5\r\nhello\r\n"
        b"+PONG\r\n:42\r\n-ERR wrong\r\n$-1\r\n*-1\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n"
    )
    values = Parser().feed(data)
    assert values[:3] == [[b"message", b"ch1", b"hello"], b"PONG", 42]
    assert isinstance(values[3], ReplyError) and str(values[3]) == "ERR wrong"
    assert values[4:] == [None, None, [b"pong", b""]]


payloads = st.lists(st.binary(max_size=300), min_size=1, max_size=20)


@given(payloads, st.integers(min_value=1, max_value=50))
def test_values_split_at_any_byte_are_reassembled(messages, chunk):
    stream = b"".join(
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$%d\r\n%s\r\n" % (len(m), m) for m in messages
    )
    parser = Parser()
    values = []
    for start in range(0, len(stream), chunk):
        values.extend(parser.feed(stream[start : start + chunk]))
    assert values == [[b"message", b"ch", m] for m in messages]
