"""Views of the demo site: the explorer, a chat, per-user notifications, a session page.

Every page opens its websocket with ws4redis.js; the views only render pages,
log the demo users in and out, and publish from the server side with
:func:`ws4redis_channels.publisher.publish`.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model, login, logout
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from ws4redis_channels.codes import CLOSE_REASONS, NO_RETRY
from ws4redis_channels.exceptions import InvalidName
from ws4redis_channels.publisher import channels, publish

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


def _render(request: HttpRequest, template: str, page: str, **context: Any) -> HttpResponse:
    demo = {
        "closeReasons": {int(code): reason for code, reason in CLOSE_REASONS.items()},
        "noRetry": sorted(int(code) for code in NO_RETRY),
        "channelPrefixes": _channel_prefixes(request),
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


@require_POST
def publish_view(request: HttpRequest) -> HttpResponse:
    """Publish a message from a form (the server side of the demo)."""
    facility = request.POST.get("facility", "")
    message = request.POST.get("message", "")
    audience = request.POST.get("audience", "broadcast")
    target = request.POST.get("target", "")
    kwargs: dict[str, object] = {}
    if audience == "broadcast":
        kwargs["broadcast"] = True
    elif audience in ("users", "sessions", "groups"):
        kwargs[audience] = [target]
    else:
        return HttpResponseBadRequest("unknown audience")
    try:
        count = publish(facility, message, **kwargs)  # type: ignore[arg-type]
    except (InvalidName, ValueError) as exc:
        return HttpResponseBadRequest(str(exc))
    return HttpResponse(f"published to {count} subscribing processes\n", content_type="text/plain")
