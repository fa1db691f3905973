"""Draw the headline numbers of a benchmark run as an SVG bar chart (no dependencies).

``python -m tests.bench.chart tests/bench/results/<run>.json docs/_static/benchmark.svg``

One panel per figure, one bar per server: burst deliveries per second at
1,000 and 5,000 sockets, a message per own channel to 5,000 sockets,
connects per second (anonymous and logged in), seconds until 5,000 sockets
are back after a restart, and memory per idle socket. Bars are scaled to the
largest value of their panel; each carries its number. A server without a
number in a panel (not run, skipped, failed) has no bar there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

__all__ = ["render"]

PANELS = [
    ("burst1k", "deliveries_per_s", "Burst: 200 messages to 1,000 sockets (deliveries/s)"),
    ("burst5k", "deliveries_per_s", "Burst: 20 messages to 5,000 sockets (deliveries/s)"),
    ("channels", "deliveries_per_s", "One message per own channel, 5,000 sockets (deliveries/s)"),
    ("connect", "connects_per_s", "Connects per second, anonymous (1,000 sockets)"),
    ("connect-user", "connects_per_s", "Connects per second, logged-in session (1,000 sockets)"),
    ("storm", "all_subscribed_s", "Restart: seconds until 5,000 sockets are back (less is better)"),
    ("idle", "kb_per_socket", "KB per idle socket at 5,000 (less is better)"),
]
COLORS = {"product": "#2563eb", "nchan": "#16a34a", "nchan-redis": "#16a34a"}
OTHER = "#9ca3af"
WIDTH, BAR, GAP, LABEL = 760, 18, 6, 130


def _value(results: dict[str, Any], server: str, scenario: str, key: str) -> float | None:
    value = results.get(server, {}).get(scenario, {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def render(run: dict[str, Any]) -> str:
    """Return the SVG text for one run's JSON."""
    results = run["results"]
    servers = list(results)
    height = 20 + len(PANELS) * (30 + len(servers) * (BAR + GAP) + 14)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
    ]
    y = 20
    for scenario, key, title in PANELS:
        out.append(f'<text x="0" y="{y}" font-weight="bold">{escape(title)}</text>')
        y += 12
        values = {s: _value(results, s, scenario, key) for s in servers}
        top = max((v for v in values.values() if v), default=1.0)
        for server in servers:
            value = values[server]
            length = 0 if not value else max(1, int((WIDTH - LABEL - 110) * value / top))
            color = COLORS.get(server, OTHER)
            text = "-" if value is None else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
            out.append(f'<text x="0" y="{y + BAR - 5}">{escape(server)}</text>')
            out.append(
                f'<rect x="{LABEL}" y="{y}" width="{length}" height="{BAR}" fill="{color}"/>'
            )
            out.append(f'<text x="{LABEL + length + 6}" y="{y + BAR - 5}">{text}</text>')
            y += BAR + GAP
        y += 32
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    run = json.loads(Path(argv[0]).read_text())
    Path(argv[1]).write_text(render(run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
