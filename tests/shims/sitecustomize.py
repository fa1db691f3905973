"""Test-only: simulate a minor release of daphne, autobahn, Twisted or channels that renamed
something the accelerator relies on.

Put this folder first on ``PYTHONPATH`` and set ``WS4REDIS_TEST_RENAME`` to a JSON
list of ``[module_prefixes, old, new]`` (prefixes separated by commas). Every
module whose name starts with a prefix is compiled from its source with ``old`` replaced by ``new`` (whole
words if ``old`` is an identifier, else the literal text): the library keeps working under the new name, and
code that relies on the old name meets an ``AttributeError``, as it would
after an upgrade. Nothing else changes.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import re
import sys
from typing import Any

_RULES: list[tuple[str, re.Pattern[str], str]] = [
    (prefix, re.compile(rf"\b{old}\b" if old.isidentifier() else re.escape(old)), new)
    for prefix, old, new in json.loads(os.environ.get("WS4REDIS_TEST_RENAME", "[]"))
]


class _RenamingLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, rules: list[tuple[re.Pattern[str], str]]) -> None:
        super().__init__(fullname, path)
        self.rules = rules

    def get_code(self, fullname: str) -> Any:
        source = self.get_data(self.path).decode("utf-8")
        for pattern, new in self.rules:
            source = pattern.sub(new.replace("\\", "\\\\"), source)
        return compile(source, self.path, "exec", dont_inherit=True)


class _RenamingFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        rules = [(p, n) for prefix, p, n in _RULES if fullname.startswith(tuple(prefix.split(",")))]
        if not rules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = _RenamingLoader(fullname, spec.origin or "", rules)
        return spec


if _RULES:
    sys.meta_path.insert(0, _RenamingFinder())


def _census(path: str) -> None:
    """Write what the open daphne sockets of this process keep (tests/test_footprint.py)."""
    import gc

    gc.collect()
    objects = gc.get_objects()
    names = [f"{type(o).__module__}.{type(o).__qualname__}" for o in objects]
    protocols = [o for o in objects if type(o).__name__.startswith("WebSocketProtocol")]
    sockets = []
    for protocol in protocols:
        queue = vars(protocol).get("application_queue")
        parts = vars(queue) if queue is not None else {}
        event = parts.get("_finished")
        transport = getattr(protocol, "transport", None)
        producer = getattr(transport, "producer", getattr(transport, "_producer", None))
        sockets.append(
            {
                "state": getattr(protocol, "state", None),
                "queue": {k: type(v).__name__ for k, v in parts.items() if k[1:] in _QUEUE_PARTS},
                "join_waiters": type(vars(event).get("_waiters")).__name__ if event else None,
                "send_queue": type(vars(protocol).get("send_queue")).__name__,
                "producer": type(producer).__name__,
                "on_ping": type(vars(protocol).get("onPing")).__name__,
                "headers": vars(protocol).get("http_headers"),
                "origin": vars(protocol).get("websocket_origin"),
            }
        )
    depths = []
    for task in asyncio_tasks():
        if getattr(task.get_coro(), "__qualname__", "") != "ProtocolTypeRouter.__call__":
            continue  # not a socket's application (the bridge's, the relay's ...)
        depth, awaited = 0, task.get_coro()
        while awaited is not None and hasattr(awaited, "cr_await"):
            depth += 1
            awaited = awaited.cr_await
        depths.append(depth)
    counts = {
        name: names.count(name)
        for name in ("twisted.web.http.HTTPChannel", "daphne.http_protocol.WebRequest")
    }
    with open(path + ".tmp", "w") as out:
        json.dump({"sockets": sockets, "counts": counts, "task_depths": depths}, out)
    os.replace(path + ".tmp", path)


_QUEUE_PARTS = ("queue", "getters", "putters")


def asyncio_tasks() -> list[Any]:
    import asyncio

    try:
        return list(asyncio.all_tasks(asyncio.get_event_loop()))
    except RuntimeError:
        return []


if os.environ.get("WS4REDIS_TEST_CENSUS"):
    import signal

    signal.signal(signal.SIGUSR2, lambda signum, frame: _census(os.environ["WS4REDIS_TEST_CENSUS"]))
