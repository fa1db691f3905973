"""An ``asgi.py`` with the project's own websocket router inside ``websocket_application``
(tests/test_footprint.py): ``daphne tests.custom_router_asgi:application``."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
django_asgi = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from ws4redis_channels.routing import websocket_application, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi,
        "websocket": websocket_application(URLRouter(websocket_urlpatterns)),
    }
)
