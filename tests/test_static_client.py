"""The JavaScript client as daphne serves it (no browser needed)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT
from ws4redis_channels.codes import NO_RETRY

STATIC = Path(__file__).resolve().parent.parent / "ws4redis_channels/static/ws4redis_channels"


@pytest.mark.parametrize("name", ["ws4redis.js", "ws4redis.mjs"])
def test_daphne_serves_the_client_as_javascript(daphne, name):
    with urllib.request.urlopen(
        daphne.http(f"/static/ws4redis_channels/{name}"), timeout=TIMEOUT
    ) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].split(";")[0] in (
            "text/javascript",
            "application/javascript",
        )
        assert r.read() == (STATIC / name).read_bytes()


def test_client_stops_retrying_on_exactly_the_servers_no_retry_codes():
    source = (STATIC / "ws4redis.js").read_text()
    found = re.search(r"var NO_RETRY = Object\.freeze\(\[([\d, ]+)\]\)", source)
    assert found, "NO_RETRY list not found in ws4redis.js"
    assert sorted(int(code) for code in found.group(1).split(",")) == sorted(NO_RETRY)
