"""The systemd notify protocol (sd_notify(3)) without libsystemd.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``: the path of a datagram socket, or
``@name`` for one in Linux's abstract namespace.  Each message is one datagram of
``NAME=value`` lines.  With ``WatchdogSec=`` it also passes ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``): the service must send ``WATCHDOG=1`` more often than that, or be killed.

Notifying is best effort by contract: every function returns False instead of raising when
there is no socket or the send fails, so jobwrap runs the same with or without systemd.  A
send waits at most :data:`SEND_TIMEOUT` for a full queue: a stuck manager must not stall the
scheduler.

Jobs started by the supervisor should not inherit :data:`NOTIFY_VARIABLES`: a job that speaks
the protocol itself would otherwise talk to jobwrap's unit (systemd ignores it under
``NotifyAccess=main``, but the job might wait for nothing).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
SEND_TIMEOUT = 1.0  # seconds


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``NAME=value`` lines) to ``$NOTIFY_SOCKET``; True when it was sent.

    ``env`` defaults to ``os.environ``.  False when the variable is unset, is neither an
    absolute path nor ``@abstract``, or the send fails.
    """
    address = _socket_address(_environ(env).get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendto(state.encode("utf-8", errors="replace"), address)
    except OSError:  # no listener, permission denied, queue full past the timeout...
        return False
    return True


def ready(text: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd start-up is finished (``READY=1``), optionally with a status line."""
    return notify(_with_status("READY=1", text), env)


def reloading(env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd a reload started; send :func:`ready` when it is done.

    ``MONOTONIC_USEC`` is what ``Type=notify-reload`` requires; other types ignore it.
    """
    return notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}", env)


def stopping(text: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd the service is shutting down (``STOPPING=1``)."""
    return notify(_with_status("STOPPING=1", text), env)


def watchdog(env: Mapping[str, str] | None = None) -> bool:
    """Keep the watchdog fed (``WATCHDOG=1``)."""
    return notify("WATCHDOG=1", env)


def status(text: str, env: Mapping[str, str] | None = None) -> bool:
    """Set the one-line status ``systemctl status`` shows."""
    return notify(_with_status("", text), env)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds, or None when no watchdog is asked of this process.

    None when ``$WATCHDOG_USEC`` is unset, not a positive integer, or ``$WATCHDOG_PID`` names
    another process (the variables were inherited from a parent).  Ping at least twice per
    interval, as sd_watchdog_enabled(3) advises.
    """
    environ = _environ(env)
    usec = _positive_int(environ.get("WATCHDOG_USEC", ""))
    pid = environ.get("WATCHDOG_PID")
    if usec is None or (pid is not None and _positive_int(pid) != os.getpid()):
        return None
    return usec / 1_000_000


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _socket_address(value: str) -> str | None:
    """The address to send to, or None when ``value`` is not a usable socket name."""
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace: a leading NUL instead of the "@"
    if value.startswith("/"):
        return value
    return None  # unset, relative, or a kind we do not speak (systemd's vsock: addresses)


def _with_status(state: str, text: str | None) -> str:
    if text is None:
        return state
    # A newline would end the STATUS= line and let the text set other variables.
    line = f"STATUS={' '.join(text.splitlines())}"
    return f"{state}\n{line}" if state else line


def _positive_int(text: str) -> int | None:
    try:
        number = int(text)
    except ValueError:
        return None
    return number if number > 0 else None
