"""``{% ws4redis_positions "<facility>" %}``: a page's render-time positions, for the client.

Put it in the ``<head>`` of a page that opens a websocket on ``<facility>``::

    {% load ws4redis %}
    {% ws4redis_positions "foobar" %}

It renders a ``<meta name="ws4redis-positions">`` with the current position
of each channel the request's visitor can subscribe to on that facility
(broadcast, their user, their session, their groups). The shipped client
resumes from it on its first connect, so a message published after the page
was rendered and before its socket opened is delivered, not missed.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html

from .. import store
from ..conf import conf
from ..connection import parse_target, sync_client
from ..names import Audience, Target, channel_for, validate_facility
from ..positions import channel_label

__all__ = ["page_positions", "ws4redis_positions"]

register = template.Library()


def _targets(request: Any, facility: str) -> list[Target]:
    targets = [Target(Audience.BROADCAST, facility)]
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        targets.append(Target(Audience.USER, facility, user.get_username()))
        targets.extend(
            Target(Audience.GROUP, facility, name)
            for name in user.groups.values_list("name", flat=True)
        )
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if key:
        targets.append(Target(Audience.SESSION, facility, key))
    return targets


def page_positions(request: Any, facility: str) -> str:
    """Return ``<label>:<epoch>:<offset>`` of each of the visitor's channels, space-separated."""
    validate_facility(facility)
    prefix, naming = conf.WS4REDIS_PREFIX, conf.WS4REDIS_NAMING
    labelled = []
    for target in _targets(request, facility):
        try:
            labelled.append(
                (channel_label(target), channel_for(target, prefix=prefix, naming=naming))
            )
        except ValueError:
            continue  # a name that cannot name a channel has no position either
    client = sync_client(parse_target(conf.WS4REDIS_CONNECTION))
    replays = store.read(
        client, [c for _, c in labelled], [None] * len(labelled), conf.WS4REDIS_HISTORY_TTL
    )
    return " ".join(
        f"{label}:{replay.position}" for (label, _), replay in zip(labelled, replays, strict=True)
    )


@register.simple_tag(takes_context=True)
def ws4redis_positions(context: Any, facility: str) -> str:
    """Render the ``<meta>`` the shipped client resumes from on its first connect."""
    request = context.get("request")
    if request is None:
        raise template.TemplateSyntaxError(
            "ws4redis_positions needs the request in the template context: add "
            "'django.template.context_processors.request' to TEMPLATES' context_processors"
        )
    return format_html(
        '<meta name="ws4redis-positions" data-path="{}" content="{}">',
        f"{conf.WEBSOCKET_URL}{facility}",
        page_positions(request, facility),
    )
