"""URLs of the app's HTTP views: ``path("", include("ws4redis_channels.urls"))`` serves
``/metrics``."""

from __future__ import annotations

from django.urls import URLPattern, path

from . import views

__all__ = ["urlpatterns"]

app_name = "ws4redis_channels"

urlpatterns: list[URLPattern] = [
    path("metrics", views.metrics, name="metrics"),
]
