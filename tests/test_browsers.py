"""How the browser tests find Chromium (tests/browsers.py), without starting one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import browsers


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No browser on PATH, at the well-known paths or in Playwright's cache."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(browsers.ENV_VAR, raising=False)
    monkeypatch.setattr(browsers, "WELL_KNOWN", ())
    monkeypatch.setattr(browsers, "PLAYWRIGHT_CACHE", ())
    return tmp_path


def _fake(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_variable_names_the_browser(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chrome = _fake(nowhere / "my-chrome")
    monkeypatch.setenv(browsers.ENV_VAR, str(chrome))
    assert browsers.find_browser() == str(chrome)


def test_a_variable_that_names_no_executable_is_an_error(
    nowhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(browsers.ENV_VAR, str(nowhere / "missing"))
    with pytest.raises(RuntimeError, match="is not an executable file"):
        browsers.find_browser()


def test_a_browser_on_path_is_found(nowhere: Path) -> None:
    chrome = _fake(nowhere / "google-chrome")
    assert browsers.find_browser() == str(chrome)


def test_a_well_known_path_is_found(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chrome = _fake(nowhere / "chrome")
    monkeypatch.setattr(browsers, "WELL_KNOWN", (str(nowhere / "absent"), str(chrome)))
    assert browsers.find_browser() == str(chrome)


def test_without_a_browser_and_without_root_the_error_is_one_instruction(
    nowhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(browsers, "_can_install", lambda: False)
    with pytest.raises(RuntimeError) as error:
        browsers.find_or_install_browser()
    message = str(error.value)
    assert "\n" not in message
    assert "apt-get install chromium" in message and browsers.ENV_VAR in message
