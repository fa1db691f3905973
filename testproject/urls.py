from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("chat/", views.chat, name="chat"),
    path("notifications/", views.notifications, name="notifications"),
    path("notifications/send/", views.notify, name="notify"),
    path("session/", views.session_page, name="session"),
    path("session/send/", views.session_send, name="session-send"),
    path("login/<str:username>/", views.demo_login, name="demo-login"),
    path("logout/", views.demo_logout, name="demo-logout"),
    path("publish/", views.publish_view, name="publish"),
    path("stored/", views.stored_view, name="stored"),
    path("docs/", views.docs, name="docs"),
    path("docs/<path:path>", views.docs),
    path("admin/", admin.site.urls),
    # /metrics: Prometheus metrics of the daphne processes of this host
    path("", include("ws4redis_channels.urls")),
]
