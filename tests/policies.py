"""``WS4REDIS_ALLOWED_CHANNELS`` callbacks used by the end-to-end tests."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied


def subscribe_only(request, channels):
    """A callback in django-websocket-redis's style: no publishing at all."""
    return [c for c in channels if c.startswith("subscribe-")]


async def staff_may_broadcast(request, channels):
    """An async callback: only staff may publish-broadcast; everyone may subscribe."""
    user = request.scope.get("user")
    allowed = [c for c in channels if c.startswith("subscribe-") or c == "echo"]
    if "publish-broadcast" in channels and getattr(user, "username", None) == "john":
        allowed.append("publish-broadcast")
    return allowed


def members_only(request, channels):
    if not request.user.is_authenticated:
        raise PermissionDenied("members only")
    return channels


def broken(request, channels):
    return None


def explodes(request, channels):
    """A callback with a bug: the handshake must still get a documented refusal."""
    raise RuntimeError("bug in the policy callback")


class BrokenSessionStore:
    """A session store whose backend is down (``SESSION_ENGINE = "tests.policies"``)."""

    def __init__(self, session_key=None):
        raise ConnectionError("session backend unreachable")


SessionStore = BrokenSessionStore


def reads_query(request, channels):
    """A callback that reads ``request.GET`` (Django's parser, with its field limit)."""
    request.GET.get("token")
    return channels
