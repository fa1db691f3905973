"""``manage.py ws4redis_naming``: which channel naming and prefix the names in Redis use."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import conf
from ...connection import parse_target, sync_client
from ...names import Naming
from ...naming_detection import Findings, inspect

_LABELS = {
    Naming.TYPED: "typed (broadcast:<f>, user:<name>:<f>; django-websocket-redis 0.3 to 0.6)",
    Naming.CLASSIC: "classic (_broadcast_:<f>, _group_:<g>:<f>; django-websocket-redis 0.2)",
}


def _setting_lines(naming: Naming, prefix: str) -> str:
    return f'WS4REDIS_NAMING = "{naming.value}"\nWS4REDIS_PREFIX = "{prefix}"'


class Command(BaseCommand):
    help = (
        "Inspect Redis (SCAN of the keys of stored messages, PUBSUB CHANNELS) and say which "
        "channel naming and prefix its names use, compared with WS4REDIS_NAMING and "
        "WS4REDIS_PREFIX."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--limit",
            type=int,
            default=100_000,
            metavar="KEYS",
            help="scan at most this many keys (default 100000)",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="exit with status 1 when the names found do not match the settings",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["limit"] < 1:
            raise CommandError("--limit must be 1 or more")
        naming, prefix = conf.WS4REDIS_NAMING, conf.WS4REDIS_PREFIX
        try:
            client = sync_client(parse_target(conf.WS4REDIS_CONNECTION))
            findings = inspect(client, limit=options["limit"])
        except Exception as exc:  # redis-py's errors: say what failed, not a traceback
            raise CommandError(f"could not inspect Redis: {exc}") from exc
        self.stdout.write(self._report(findings, naming, prefix))
        if options["check"] and not findings.matches(naming, prefix):
            raise CommandError("the names in Redis do not match WS4REDIS_NAMING/WS4REDIS_PREFIX")

    def _report(self, findings: Findings, naming: Naming, prefix: str) -> str:
        scope = "" if findings.complete else f" (stopped after {findings.keys_scanned})"
        lines = [
            f"Scanned {findings.keys_scanned} keys{scope} and "
            f"{findings.channels_seen} subscribed channels."
        ]
        for (found, found_prefix), count in findings.counts.most_common():
            examples = ", ".join(findings.examples[(found, found_prefix)])
            lines.append(
                f"  {count} {_LABELS[found]} with prefix {found_prefix!r}; e.g. {examples}"
            )
        verdict = findings.verdict()
        current = f"Settings: {_setting_lines(naming, prefix)}".replace("\n", ", ")
        if verdict is None:
            lines.append(
                "No ws4redis channel names found: nothing stored and no socket subscribed "
                "right now. Projects that used RedisPublisher (django-websocket-redis 0.3 "
                'to 0.6) need WS4REDIS_NAMING = "typed"; run this again while the old '
                "deployment runs, or after publishing with WS4REDIS_EXPIRE > 0."
            )
            lines.append(current)
            return "\n".join(lines)
        best_naming, best_prefix = verdict
        lines.append(f"Found: {best_naming.value} naming, prefix {best_prefix!r}.")
        if len(findings.counts) > 1:
            lines.append(
                "Several namings or prefixes are in use: other services or older versions "
                "publish on other names; make them agree."
            )
        lines.append(current)
        if findings.matches(naming, prefix):
            lines.append("OK: the settings match the names in Redis.")
        else:
            lines.append("MISMATCH: put this in your settings:")
            lines.append(_setting_lines(best_naming, best_prefix))
        return "\n".join(lines)
