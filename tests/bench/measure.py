"""What the harness reads about a server process from ``/proc`` and Redis.

RSS comes from ``VmRSS``; CPU time from ``utime + stime`` of ``stat`` (all
threads; ``schedstat`` for the finer per-delivery cost); Redis connections are attributed to a process by matching the
local ports in ``CLIENT LIST`` with the TCP sockets the process holds open
(``/proc/<pid>/fd`` inodes against ``/proc/net/tcp``).
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import redis

__all__ = [
    "cpu_ns",
    "cpu_seconds",
    "listen_overflows",
    "machine_busy_seconds",
    "own_cpu_seconds",
    "raise_open_files",
    "redis_connections",
    "rss_kb",
]

_TICKS = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_ns(pid: int) -> int:
    """Nanoseconds the process's threads ran so far (``schedstat``: finer than ``stat``'s ticks).

    Threads that ended meanwhile are not counted; a daphne process's threads
    (its thread pool) live as long as the process.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all processors of the machine spent busy (any process) so far."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def listen_overflows() -> int:
    """Machine-wide count of connections dropped because a listen backlog was full.

    A dropped SYN is retried by the client's kernel after 1 s, which shows up
    as a 1 s tail in handshake times.
    """
    lines = [ln.split() for ln in Path("/proc/net/netstat").read_text().splitlines()]
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names[0] == "TcpExt:" and "ListenOverflows" in names:
            return int(values[names.index("ListenOverflows")])
    return 0


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_open_files(wanted: int) -> int:
    """Raise the soft limit of open files (children inherit it); return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _local_ports_to(remote_port: int, inodes: set[str]) -> set[int]:
    """Local ports of TCP connections to ``remote_port`` whose socket inode is in ``inodes``."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(remote.rsplit(":", 1)[1], 16) == remote_port and inode in inodes:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def redis_connections(pid: int, redis_port: int) -> int:
    """How many entries of Redis's ``CLIENT LIST`` are connections of process ``pid``."""
    ports = _local_ports_to(redis_port, socket_inodes(pid))
    client = redis.Redis(port=redis_port)
    try:
        clients = client.client_list()
    finally:
        client.close()
    return sum(1 for c in clients if int(str(c.get("addr", ":0")).rsplit(":", 1)[1]) in ports)
