"""One sentence that says what is wrong with Redis and what to do, from any error on the way.

Log lines, system checks, management commands and ``ws4redis_status`` use
:func:`explain_redis_error` so that a wrong password reads "refused the
password (WRONGPASS)", not "did not answer in time", and so that users see
one line instead of a traceback.
"""

from __future__ import annotations

import asyncio
import socket

__all__ = ["explain_redis_error", "is_auth_error", "redis_errors"]


def redis_errors() -> tuple[type[BaseException], ...]:
    """Return the exception classes that mean "Redis is not usable" (to catch them)."""
    import redis.exceptions

    from .exceptions import RedisError

    return (
        redis.exceptions.RedisError,
        # Not a RedisError: no node of a cluster's URL answered.
        redis.exceptions.RedisClusterException,
        RedisError,
        OSError,
        asyncio.TimeoutError,
        TimeoutError,
    )


def _code(exc: BaseException) -> str:
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and code:
        return code
    text = str(exc)
    return text.split(" ", 1)[0] if text[:1].isupper() else ""


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_auth_error(exc: BaseException) -> bool:
    """Return True if ``exc`` (or its cause) is Redis refusing the credentials."""
    import redis.exceptions

    for error in _chain(exc):
        if isinstance(error, redis.exceptions.AuthenticationError):
            return True
        text = str(error)
        if _code(error) in ("WRONGPASS", "NOAUTH") or ("AUTH" in text and "password" in text):
            return True
    return False


def explain_redis_error(exc: BaseException, where: str) -> str:
    """Return one line that says why Redis at ``where`` cannot be used, and what to do."""
    import redis.exceptions

    chain = _chain(exc)
    for error in chain:
        text = str(error).strip()
        code = _code(error)
        lowered = text.lower()
        if code == "WRONGPASS" or "invalid username-password" in lowered:
            return (
                f"Redis at {where} refused the password (WRONGPASS): check the password "
                "(and username) in WS4REDIS_CONNECTION"
            )
        if code == "NOAUTH" or "authentication required" in lowered:
            return f"Redis at {where} needs a password (NOAUTH): add it to WS4REDIS_CONNECTION"
        if "without any password configured" in lowered or "no password is set" in lowered:
            return (
                f"Redis at {where} has no password, but WS4REDIS_CONNECTION gives one: "
                "remove it, or set one with requirepass"
            )
        if code == "NOPERM" or isinstance(error, redis.exceptions.NoPermissionError):
            return (
                f"Redis at {where} denies a command to this user ({text}): grant it in the "
                "user's ACL"
            )
        if code == "READONLY":
            return (
                f"Redis at {where} is a read-only replica: point WS4REDIS_CONNECTION at the master"
            )
        if code == "LOADING":
            return f"Redis at {where} is loading its data set: wait, it answers when done"
    for error in chain:
        if isinstance(error, socket.gaierror):
            return f"cannot reach Redis at {where}: unknown host ({error.strerror or error})"
        if isinstance(error, ConnectionRefusedError) or "connection refused" in str(error).lower():
            return (
                f"cannot reach Redis at {where}: connection refused (is redis-server running "
                "and listening there?)"
            )
        if isinstance(error, FileNotFoundError) or "no such file" in str(error).lower():
            return f"cannot reach Redis at {where}: no unix socket there"
        if isinstance(error, (asyncio.TimeoutError, TimeoutError, redis.exceptions.TimeoutError)):
            return f"cannot reach Redis at {where}: no answer in time (firewall, or wrong host?)"
    text = str(exc).strip() or type(exc).__name__
    return f"cannot reach Redis at {where}: {text}"
