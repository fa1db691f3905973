"""The template context that pages use to open websockets."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import DisallowedHost
from django.template import engines
from django.test import RequestFactory, override_settings

from ws4redis_channels.context_processors import default, heartbeat_literal, websocket_uri

HOSTS = ["example.com", "127.0.0.1"]


@override_settings(ALLOWED_HOSTS=HOSTS, WEBSOCKET_URL="/ws/")
def test_plain_http_request_gets_a_ws_uri_with_host_and_port():
    request = RequestFactory().get("/", HTTP_HOST="127.0.0.1:8000")
    assert websocket_uri(request) == "ws://127.0.0.1:8000/ws/"


@override_settings(ALLOWED_HOSTS=HOSTS, WEBSOCKET_URL="/ws/")
def test_secure_request_gets_a_wss_uri():
    request = RequestFactory().get("/", HTTP_HOST="example.com", secure=True)
    assert websocket_uri(request) == "wss://example.com/ws/"


@override_settings(
    ALLOWED_HOSTS=HOSTS,
    SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
)
def test_tls_terminated_by_a_proxy_gives_wss():
    request = RequestFactory().get("/", HTTP_HOST="example.com", HTTP_X_FORWARDED_PROTO="https")
    assert websocket_uri(request).startswith("wss://example.com/")


@override_settings(ALLOWED_HOSTS=HOSTS, WEBSOCKET_URL="/sockets/v1/")
def test_uri_follows_websocket_url():
    request = RequestFactory().get("/", HTTP_HOST="example.com")
    assert default(request)["WEBSOCKET_URI"] == "ws://example.com/sockets/v1/"


@override_settings(ALLOWED_HOSTS=HOSTS)
def test_host_not_in_allowed_hosts_is_refused_as_django_does():
    request = RequestFactory().get("/", HTTP_HOST="evil.example")
    with pytest.raises(DisallowedHost):
        default(request)


@override_settings(WS4REDIS_HEARTBEAT="--heartbeat--")
def test_heartbeat_is_a_javascript_string_literal():
    assert heartbeat_literal() == '"--heartbeat--"'
    assert json.loads(heartbeat_literal()) == "--heartbeat--"


@override_settings(WS4REDIS_HEARTBEAT=None)
def test_no_heartbeat_is_javascript_null():
    assert heartbeat_literal() == "null"


@override_settings(WS4REDIS_HEARTBEAT="</script><b>'\"&\u2028")
def test_heartbeat_cannot_end_the_script_element():
    literal = heartbeat_literal()
    for forbidden in ("<", ">", "&", "'", "\u2028"):
        assert forbidden not in literal
    assert json.loads(literal) == "</script><b>'\"&\u2028"


@override_settings(ALLOWED_HOSTS=HOSTS, WEBSOCKET_URL="/ws/", WS4REDIS_HEARTBEAT="--hb--")
def test_template_renders_a_working_client_configuration():
    template = engines["django"].from_string(
        'WS4Redis({uri: "{{ WEBSOCKET_URI }}foobar?subscribe-broadcast&echo", '
        "heartbeat_msg: {{ WS4REDIS_HEARTBEAT }}});"
    )
    request = RequestFactory().get("/", HTTP_HOST="example.com")
    assert template.render(default(request), request) == (
        'WS4Redis({uri: "ws://example.com/ws/foobar?subscribe-broadcast&echo", '
        'heartbeat_msg: "--hb--"});'
    )


def test_testproject_enables_the_context_processor():
    from django.conf import settings

    processors = settings.TEMPLATES[0]["OPTIONS"]["context_processors"]
    assert "ws4redis_channels.context_processors.default" in processors
