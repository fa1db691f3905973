# ws4redis_channels ----------------------------------------------------------
import os

INSTALLED_APPS += [
    "channels",
    "ws4redis_channels",
    "mysite",  # so that Django finds mysite/templates/
]
ASGI_APPLICATION = "mysite.asgi.application"
# Gives templates WEBSOCKET_URI and WS4REDIS_HEARTBEAT.
TEMPLATES[0]["OPTIONS"]["context_processors"].append(
    "ws4redis_channels.context_processors.default",
)

WS4REDIS_CONNECTION = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
WS4REDIS_HEARTBEAT = "--heartbeat--"
# Anyone, anonymous visitors too, may publish to everyone on this facility.
WS4REDIS_OPEN_FACILITIES = ["foobar"]
