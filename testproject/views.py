"""Views of the demo site: the explorer, a chat, per-user notifications, a session page.

Every page opens its websocket with ws4redis.js; the views only render pages,
log the demo users in and out, and publish from the server side with
:func:`ws4redis_channels.publisher.publish`.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.contrib.auth import get_user_model, login, logout
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseForbidden,
    JsonResponse,
)
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django.views.static import serve

from ws4redis_channels.codes import CLOSE_REASONS, NO_RETRY
from ws4redis_channels.conf import conf
from ws4redis_channels.connection import parse_target, sync_client
from ws4redis_channels.exceptions import InvalidName
from ws4redis_channels.publisher import channels, publish

DOCS_BUILD = Path(__file__).resolve().parent.parent / "docs" / "_build" / "html"
# A payload that is not UTF-8, so that it travels as a binary websocket frame.
BINARY_DEMO = b"\x00\x01\x02\xfe\xff"

DEMO_USERS = ("john", "mary")
# Who the notification form can write to, and how publish() names them.
NOTIFY_TARGETS: dict[str, dict[str, list[str]]] = {
    "john": {"users": ["john"]},
    "mary": {"users": ["mary"]},
    "staff": {"groups": ["staff"]},
}


def _session_key(request: HttpRequest) -> str:
    """Return the visitor's session key, saving a session first if there is none.

    The session flags need a saved session: a cookie the server has never
    stored names no channel.
    """
    if not request.session.session_key:
        request.session["visited"] = True
        request.session.save()
    return str(request.session.session_key)


def _channel_prefixes(request: HttpRequest) -> dict[str, Any]:
    """Redis channel names of each audience without the facility, which always comes last.

    The pages append the facility to show the exact ``redis-cli PUBLISH``
    command, whatever WS4REDIS_PREFIX and WS4REDIS_NAMING say.
    """

    def prefix(**audience: Any) -> str:
        return channels("f", **audience)[0][:-1]

    result: dict[str, Any] = {
        "broadcast": prefix(broadcast=True),
        "session": prefix(sessions=[_session_key(request)]),
        "user": None,
        "groups": [],
    }
    user = request.user
    if user.is_authenticated:
        result["user"] = prefix(users=[user.get_username()])
        for name in user.groups.values_list("name", flat=True):
            result["groups"].append(prefix(groups=[name]))
    return result


def _shell() -> dict[str, str]:
    """Command prefixes that work when pasted in a shell at the repository's top.

    They name the Redis this demo really uses (``make run`` starts a private
    one on a free port), without its password.
    """
    url = str(getattr(settings, "REDIS_URL", ""))
    parsed = urlparse(url)
    shown = url
    if parsed.password:
        shown = url.replace(f":{parsed.password}@", ":<password>@", 1)
    env = f"REDIS_URL={shlex.quote(shown)}"
    if conf.WS4REDIS_PREFIX:
        env += f" WS4REDIS_PREFIX={shlex.quote(conf.WS4REDIS_PREFIX)}"
    cli = f"redis-cli -u {shlex.quote(shown)}" if parsed.scheme in ("redis", "rediss") else ""
    return {
        "redisCli": cli or "redis-cli",
        "python": f".venv/bin/python -c \"import redis; redis.Redis.from_url('{shown}')",
        "manage": f"{env} DJANGO_SETTINGS_MODULE=testproject.settings .venv/bin/python -m django",
    }


def _render(request: HttpRequest, template: str, page: str, **context: Any) -> HttpResponse:
    demo = {
        "closeReasons": {int(code): reason for code, reason in CLOSE_REASONS.items()},
        "noRetry": sorted(int(code) for code in NO_RETRY),
        "channelPrefixes": _channel_prefixes(request),
        "shell": _shell(),
        "binaryDemo": list(BINARY_DEMO),
    }
    return render(
        request,
        template,
        {"page": page, "demo_users": DEMO_USERS, "demo": demo, **context},
    )


def home(request: HttpRequest) -> HttpResponse:
    """The explorer: pick a facility and flags, see what arrives."""
    return _render(request, "testproject/home.html", "explorer")


def chat(request: HttpRequest) -> HttpResponse:
    """A broadcast chat on facility ``chat``."""
    return _render(request, "testproject/chat.html", "chat")


def notifications(request: HttpRequest) -> HttpResponse:
    """Per-user (and per-group) notifications; log in as john or mary."""
    return _render(
        request, "testproject/notifications.html", "notifications", targets=list(NOTIFY_TARGETS)
    )


def session_page(request: HttpRequest) -> HttpResponse:
    """Messages for the tabs of one browser session."""
    key = _session_key(request)
    return _render(request, "testproject/session.html", "session", session_key=key)


def _redirect_back(request: HttpRequest, fallback: str) -> HttpResponse:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}):
        return redirect(target)
    return redirect(fallback)


def _wants_json(request: HttpRequest) -> bool:
    return request.headers.get("Accept") == "application/json"


@require_POST
def demo_login(request: HttpRequest, username: str) -> HttpResponse:
    user = get_user_model().objects.filter(username=username).first()
    if user is None or username not in DEMO_USERS:
        return HttpResponseBadRequest("unknown demo user")
    login(request, user)
    return _redirect_back(request, "home")


@require_POST
def demo_logout(request: HttpRequest) -> HttpResponse:
    logout(request)
    return _redirect_back(request, "home")


@require_POST
def notify(request: HttpRequest) -> HttpResponse:
    """Publish a notification to one demo user or to the group ``staff``."""
    if not request.user.is_authenticated:
        return HttpResponse("log in as john or mary first", status=403, content_type="text/plain")
    audience = NOTIFY_TARGETS.get(request.POST.get("to", ""))
    message = request.POST.get("message", "").strip()
    if audience is None or not message:
        return HttpResponseBadRequest("say whom to notify (john, mary or staff) and what")
    text = f"{message} (from {request.user.get_username()})"
    names = channels("notifications", **audience)
    receivers = publish("notifications", text, **audience)
    if _wants_json(request):
        return JsonResponse({"channels": names, "receivers": receivers})
    return redirect("notifications")


@require_POST
def session_send(request: HttpRequest) -> HttpResponse:
    """Publish a message to the visitor's own session from the server."""
    message = request.POST.get("message", "").strip()
    if not message:
        return HttpResponseBadRequest("write a message")
    key = _session_key(request)
    names = channels("session", sessions=[key])
    receivers = publish("session", message, sessions=[key])
    if _wants_json(request):
        return JsonResponse({"channels": names, "receivers": receivers})
    return redirect("session")


