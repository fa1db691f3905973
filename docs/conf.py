"""Sphinx configuration of the ws4redis_channels documentation.

Autodoc imports the package, which needs configured Django settings: the demo
project's settings are used (they read ``REDIS_URL`` and touch no network).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

import django  # noqa: E402

django.setup()

import ws4redis_channels  # noqa: E402

project = "ws4redis_channels"
author = "The ws4redis_channels authors"
copyright = "the ws4redis_channels authors"
release = ws4redis_channels.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",  # a [source] link beside every documented object
    "myst_parser",
]

# Links to Django, Channels and redis-py. The build must work offline: by
# default it reads the small inventories in _inventories/ (build.py writes
# them) instead of fetching the projects' objects.inv.
_INVENTORIES = Path(__file__).resolve().parent / "_inventories"
_ONLINE = os.environ.get("WS4REDIS_DOCS_ONLINE") == "1"
intersphinx_mapping = {
    name: (url, None if _ONLINE else str(_INVENTORIES / f"{name}.inv"))
    for name, url in {
        "django": "https://docs.djangoproject.com/en/5.2/",
        "channels": "https://channels.readthedocs.io/en/latest/",
        "redis": "https://redis.readthedocs.io/en/stable/",
    }.items()
}
intersphinx_timeout = 5
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# faults-table.rst is written by `make chaos` and included by topics/faults.rst.
exclude_patterns = ["_build", "tutorial/mysite", "topics/faults-table.rst"]

html_theme = "furo"
html_title = f"ws4redis_channels {release}"
pygments_style = "sphinx"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "undoc-members": False}

# Types from other libraries have no inventory here (the build works offline).
nitpick_ignore_regex = [
    (r"py:.*", r"(redis|django|channels|asyncio|collections|typing|enum|datetime)\b.*"),
    (r"py:.*", r"(Any|Iterable|Sequence|Mapping|Callable|Message|Sink|Value|Naming)"),
    (r"py:.*", r"(str|bytes|int|float|bool|None|list|dict|tuple|set|frozenset)\b.*"),
    (r"py:.*", r"(bytearray|memoryview|ValueError|ConnectionError|Exception)"),
    # names.py refers to its exception by its short name.
    (r"py:class", r"InvalidName"),
]


def setup(app: object) -> None:
    # Django's docs define :setting:`NAME`; with this, intersphinx resolves
    # :setting:`SESSION_ENGINE` to Django's settings reference.
    app.add_crossref_type("setting", "setting", indextemplate="pair: %s; setting")  # type: ignore[attr-defined]
