"""Create logged-in users for the benchmark: ``python -m tests.bench.users COUNT`` prints JSON.

Each user ``benchNNNNN`` gets a saved database session that logs it in (as
``django.contrib.auth.login`` would store it), so a socket that sends
``Cookie: sessionid=<key>`` is that user with that session. Passwords are
unusable (hashing 5,000 of them would take minutes and the bench never logs in).
Output: ``[[username, session_key], ...]`` on stdout.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["create"]


def create(count: int) -> list[tuple[str, str]]:
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.db import transaction
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    unusable = make_password(None)
    names = [f"bench{n:05d}" for n in range(count)]
    with transaction.atomic():
        User.objects.filter(username__startswith="bench").delete()
        User.objects.bulk_create(User(username=name, password=unusable) for name in names)
        users = {u.username: u for u in User.objects.filter(username__in=names)}
        store = SessionStore()
        expires = timezone.now() + timezone.timedelta(seconds=settings.SESSION_COOKIE_AGE)
        sessions, out = [], []
        backend = settings.AUTHENTICATION_BACKENDS[0]
        for name in names:
            user = users[name]
            key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
            data = {
                SESSION_KEY: str(user.pk),
                BACKEND_SESSION_KEY: backend,
                HASH_SESSION_KEY: user.get_session_auth_hash(),
            }
            sessions.append(
                Session(session_key=key, session_data=store.encode(data), expire_date=expires)
            )
            out.append((name, key))
        Session.objects.bulk_create(sessions)
    return out


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()
    print(json.dumps(create(int(sys.argv[1]))))


if __name__ == "__main__":
    main()
