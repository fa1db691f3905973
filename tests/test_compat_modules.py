"""Modules of django-websocket-redis that old code imports: present, or gone with a clear message."""

from __future__ import annotations

import importlib
import sys
import urllib.request

import pytest
from django.contrib.staticfiles import finders
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tests.conftest import TIMEOUT
from tests.servers import ROOT


def test_ws4redis_settings_has_the_original_defaults():
    from ws4redis import settings as private_settings

    with override_settings():
        from django.conf import settings

        for name in ("WS4REDIS_PREFIX", "WS4REDIS_HEARTBEAT", "WS4REDIS_EXPIRE"):
            if hasattr(settings, name):
                delattr(settings, name)
        assert private_settings.WS4REDIS_PREFIX is None
        assert private_settings.WS4REDIS_HEARTBEAT is None
        assert private_settings.WS4REDIS_EXPIRE == 3600
    assert private_settings.WS4REDIS_SUBSCRIBER == "ws4redis.subscriber.RedisSubscriber"
    assert private_settings.WS4REDIS_PROCESS_REQUEST is None
    assert set(private_settings.__all__) <= set(dir(private_settings))


def test_ws4redis_settings_reads_the_settings_on_each_access():
    from ws4redis import settings as private_settings

    with override_settings(WS4REDIS_PREFIX="demo", WS4REDIS_EXPIRE=7, WEBSOCKET_URL="/socket/"):
        assert private_settings.WS4REDIS_PREFIX == "demo"
        assert private_settings.WS4REDIS_EXPIRE == 7
        assert private_settings.WEBSOCKET_URL == "/socket/"
    assert private_settings.WS4REDIS_HEARTBEAT == "--heartbeat--"  # testproject's
    with pytest.raises(AttributeError):
        private_settings.WS4REDIS_NO_SUCH_THING  # noqa: B018


@pytest.mark.parametrize("module", ["ws4redis.django_runserver", "ws4redis.uwsgi_runserver"])
def test_the_old_servers_say_to_use_daphne(module):
    sys.modules.pop(module, None)
    with pytest.raises(ImproperlyConfigured, match="daphne") as raised:
        importlib.import_module(module)
    assert "ASGI" in str(raised.value)
    if module.endswith("django_runserver"):
        assert "runserver" in str(raised.value) and "INSTALLED_APPS" in str(raised.value)


def test_the_old_client_path_finds_the_new_client():
    found = finders.find("js/ws4redis.js")
    assert found, "js/ws4redis.js is not found by the static files finders"
    new = ROOT / "ws4redis_channels/static/ws4redis_channels/ws4redis.js"
    # One client, two paths (js/ws4redis.js is a symlink; wheels and collectstatic copy it).
    assert open(found, "rb").read() == new.read_bytes()


def test_the_old_client_path_is_served(daphne):
    with urllib.request.urlopen(daphne.http("/static/js/ws4redis.js"), timeout=TIMEOUT) as r:
        assert r.status == 200
        body = r.read()
    assert b"function WS4Redis" in body or b"WS4Redis" in body
    assert b"send_message" in body and b"receive_message" in body


@override_settings(ALLOWED_HOSTS=["example.com"], WEBSOCKET_HOST="live.example.com:8443")
def test_websocket_host_of_the_original_goes_into_the_websocket_uri():
    from django.test import RequestFactory

    from ws4redis.context_processors import default

    request = RequestFactory().get("/", HTTP_HOST="example.com", secure=True)
    assert default(request)["WEBSOCKET_URI"] == "wss://live.example.com:8443/ws/"


def test_a_wrong_websocket_host_is_reported_by_the_checks():
    from ws4redis_channels.checks import check_settings

    with override_settings(WEBSOCKET_HOST="http://x/"):
        assert [m.id for m in check_settings()] == ["ws4redis_channels.E031"]
