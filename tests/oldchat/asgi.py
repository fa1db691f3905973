"""ASGI entry point of the chat project (migration step 2)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.oldchat.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from ws4redis_channels.routing import http_application, websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http_application(ASGIStaticFilesHandler(django_asgi_app)),
        "websocket": websocket_application(),
    }
)
