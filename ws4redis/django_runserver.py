"""Gone: django-websocket-redis's development server. Importing it says what to use instead.

``WSGI_APPLICATION = "ws4redis.django_runserver.application"`` made
``manage.py runserver`` serve websockets with gevent. With ws4redis_channels,
daphne's ``runserver`` does that through ASGI.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

__all__: list[str] = []

raise ImproperlyConfigured(
    "ws4redis.django_runserver is gone: ws4redis_channels serves websockets through ASGI. "
    'Put "daphne" first in INSTALLED_APPS and set ASGI_APPLICATION = "<project>.asgi.application" '
    "(an asgi.py with ws4redis_channels.routing.websocket_application()); `manage.py runserver` "
    "is then daphne's and serves HTTP and websockets. Remove WSGI_APPLICATION = "
    '"ws4redis.django_runserver.application" and imports of ws4redis.django_runserver '
    "(tests: serve the project with daphne). See the migration guide."
)
