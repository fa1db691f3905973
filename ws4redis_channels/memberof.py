"""At login, store the user's group names in the session, as django-websocket-redis did.

Code written for the original (views, templates, ``WS4REDIS_ALLOWED_CHANNELS``
callbacks) reads them from ``request.session["ws4redis:memberof"]``.
ws4redis_channels itself takes groups from the database when a socket
connects, so this list is only for such code; it is as fresh as the login.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SESSION_KEY", "store_groups_in_session"]

SESSION_KEY = "ws4redis:memberof"


def store_groups_in_session(sender: Any, user: Any, request: Any, **kwargs: Any) -> None:
    """``user_logged_in`` receiver: put the user's group names under ``ws4redis:memberof``."""
    groups = getattr(user, "groups", None)
    session = getattr(request, "session", None)
    if groups is None or session is None:
        return
    session[SESSION_KEY] = [str(name) for name in groups.values_list("name", flat=True)]
