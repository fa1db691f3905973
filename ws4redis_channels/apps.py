"""Django app configuration: registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["WS4RedisChannelsConfig"]


class WS4RedisChannelsConfig(AppConfig):
    name = "ws4redis_channels"
    verbose_name = "Websockets for Redis (Channels)"

    def ready(self) -> None:
        from . import checks, project_checks  # noqa: F401  (registers the checks)
