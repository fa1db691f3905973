"""Views of the demo site."""

from __future__ import annotations

from django.contrib.auth import get_user_model, login, logout
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ws4redis_channels.exceptions import InvalidName
from ws4redis_channels.publisher import publish


def home(request: HttpRequest) -> HttpResponse:
    """The explorer: pick a facility and flags, see what arrives."""
    if not request.session.session_key:
        request.session["visited"] = True  # give the visitor a saved session
        request.session.save()
    return render(request, "testproject/home.html", {"demo_users": ("john", "mary")})


@require_POST
def demo_login(request: HttpRequest, username: str) -> HttpResponse:
    user = get_user_model().objects.filter(username=username).first()
    if user is None or username not in ("john", "mary"):
        return HttpResponseBadRequest("unknown demo user")
    login(request, user)
    return redirect(request.POST.get("next") or "home")


@require_POST
def demo_logout(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect(request.POST.get("next") or "home")


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
