"""``manage.py ws4redis_publish``: publish (and store) a message from the shell."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import conf
from ...diagnostics import explain_redis_error, redis_errors
from ...exceptions import InvalidName
from ...metrics import publishing_as
from ...publisher import channels, publish
from ...target import parse_target


class Command(BaseCommand):
    help = (
        "Publish a message to the sockets of a facility, stored for replay when "
        "--expire (default WS4REDIS_EXPIRE) is positive. Without an audience "
        "option the message is broadcast."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("facility", help="facility, e.g. foobar")
        parser.add_argument("message", help="the message text; '-' reads it from standard input")
        parser.add_argument(
            "--broadcast", action="store_true", help="every subscriber of the facility"
        )
        parser.add_argument(
            "--user", action="append", default=[], metavar="NAME", help="a user (repeatable)"
        )
        parser.add_argument(
            "--session",
            action="append",
            default=[],
            metavar="KEY",
            help="a session key (repeatable)",
        )
        parser.add_argument(
            "--group", action="append", default=[], metavar="NAME", help="a group (repeatable)"
        )
        parser.add_argument(
            "--expire",
            type=int,
            default=None,
            metavar="SECONDS",
            help="seconds to store it; 0: live only",
        )
        parser.add_argument(
            "--message-id",
            default=None,
            metavar="ID",
            help="publish at most once with this id (within the history window): safe to retry",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        message: str | bytes = options["message"]
        if message == "-":
            message = sys.stdin.buffer.read()
        broadcast = options["broadcast"] or not (
            options["user"] or options["session"] or options["group"]
        )
        audiences = dict(
            broadcast=broadcast,
            users=options["user"],
            sessions=options["session"],
            groups=options["group"],
        )
        if options["expire"] is not None and options["expire"] < 0:
            raise CommandError("--expire must be 0 or more seconds")
        try:
            names = channels(options["facility"], **audiences)
            with publishing_as("command"):
                result = publish(
                    options["facility"],
                    message,
                    expire=options["expire"],
                    message_id=options["message_id"],
                    **audiences,
                )
        except (InvalidName, ValueError) as exc:
            raise CommandError(str(exc)) from None
        except redis_errors() as exc:
            where = parse_target(conf.WS4REDIS_CONNECTION).describe()
            raise CommandError(explain_redis_error(exc, where)) from None
        where = ", ".join(f"{name} at {result.positions[name]}" for name in names)
        if result.duplicate:
            self.stdout.write(f"Already published as {options['message_id']!r}: {where}")
            return
        self.stdout.write(f"Published on {where} ({int(result)} subscribing processes)")
