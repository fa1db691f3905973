"""HTTP views the app provides: the Prometheus metrics of this process, or of its host."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .metrics import render

__all__ = ["metrics"]


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Serve the metrics in Prometheus' text format (OpenMetrics when the scraper asks).

    It is not protected: expose it to your Prometheus only (see the docs).
    """
    body, content_type = render(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)
