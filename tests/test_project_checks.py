"""System checks of the project around the app, each with the misconfiguration users made."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core import checks
from django.test import override_settings

from testproject.redis_server import RedisServer, free_port
from ws4redis_channels import project_checks


def _ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [m.id for m in messages if m.id]


def _templates(directory: Path, processors: list[str]) -> list[dict[str, object]]:
    return [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [str(directory)],
            "APP_DIRS": False,
            "OPTIONS": {"context_processors": processors},
        }
    ]


def test_template_using_heartbeat_without_context_processor_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<script>WS4Redis({heartbeat_msg: {{ WS4REDIS_HEARTBEAT }}});</script>")
    with override_settings(TEMPLATES=_templates(tmp_path, [])):
        messages = project_checks.check_context_processor()
    assert _ids(messages) == ["ws4redis_channels.E101"]
    assert str(page) in messages[0].msg
    assert "ws4redis_channels.context_processors.default" in (messages[0].hint or "")


def test_template_with_context_processor_passes(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("{{ WEBSOCKET_URI }}foobar")
    for processor in project_checks.CONTEXT_PROCESSORS:
        with override_settings(TEMPLATES=_templates(tmp_path, [processor])):
            assert project_checks.check_context_processor() == []


def test_templates_not_using_the_variables_need_no_context_processor(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("{{ user }} WEBSOCKET_URI in plain text")
    with override_settings(TEMPLATES=_templates(tmp_path, [])):
        assert project_checks.check_context_processor() == []


def test_context_processor_check_is_registered_with_the_templates_tag(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("{{WS4REDIS_HEARTBEAT}}")
    with override_settings(TEMPLATES=_templates(tmp_path, [])):
        messages = checks.run_checks(tags=[checks.Tags.templates])
    assert "ws4redis_channels.E101" in _ids(messages)


def test_missing_daphne_app_warns_that_websockets_get_404() -> None:
    from django.conf import settings

    apps = [app for app in settings.INSTALLED_APPS if app != "daphne"]
    with override_settings(INSTALLED_APPS=apps):
        messages = project_checks.check_daphne_installed()
    assert _ids(messages) == ["ws4redis_channels.W102"]
    assert "404" in messages[0].msg


def test_daphne_after_staticfiles_warns_that_its_runserver_loses() -> None:
    from django.conf import settings

    apps = [app for app in settings.INSTALLED_APPS if app != "daphne"]
    apps.insert(apps.index("django.contrib.staticfiles") + 1, "daphne")
    with override_settings(INSTALLED_APPS=apps):
        messages = project_checks.check_daphne_installed()
    assert _ids(messages) == ["ws4redis_channels.W103"]
    assert "'django.contrib.staticfiles'" in messages[0].msg


def test_daphne_first_passes() -> None:
    assert project_checks.check_daphne_installed() == []


def test_signed_cookie_sessions_warn_that_session_flags_are_refused() -> None:
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies"):
        messages = project_checks.check_session_engine()
    assert _ids(messages) == ["ws4redis_channels.W104"]
    assert "4428" in messages[0].msg
    assert project_checks.check_session_engine() == []


def test_misspelt_setting_warns_with_the_nearest_name() -> None:
    with override_settings(WS4REDIS_EXPIRES=60, WS4REDIS_HEARTBEET="--hb--"):
        messages = project_checks.check_unknown_settings()
    texts = {m.msg for m in messages}
    assert _ids(messages) == ["ws4redis_channels.W101"] * 2
    assert (
        "WS4REDIS_EXPIRES is not a setting of ws4redis_channels; did you mean WS4REDIS_EXPIRE?"
        in texts
    )
    assert any("did you mean WS4REDIS_HEARTBEAT?" in t for t in texts)


def test_misspelt_websocket_url_is_reported() -> None:
    with override_settings(WEBSOCKET_URI="/ws/"):
        messages = project_checks.check_unknown_settings()
    assert [m.msg for m in messages] == [
        "WEBSOCKET_URI is not a setting of ws4redis_channels; did you mean WEBSOCKET_URL?"
    ]


def test_legacy_setting_is_named_as_ignored() -> None:
    with override_settings(WS4REDIS_SUBSCRIBER="myapp.Subscriber"):
        messages = project_checks.check_unknown_settings()
    assert _ids(messages) == ["ws4redis_channels.W101"]
    assert "django-websocket-redis setting that ws4redis_channels ignores" in messages[0].msg


def test_known_settings_pass() -> None:
    with override_settings(WS4REDIS_EXPIRE=5, WS4REDIS_METRICS=False):
        assert project_checks.check_unknown_settings() == []


def test_unknown_connection_key_warns_with_the_nearest_key() -> None:
    connection = {"host": "localhost", "port": 6379, "passwd": "x", "db": 0}
    with override_settings(WS4REDIS_CONNECTION=connection):
        messages = project_checks.check_unknown_settings()
    assert _ids(messages) == ["ws4redis_channels.W105"]
    assert "'passwd'" in messages[0].msg
    assert "did you mean password?" in messages[0].msg


def test_unreachable_redis_is_an_error_under_deploy_only() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with override_settings(WS4REDIS_CONNECTION=url):
        assert "ws4redis_channels.E102" not in _ids(checks.run_checks())
        messages = checks.run_checks(include_deployment_checks=True, tags=["redis"])
    assert _ids(messages) == ["ws4redis_channels.E102"]
    assert messages[0].msg.startswith(f"cannot reach Redis at {url}: connection refused")


def test_wrong_redis_password_says_wrongpass() -> None:
    with RedisServer(None, "--requirepass", "right") as server:
        url = f"redis://:wrong@127.0.0.1:{server.port}/0"
        with override_settings(WS4REDIS_CONNECTION=url):
            messages = project_checks.check_redis_reachable()
    assert _ids(messages) == ["ws4redis_channels.E102"]
    assert "refused the password (WRONGPASS)" in messages[0].msg


def test_missing_redis_password_says_noauth() -> None:
    with (
        RedisServer(None, "--requirepass", "right") as server,
        override_settings(WS4REDIS_CONNECTION=f"redis://127.0.0.1:{server.port}/0"),
    ):
        messages = project_checks.check_redis_reachable()
    assert "needs a password (NOAUTH)" in messages[0].msg


@pytest.mark.usefixtures("redis_server")
def test_reachable_redis_passes_the_deploy_check() -> None:
    assert project_checks.check_redis_reachable() == []
