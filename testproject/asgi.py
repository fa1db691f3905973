"""ASGI entry point: ``daphne testproject.asgi:application``.

HTTP goes to Django (with static files served by Django's ASGI static handler,
so the JavaScript client loads under daphne); websockets go through the origin
check and channels' auth/session middleware to ws4redis_channels.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
django_asgi = get_asgi_application()  # sets Django up before the imports below

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from ws4redis_channels.routing import http_application, websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http_application(ASGIStaticFilesHandler(django_asgi)),
        "websocket": websocket_application(),
    }
)
