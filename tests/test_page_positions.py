"""The render-time positions tag: what a page tells its client to resume from."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.template import Context, Template, TemplateSyntaxError
from django.test import RequestFactory, override_settings

from ws4redis_channels import publisher
from ws4redis_channels.positions import Position


def render(request, facility="news"):
    return Template('{% load ws4redis %}{% ws4redis_positions "' + facility + '" %}').render(
        Context({"request": request})
    )


def meta_content(html: str) -> dict[str, Position]:
    content = html.split('content="')[1].split('"')[0]
    result = {}
    for item in content.split():
        label, epoch, offset = item.rsplit(":", 2)
        result[label] = Position(int(epoch), int(offset))
    return result


def test_the_tag_renders_the_current_position_of_the_broadcast_channel(redis_client):
    with override_settings(WS4REDIS_HISTORY_SIZE=10):
        published = publisher.publish("news", "hello", broadcast=True)
        request = RequestFactory().get("/")
        request.user = AnonymousUser()
        html = render(request)
    assert html.startswith('<meta name="ws4redis-positions" data-path="/ws/news" ')
    assert meta_content(html) == {"broadcast": published.positions["_broadcast_:news"]}


def test_the_tag_covers_the_users_own_channels_and_groups(redis_client):
    user = get_user_model().objects.get_or_create(username="tagger")[0]
    group = Group.objects.get_or_create(name="night shift")[0]
    user.groups.add(group)
    request = RequestFactory().get("/")
    request.user = user
    positions = meta_content(render(request))
    assert set(positions) == {"broadcast", "user", "group:night%20shift"}
    assert all(p.offset == 0 for p in positions.values())  # nothing published yet
    published = publisher.publish("news", "for you", users=["tagger"])
    assert published.positions["tagger:news"] == Position(positions["user"].epoch, 1)


def test_the_tag_needs_the_request():
    with pytest.raises(TemplateSyntaxError, match=r"context_processors\.request"):
        Template('{% load ws4redis %}{% ws4redis_positions "news" %}').render(Context({}))
