"""Django app configuration: registers the system checks and the login signal receiver."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["WS4RedisChannelsConfig"]


class WS4RedisChannelsConfig(AppConfig):
    name = "ws4redis_channels"
    verbose_name = "Websockets for Redis (Channels)"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from . import checks, project_checks  # noqa: F401  (registers the checks)
        from .memberof import store_groups_in_session

        user_logged_in.connect(store_groups_in_session, dispatch_uid="ws4redis_channels.memberof")
