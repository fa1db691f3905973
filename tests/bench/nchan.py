"""nginx + nchan, the C push server the product is compared with (Debian's packages).

``ensure_installed()`` installs ``nginx-light`` and ``libnginx-mod-nchan``
with ``apt-get`` when they are missing and the harness runs as root
(``apt-get update`` once first); otherwise it says why the rows are skipped.
``config()`` writes an nginx configuration for one run: ONE worker process
(the product runs one daphne process), ``/ws/<facility>`` subscribes a
websocket to ``_broadcast_:<facility>``, ``/wsu/<facility>`` to
``<sessionid cookie>:<facility>`` and ``_broadcast_:<facility>`` (nchan's
multiplexed subscriber; nchan cannot check a Django session, so this is the
cheapest an identity channel can be), and ``POST /pub/<channel>`` publishes.
With ``redis=True`` the channels live in the bench's Redis
(``nchan_redis_server``, the form nchan recommends over ``nchan_redis_url``), so several nginx hosts would share them.

New subscribers get only messages published after they subscribed
(``nchan_subscriber_first_message newest``), as the product with
``WS4REDIS_EXPIRE=0``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["MODULE", "NGINX", "config", "ensure_installed"]

NGINX = "/usr/sbin/nginx"
MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
PACKAGES = ("nginx-light", "libnginx-mod-nchan")

_checked: str | None = None  # "" when installed, else why not


def ensure_installed() -> str:
    """Return "" when nginx + nchan are usable, else a note why the nchan rows are skipped."""
    global _checked
    if _checked is not None:
        return _checked
    if not (os.path.exists(NGINX) and os.path.exists(MODULE)):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            _checked = (
                "nginx + nchan not installed and not root with apt-get: skipped "
                f"(apt-get install {' '.join(PACKAGES)})"
            )
            return _checked
        print(f"installing {' '.join(PACKAGES)} with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
        ):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                _checked = f"{' '.join(command)} failed: {done.stderr.strip()[-200:]}"
                return _checked
        # The package starts a system nginx on port 80; the bench runs its own.
        subprocess.run(["service", "nginx", "stop"], capture_output=True)
    _checked = "" if os.path.exists(NGINX) and os.path.exists(MODULE) else "nchan missing"
    return _checked


def config(directory: Path, port: int, redis_url: str | None, backlog: int) -> Path:
    """Write ``nginx.conf`` (and its temp folders) into ``directory``; return its path."""
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    upstream = store = ""
    if redis_url:
        upstream = f"upstream bench_redis {{ nchan_redis_server {redis_url}; }}"
        store = "nchan_redis_pass bench_redis;"
    text = f"""
load_module {MODULE};
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log {directory}/error.log warn;
pid {directory}/nginx.pid;
events {{ worker_connections 32768; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    client_body_buffer_size 64k;
    {upstream}
    server {{
        listen 127.0.0.1:{port} backlog={backlog};
        {store}
        nchan_subscriber_first_message newest;
        location ~ ^/ws/(?<facility>[^/]*)$ {{
            nchan_subscriber websocket;
            nchan_channel_id "_broadcast_:$facility";
        }}
        location ~ ^/wsu/(?<facility>[^/]*)$ {{
            nchan_subscriber websocket;
            nchan_channel_id "$cookie_sessionid:$facility" "_broadcast_:$facility";
        }}
        location ~ ^/pub/(?<channel>.+)$ {{
            nchan_publisher http;
            nchan_channel_id "$channel";
            nchan_message_buffer_length 1;
        }}
    }}
}}
"""
    path = directory / "nginx.conf"
    path.write_text(text)
    return path
