"""Find a Chromium or Chrome for the browser tests, installing Debian's only as a fallback.

Order: the executable named by ``WS4REDIS_BROWSER``; ``chromium``,
``chromium-browser``, ``google-chrome`` and ``google-chrome-stable`` on
``PATH``; well-known install paths (Debian/Ubuntu, snap, Chrome, macOS);
browsers Playwright downloaded earlier. Only if none is found, and the tests
run as root on a system with ``apt-get``, Debian's ``chromium`` package is
installed. Otherwise the tests fail with one line that says what to do.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["ENV_VAR", "find_browser", "find_or_install_browser"]

ENV_VAR = "WS4REDIS_BROWSER"
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WELL_KNOWN = (
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/lib/chromium/chromium",
    "/snap/bin/chromium",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
    "/opt/google/chrome/chrome",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
)
PLAYWRIGHT_CACHE = (
    "~/.cache/ms-playwright/chromium-*/chrome-linux*/chrome",
    "~/Library/Caches/ms-playwright/chromium-*/chrome-mac*/Chromium.app/Contents/MacOS/Chromium",
)
INSTRUCTION = (
    f"no Chromium or Chrome found: install one (e.g. `sudo apt-get install chromium`) or set "
    f"{ENV_VAR}=/path/to/chrome"
)


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_browser() -> str | None:
    """Return the path of an installed Chromium or Chrome, or None."""
    chosen = os.environ.get(ENV_VAR)
    if chosen:
        if not _executable(chosen):
            raise RuntimeError(f"{ENV_VAR}={chosen} is not an executable file")
        return chosen
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    for path in WELL_KNOWN:
        if _executable(path):
            return path
    for pattern in PLAYWRIGHT_CACHE:
        for path in sorted(glob.glob(str(Path(pattern).expanduser())), reverse=True):
            if _executable(path):
                return path
    return None


def _can_install() -> bool:
    return shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0


def find_or_install_browser() -> str:
    """Return a browser's path; install Debian's chromium as root if none is found.

    Raises RuntimeError with a one-line instruction when there is no browser
    and it cannot be installed.
    """
    found = find_browser()
    if found:
        return found
    if not _can_install():
        raise RuntimeError(INSTRUCTION)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "chromium"]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=800)
    if result.returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=800)
    found = find_browser()
    if found is None:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["?"]
        raise RuntimeError(f"installing Debian's chromium failed ({last[0]}); {INSTRUCTION}")
    return found
