"""``manage.py ws4redis_status``: every live server process of every host, found through Redis."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import conf
from ...connection import parse_target, sync_client
from ...diagnostics import explain_redis_error, redis_errors
from ...registry import ProcessReport, list_processes

EXIT_TROUBLE = 1
EXIT_UNREACHABLE = 2


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return f"{max(0.0, time.time() - timestamp):.0f}s ago"


def _row(report: ProcessReport) -> list[str]:
    off = sorted(name for name, enabled in report.accelerations.items() if not enabled)
    if not report.accelerations:
        accelerations = "-"
    elif off:
        accelerations = f"off: {', '.join(off)}"
    else:
        accelerations = f"all {len(report.accelerations)} on"
    if report.silent:
        redis_state = f"SILENT since {_ago(report.updated)}"
    elif report.trouble:
        redis_state = f"TROUBLE: {report.trouble}"
    else:
        redis_state = "ok"
    return [
        report.host,
        str(report.pid),
        "-" if report.silent else str(report.sockets),
        "-" if report.silent else str(report.subscriptions),
        _when(report.connected_since),
        accelerations,
        redis_state,
    ]


class Command(BaseCommand):
    help = (
        "List every live ws4redis_channels server process of every host (each reports to "
        "Redis every few seconds once it served a websocket): host, pid, sockets, "
        "subscriptions, connected since, accelerations, Redis state. Exits with 1 when a "
        "process reports Redis trouble or stopped reporting, 2 when Redis cannot be reached."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the reports as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        target = parse_target(conf.WS4REDIS_CONNECTION)
        try:
            reports = list_processes(sync_client(target), conf.WS4REDIS_PREFIX)
        except redis_errors() as exc:
            raise CommandError(
                explain_redis_error(exc, target.describe()), returncode=EXIT_UNREACHABLE
            ) from None
        troubled = [r for r in reports if r.trouble]
        if options["json"]:
            self.stdout.write(
                json.dumps([{**asdict(r), "trouble": r.trouble} for r in reports], indent=2)
            )
        elif not reports:
            self.stdout.write(
                f"No ws4redis_channels process reports to Redis at {target.describe()} "
                "(a process reports once it has served a websocket)."
            )
        else:
            header = ["HOST", "PID", "SOCKETS", "SUBSCRIPTIONS", "CONNECTED SINCE"]
            header += ["ACCELERATIONS", "REDIS"]
            rows = [header, *(_row(r) for r in reports)]
            widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
            for row in rows:
                cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
                self.stdout.write("  ".join([*cells, row[-1]]).rstrip())
            sockets = sum(r.sockets for r in reports if not r.silent)
            hosts = len({r.host for r in reports})
            self.stdout.write(
                f"{len(reports)} process(es) on {hosts} host(s), {sockets} socket(s); "
                f"{len(troubled)} with trouble"
            )
        if troubled:
            raise CommandError(
                f"{len(troubled)} process(es) report trouble with Redis", returncode=EXIT_TROUBLE
            )
