"""Run the faults and print what happened: ``python -m tests.chaos [--quick] [--faults ...]``.

With ``--write-docs`` the table is also written to ``docs/topics/faults-table.rst``,
which the "How we test it" page includes: the published figures are this
command's output, not typed by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from tests.servers import ROOT

from .faults import FAULTS, FULL, QUICK, Result, migrate

DOCS_TABLE = ROOT / "docs" / "topics" / "faults-table.rst"
RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ("fault", "load", "outcome", "lost", "repeated", "recovery", "cost")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated, from: {', '.join(FAULTS)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller loads: a smoke run")
    parser.add_argument("--write-docs", action="store_true", help=f"write {DOCS_TABLE.name}")
    return parser.parse_args(argv)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def _text(results: list[Result]) -> str:
    lines = []
    for r in results:
        lines.append(f"## {r.fault}  [{r.load}]")
        for name in COLUMNS[2:]:
            lines.append(f"   {name:9} {getattr(r, name)}")
        for note in r.notes:
            lines.append(f"   note      {note}")
    return "\n".join(lines)


def _rst(results: list[Result], header: str) -> str:
    def cell(value: str) -> str:
        return value.replace("|", "/").replace("*", "\\*") or "—"

    out = [
        ".. This file is written by `make chaos` (python -m tests.chaos --write-docs).",
        "   Do not edit it by hand.",
        "",
        header,
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 18 16 18 14 12 14 12",
        "",
        "   * - " + "\n     - ".join(c.capitalize() for c in COLUMNS),
    ]
    for r in results:
        values = [getattr(r, c) for c in COLUMNS]
        if r.notes:
            values[2] = f"{values[2]} ({'; '.join(r.notes)})"
        out.append("   * - " + "\n     - ".join(cell(str(v)) for v in values))
    return "\n".join(out) + "\n"


async def _run(names: list[str], quick: bool) -> list[Result]:
    scale = QUICK if quick else FULL
    results = []
    for name in names:
        started = time.monotonic()
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        try:
            result = await asyncio.wait_for(FAULTS[name](scale), 240)
        except Exception as exc:  # a broken fault is reported, the others still run
            result = Result(name, "—", outcome=f"the fault run failed: {exc!r}")
        result.raw["seconds"] = round(time.monotonic() - started, 1)
        print(_text([result]), file=sys.stderr, flush=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    names = [n for n in args.faults.split(",") if n]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        print(f"unknown faults: {', '.join(unknown)}; choose from {', '.join(FAULTS)}")
        return 2
    migrate()
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    load = os.getloadavg()[0]
    started = time.monotonic()
    results = asyncio.run(_run(names, args.quick))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"Measured {when} at commit ``{_commit()}`` on {platform.machine()} with "
        f"{os.cpu_count()} cores{' (quick loads)' if args.quick else ''}, "
        f"Python {platform.python_version()}, in {time.monotonic() - started:.0f} s; "
        f"load average at the start {load:.1f} (other work on the machine slows recovery "
        "times, not the counts)."
    )
    print(header)
    print(_text(results))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1, default=str))
    if args.write_docs:
        DOCS_TABLE.write_text(_rst(results, header))
        print(f"wrote {DOCS_TABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
