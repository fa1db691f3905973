"""``manage.py ws4redis_load_function``: load the ``ws4redis_publish`` Redis function."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...conf import conf
from ...connection import parse_target, sync_client
from ...diagnostics import explain_redis_error, redis_errors
from ...store import FUNCTION_NAME, configured, function_library, load_function


class Command(BaseCommand):
    help = (
        "Load the Redis function ws4redis_publish (Redis 7+), so that other languages and "
        "redis-cli can publish with persistence and history: "
        "FCALL ws4redis_publish 1 <channel> <message> "
        "<seconds>. The app also loads it when it connects; run this after a Redis restart "
        "or in a deployment script."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--print", action="store_true", help="only print the library code")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["print"]:
            # With this project's settings (history, expiry) as the defaults.
            self.stdout.write(function_library(*configured()))
            return
        target = parse_target(conf.WS4REDIS_CONNECTION)
        try:
            loaded = load_function(sync_client(target))
        except redis_errors() as exc:
            raise CommandError(explain_redis_error(exc, target.describe())) from None
        if not loaded:
            raise CommandError(f"Redis at {target.describe()} cannot load functions (Redis 7+)")
        self.stdout.write(f"Loaded the function {FUNCTION_NAME} into Redis at {target.describe()}")
