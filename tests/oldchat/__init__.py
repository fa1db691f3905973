"""A chat project written for django-websocket-redis 0.6, migrated by following docs/migration.rst.

Its views, templates and JavaScript are as such projects have them
(``RedisPublisher`` and ``SELF`` in views, typed names with a prefix, the
group list that 0.6 kept in the session, the heartbeat from the context
processor, the client loaded from ``js/ws4redis.js``). What the migration
changed is marked ``# migration step N`` in ``settings.py`` and ``asgi.py``;
nothing else was touched.
"""
