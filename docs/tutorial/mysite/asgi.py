"""ASGI entry point of mysite: ``daphne mysite.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_asgi_app = get_asgi_application()  # sets Django up; import the rest after it

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from ws4redis_channels.routing import http_application, websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Django serves the static files itself here; in production, nginx does.
        # Plain HTTP on WEBSOCKET_URL gets 400 "needs a websocket upgrade".
        "http": http_application(ASGIStaticFilesHandler(django_asgi_app)),
        # Origin check, session and user, then the ws4redis_channels consumer.
        "websocket": websocket_application(),
    }
)
