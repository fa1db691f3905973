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
