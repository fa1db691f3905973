"""Django app configuration: registers the system checks and the login signal receiver."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["WS4RedisChannelsConfig"]


class WS4RedisChannelsConfig(AppConfig):
    name = "ws4redis_channels"
    verbose_name = "Websockets for Redis (Channels)"

    def ready(self) -> None:
        import sys

        from django.contrib.auth.signals import user_logged_in

        from . import checks, project_checks  # noqa: F401  (registers the checks)
        from .memberof import store_groups_in_session

        user_logged_in.connect(store_groups_in_session, dispatch_uid="ws4redis_channels.memberof")
        if "twisted.internet.reactor" in sys.modules:
            # Under daphne, which installs its reactor before it imports the app:
            # once it listens, its listen queues are lengthened and, since a
            # restart is when every browser comes back at once, the process
            # starts in a surge of handshakes (no I/O here).
            from .accelerator import at_server_start
            from .collector import SETTLE_AFTER, surge

            at_server_start(surge.prime, later=(SETTLE_AFTER, surge.settle))