def _own_audience(request: HttpRequest, audience: str, target: str) -> dict[str, Any] | str:
    """Return publish() arguments for an audience of the visitor's own, or why not.

    A public demo must not let a visitor write into someone else's channels:
    broadcast, your own session, and, logged in, your own user and groups.
    """
    user = request.user
    if audience == "broadcast":
        return {"broadcast": True}
    if audience == "sessions":
        return {"sessions": [_session_key(request)]}  # this browser's session, whatever was typed
    if not user.is_authenticated:
        return (
            f"log in to publish to a {audience[:-1]}: "
            "visitors may publish to broadcast or to their own session"
        )
    if audience == "users":
        if target and target != user.get_username():
            return f"you may publish to your own user ({user.get_username()}) only"
        return {"users": [user.get_username()]}
    if audience == "groups":
        groups = list(user.groups.values_list("name", flat=True))
        if target not in groups:
            return f"you may publish to your groups only ({', '.join(groups) or 'none'})"
        return {"groups": [target]}
    return "unknown audience"


@require_POST
def publish_view(request: HttpRequest) -> HttpResponse:
    """Publish a message from a form (the server side of the demo), text or binary."""
    facility = request.POST.get("facility", "")
    message: str | bytes = request.POST.get("message", "")
    if request.POST.get("binary"):
        message = BINARY_DEMO + str(message).encode("utf-8")
    audience = _own_audience(
        request, request.POST.get("audience", "broadcast"), request.POST.get("target", "").strip()
    )
    if isinstance(audience, str):
        return HttpResponseForbidden(audience + "\n", content_type="text/plain")
    try:
        names = channels(facility, **audience)
        count = publish(facility, message, **audience)
    except (InvalidName, ValueError) as exc:
        return HttpResponseBadRequest(str(exc))
    kind = f"{len(message)} binary bytes" if isinstance(message, bytes) else "text"
    return HttpResponse(
        f"published ({kind}) on {', '.join(names)} to {count} subscribing process(es)\n",
        content_type="text/plain",
    )


@require_GET
def stored_view(request: HttpRequest) -> HttpResponse:
    """The stored message of each of the visitor's channels of a facility, with its expiry."""
    facility = request.GET.get("facility", "")
    user = request.user
    audiences: list[tuple[str, dict[str, Any]]] = [
        ("broadcast", {"broadcast": True}),
        ("session", {"sessions": [_session_key(request)]}),
    ]
    if user.is_authenticated:
        audiences.append(("user", {"users": [user.get_username()]}))
        for group in user.groups.values_list("name", flat=True):
            audiences.append((f"group {group}", {"groups": [group]}))
    try:
        names = [(label, channels(facility, **audience)[0]) for label, audience in audiences]
    except (InvalidName, ValueError) as exc:
        return HttpResponseBadRequest(str(exc))
    client = sync_client(parse_target(conf.WS4REDIS_CONNECTION))
    with client.pipeline(transaction=False) as pipe:
        for _, name in names:
            pipe.get(name)
            pipe.pttl(name)
        values = pipe.execute()
    found = []
    for index, (label, name) in enumerate(names):
        value, pttl = values[2 * index], values[2 * index + 1]
        if value is None:
            continue
        try:
            text, binary = value.decode("utf-8"), False
        except UnicodeDecodeError:
            text, binary = value.hex(" "), True
        found.append(
            {
                "audience": label,
                "channel": name,
                "message": text,
                "binary": binary,
                "expires_in": None if pttl < 0 else round(pttl / 1000),
            }
        )
    return JsonResponse({"expire": conf.WS4REDIS_EXPIRE, "stored": found})


def docs(request: HttpRequest, path: str = "index.html") -> HttpResponse:
    """The documentation built by ``make docs``, or how to build it."""
    if not (DOCS_BUILD / "index.html").exists():
        response = _render(request, "testproject/docs_missing.html", "docs")
        response.status_code = 404
        return response
    return serve(request, path or "index.html", document_root=str(DOCS_BUILD))
